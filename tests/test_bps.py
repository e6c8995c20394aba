"""The BPS submit file of one step group, rendered from the campaign and sites config (issue #4)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from drp_campaign import graph, settings
from drp_campaign.bps import group_data_query, submit_config
from drp_campaign.config import load_campaign

CAMPAIGN = settings.CAMPAIGNS_DIR / "test-3x3.yaml"
KEY = "manual__2026-11-25T17-00-00-000"


def render(campaign, site="FRDF", step="step2b", group=graph.WorkGroup("g001", (3,)), tmp_path=None):
    return submit_config(
        campaign, site, step, group, key=KEY, pipeline_yaml=tmp_path / "step2b.yaml", submit_dir=tmp_path / "submit"
    )


def test_a_site_group_gets_its_run_query_site_and_requests(tmp_path):
    campaign = load_campaign(CAMPAIGN)
    cfg = render(campaign, tmp_path=tmp_path)
    payload = cfg["payload"]
    assert payload["outputRun"] == graph.output_run(campaign, KEY, "FRDF", "step2b", "g001"), "the retry-stable RUN"
    assert payload["inCollection"] == payload["output"] == graph.site_chain(campaign, KEY)
    assert payload["dataQuery"] == "skymap='drp_mock_rings' AND tract IN (3)"
    assert payload["butlerConfig"] == str(campaign.sites_config.sites["FRDF"].butler_repo_path())
    assert (cfg["wmsServiceClass"], cfg["computeSite"]) == ("lsst.ctrl.bps.parsl.ParslService", "local")
    assert (cfg["requestMemory"], cfg["requestCpus"], cfg["numberOfRetries"]) == (2048, 1, 0)
    assert cfg["queue"] == "CC-IN2P3_Rubin"


def test_panda_goes_to_the_sites_compute_site_with_step_overrides(tmp_path):
    doc = yaml.safe_load(CAMPAIGN.read_text())
    doc["pipeline"] = str(CAMPAIGN.parent / doc["pipeline"])
    doc["bps"] = {
        "wms": "panda",
        "request_memory_mb": 3000,
        "steps": {"step3": {"request_memory_mb": 8000, "request_cpus": 2}},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    campaign = load_campaign(tmp_path / "c.yaml")
    step3 = render(campaign, site="FRDF", step="step3", tmp_path=tmp_path)
    assert (step3["wmsServiceClass"], step3["computeSite"]) == ("lsst.ctrl.bps.panda.PanDAService", "CC-IN2P3_Rubin")
    assert (step3["requestMemory"], step3["requestCpus"]) == (8000, 2)
    step1 = render(campaign, site="UKDF_RAL", step="step1", tmp_path=tmp_path)
    assert (step1["computeSite"], step1["requestMemory"], step1["requestCpus"]) == ("RAL_Rubin", 3000, 1)


def test_quanta_are_clustered_as_the_campaign_says(tmp_path):
    """One job per group by default; per the step's `cluster_by` dimensions when set (both WMSes)."""
    default = render(load_campaign(CAMPAIGN), step="step1", tmp_path=tmp_path)
    assert default["clusterAlgorithm"] == "lsst.ctrl.bps.quantum_clustering_funcs.dimension_clustering"
    assert default["cluster"] == {"step1": {"pipetasks": "isr, calibrateImage"}}
    doc = yaml.safe_load(CAMPAIGN.read_text())
    doc["pipeline"] = str(CAMPAIGN.parent / doc["pipeline"])
    doc["bps"] = {"wms": "panda", "steps": {"step1": {"cluster_by": ["visit"]}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    by_visit = render(load_campaign(tmp_path / "c.yaml"), step="step1", tmp_path=tmp_path)
    assert by_visit["cluster"] == {"step1": {"pipetasks": "isr, calibrateImage", "dimensions": "visit"}}


def test_a_global_step_selects_everything():
    campaign = load_campaign(CAMPAIGN)
    assert group_data_query(campaign, ()) == ""
    assert group_data_query(campaign, (0, 1)) == "skymap='drp_mock_rings' AND tract IN (0, 1)"


@pytest.mark.integration
def test_ctrl_bps_reads_the_rendered_file_as_bps_submit_would(tmp_path):
    """The real BpsConfig (with bps's defaults and search order) resolves what we wrote."""
    stack_py = settings.stack_prefix() / "bin" / "python"
    if not stack_py.exists():  # pragma: no cover - the env is part of the project's setup
        pytest.skip(f"science-stack env missing at {stack_py}")
    campaign = load_campaign(CAMPAIGN)
    submit = tmp_path / "submit.yaml"
    submit.write_text(yaml.safe_dump(render(campaign, tmp_path=tmp_path)))
    probe = (
        "import json, sys\n"
        "from lsst.ctrl.bps import BpsConfig\n"
        "from lsst.ctrl.bps.bps_config import BPS_DEFAULTS, BPS_SEARCH_ORDER\n"
        "from lsst.utils import doImport\n"
        "c = BpsConfig(sys.argv[1], search_order=BPS_SEARCH_ORDER, defaults=BPS_DEFAULTS)\n"
        "doImport(c['wmsServiceClass'])\n"
        "print(json.dumps({k: c.search(k)[1] for k in "
        "('outputRun', 'dataQuery', 'butlerConfig', 'inCollection', 'computeSite', 'requestMemory')}))\n"
    )
    out = subprocess.run([str(stack_py), "-c", probe, str(submit)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["outputRun"] == graph.output_run(campaign, KEY, "FRDF", "step2b", "g001")
    assert found["dataQuery"] == "skymap='drp_mock_rings' AND tract IN (3)"
    assert found["inCollection"] == graph.site_chain(campaign, KEY)
    assert (found["computeSite"], found["requestMemory"]) == ("local", 2048)
