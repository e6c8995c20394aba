"""The BPS submit file for one (site, step, work group): what `bps submit` gets (issue #4).

Airflow-free and stack-free: rendered from the validated campaign and sites config, so a bad
request (memory over the site's GB per core, a site without a PanDA computeSite) is refused at
config load, before anything is submitted. The keys are ctrl_bps's (see its bps_defaults.yaml):
`payload.outputRun` is the step group's stable RUN, so a retry finds its run instead of making
another; the step's pipeline subset is the file the stack side writes (stackside/pipeline.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import graph
from .config import CampaignConfig

WMS_SERVICE_CLASSES = {
    "parsl": "lsst.ctrl.bps.parsl.ParslService",
    "panda": "lsst.ctrl.bps.panda.PanDAService",
}


def group_data_query(campaign: CampaignConfig, tracts: list[int] | tuple[int, ...]) -> str:
    """The Butler data query that selects one work group (empty for a global step: everything)."""
    if not tracts:
        return ""
    return f"skymap='{campaign.data.skymap}' AND tract IN ({', '.join(str(t) for t in tracts)})"


def submit_config(
    campaign: CampaignConfig,
    site: str,
    step: str,
    group: graph.WorkGroup,
    *,
    key: str,
    pipeline_yaml: Path,
    submit_dir: Path,
) -> dict[str, Any]:
    """The submit YAML as a mapping; the caller writes it next to the run's other files."""
    site_cfg = campaign.sites_config.sites[site]
    request = campaign.bps.for_step(step)
    wms = campaign.bps.wms
    payload = {
        "payloadName": f"{campaign.name}-{site}-{step}-{group.label}",
        "butlerConfig": str(site_cfg.butler_repo_path()),
        "inCollection": graph.site_chain(campaign, key),
        "output": graph.site_chain(campaign, key),
        "outputRun": graph.output_run(campaign, key, site, step, group.label),
        "dataQuery": group_data_query(campaign, group.tracts),
    }
    return {
        "pipelineYaml": str(pipeline_yaml),
        "project": "drp-multisite",
        "campaign": campaign.name,
        "operator": "drp-campaign",
        "submitPath": str(submit_dir),
        "wmsServiceClass": WMS_SERVICE_CLASSES[wms],
        # ctrl_bps_parsl picks its site block by computeSite; PanDA sends jobs to the site's queue.
        "computeSite": site_cfg.panda.compute_site if wms == "panda" else "local",
        "queue": site_cfg.panda.queues[0],
        "requestMemory": request.request_memory_mb,
        "requestCpus": request.request_cpus,
        "numberOfRetries": request.number_of_retries,
        "payload": payload,
    }
