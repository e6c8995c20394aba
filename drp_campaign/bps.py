"""The BPS submit file for one (site, step, work group), and the record of its run (issue #4).

Airflow-free and stack-free: rendered from the validated campaign and sites config, so a bad
request (memory over the site's GB per core, a site without a PanDA computeSite) is refused at
config load, before anything is submitted. The keys are ctrl_bps's (see its bps_defaults.yaml):
`payload.outputRun` is the step group's stable RUN, so a retry finds its run instead of making
another; the step's pipeline subset is the file the stack side writes (stackside/pipeline.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import graph, settings
from .config import WORD, CampaignConfig
from .wms import RunState, backend


def group_query(campaign: CampaignConfig, tracts: list[int] | tuple[int, ...]) -> dict[str, Any]:
    """The Butler query that selects one work group, as daf_butler's `where` and `bind` arguments:
    the values are bound, never pasted into the expression (empty for a global step: everything)."""
    if not tracts:
        return {"where": "", "bind": {}}
    return {
        "where": "skymap = skymap_name AND tract IN (tracts)",
        "bind": {"skymap_name": campaign.data.skymap, "tracts": [int(t) for t in tracts]},
    }


def group_data_query(campaign: CampaignConfig, tracts: list[int] | tuple[int, ...]) -> str:
    """The same query as one string, for what takes no bind values: pipetask's `-d` and BPS's
    `dataQuery`, which BPS writes between double quotes into a shell command. Only a skymap name
    the config's rule accepts (no quote, no `$`) and whole numbers are written into it."""
    if not tracts:
        return ""
    skymap = campaign.data.skymap
    if not WORD.accepts(skymap):
        raise ValueError(f"skymap {skymap!r} is not a plain name; refusing to write it into a data query")
    return f"skymap='{skymap}' AND tract IN ({', '.join(str(int(t)) for t in tracts)})"


def submit_config(
    campaign: CampaignConfig,
    site: str,
    step: str,
    group: graph.WorkGroup,
    *,
    key: str,
    pipeline_yaml: Path,
    submit_dir: Path,
    output_run: str | None = None,
    rescue_of: list[str] = (),
    chain: str | None = None,
    repo: str | None = None,
) -> dict[str, Any]:
    """The submit YAML as a mapping; the caller writes it next to the run's other files."""
    site_cfg = campaign.sites_config.sites[site]
    request = campaign.bps.for_step(step)
    wms = backend(campaign.bps.wms)
    chain = chain or graph.site_chain(campaign, key)
    payload = {
        "payloadName": f"{campaign.name}-{site}-{step}-{group.label}",
        "butlerConfig": repo or str(site_cfg.butler_repo_path()),
        "inCollection": chain,
        "output": chain,
        "outputRun": output_run or graph.output_run(campaign, key, site, step, group.label),
        "dataQuery": group_data_query(campaign, group.tracts),
    }
    if rescue_of:
        # A rescue reads what the earlier RUNs made and skips the quanta that already succeeded.
        payload["inCollection"] = ",".join([*rescue_of, payload["inCollection"]])
    config = {
        "pipelineYaml": str(pipeline_yaml),
        "project": "drp-multisite",
        "campaign": campaign.name,
        "operator": "drp-campaign",
        "submitPath": str(submit_dir),
        "wmsServiceClass": wms.service_class,
        "computeSite": wms.compute_site(site_cfg),
        "queue": site_cfg.panda.queues[0],
        "requestMemory": request.request_memory_mb,
        "requestCpus": request.request_cpus,
        "numberOfRetries": request.number_of_retries,
        "payload": payload,
        # The RUN joins the site's chain only once the controller has read a clean outcome.
        "pipetaskOutput": "",
        "finalJob": {
            "updateOutputChain": "",
            "requestMemory": request.request_memory_mb,
            "requestCpus": request.request_cpus,
            # The mock pipeline's storage classes exist only once lsst.pipe.base.tests.mocks is
            # imported, which the plain `butler` CLI does not do.
            "command1": (
                "python -m drp_campaign.stackside.butler_cli aggregate-graph "
                "{fileDistributionEndPoint}{qgraphFile} {butlerConfig} -j 1 --register-dataset-types"
            ),
        },
    }
    config.update(wms.submit_settings(site_cfg, Path(submit_dir)))
    if rescue_of:
        config["extraQgraphOptions"] = f"--skip-existing-in {','.join(rescue_of)}"
    # Quanta run clustered, as production submits them (ctrl_bps dimension_clustering): one job
    # per value of the campaign's `cluster_by` dimensions, or one job for the whole group; each
    # quantum then costs ~60 ms in a shared process instead of a job's start-up.
    labels = campaign.pipeline_spec.step_tasks(step)
    config["clusterAlgorithm"] = "lsst.ctrl.bps.quantum_clustering_funcs.dimension_clustering"
    cluster = {"pipetasks": ", ".join(labels)}
    if request.cluster_by:
        cluster["dimensions"] = ", ".join(request.cluster_by)
    config["cluster"] = {step: cluster}
    return config


# --- the record of a step group's BPS run: written at the site, read by the controller ---------

RECORD = "run.json"


def run_dir(campaign: CampaignConfig, key: str, site: str, step: str, label: str) -> Path:
    """Where one step group's BPS files live (submit dirs, logs, the run record); retry-stable."""
    return settings.work_dir() / "bps" / campaign.name / key / site / step / label


def read_record(directory: Path) -> dict | None:
    path = Path(directory) / RECORD
    return json.loads(path.read_text()) if path.exists() else None


def write_record(directory: Path, record: dict) -> None:
    path = Path(directory) / RECORD
    tmp = path.with_name(RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)  # atomic: a reader never sees half a record


def exit_file(directory: Path, attempt: int) -> Path:
    return Path(directory) / f"attempt-{attempt}.exit"


def local_state(directory: Path) -> RunState:
    """State of a local (parsl) run from its files alone, cheap enough to poll every few seconds.

    RUNNING while the detached `bps` lives; FINISHED once it wrote its exit code (the quanta's
    outcome is then read by the report); CANCELLED when cancelled; LOST when the process is gone
    without an exit code (killed with its host): a restart picks it up.
    """
    record = read_record(directory)
    if record is None:
        return RunState.MISSING
    attempt = record["attempts"][-1]
    if attempt.get("cancelled"):
        return RunState.CANCELLED
    if exit_file(directory, attempt["n"]).exists():
        return RunState.FINISHED
    return RunState.RUNNING if process_alive(attempt.get("pid")) else RunState.LOST


LAUNCHER_NAME = "drp-bps-run"  # $0 of the detached shell: tells our process from a reused pid


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return LAUNCHER_NAME.encode() in cmdline and os.path.exists(f"/proc/{pid}")
