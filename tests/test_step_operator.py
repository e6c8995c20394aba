"""PipelineStepOperator's checks before anything is submitted (no services needed)."""

from __future__ import annotations

import json

import pytest
import yaml

from drp_campaign import settings
from drp_campaign.operators.steps import PipelineStepOperator, StepRefused

CAMPAIGN = settings.CAMPAIGNS_DIR / "test-3x3.yaml"


def panda_campaign(tmp_path):
    doc = yaml.safe_load(CAMPAIGN.read_text())
    doc["pipeline"] = str(CAMPAIGN.parent / doc["pipeline"])
    doc["bps"]["wms"] = "panda"
    path = tmp_path / "panda.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def operator(campaign_file, site="FRDF"):
    return PipelineStepOperator(task_id="step1", campaign_file=str(campaign_file), site=site, step="step1",
                                work_group={"label": "g000", "tracts": [2]})  # fmt: skip


def test_panda_without_the_sites_connection_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_DRP_PANDA_FRDF", raising=False)
    with pytest.raises(StepRefused) as err:
        operator(panda_campaign(tmp_path))._panda_env()
    text = str(err.value)
    assert "site FRDF" in text and "'drp_panda_frdf'" in text and "add it" in text


def test_panda_environment_comes_from_the_connection_not_from_code(tmp_path, monkeypatch):
    conn = {"conn_type": "http", "host": "http://127.0.0.1:8093/server/panda", "password": "a-token-value",
            "extra": {"vo": "Rubin"}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_DRP_PANDA_FRDF", json.dumps(conn))
    env = operator(panda_campaign(tmp_path))._panda_env()
    assert env["PANDA_URL_SSL"] == env["PANDA_URL"] == conn["host"]
    assert env["PANDA_AUTH_ID_TOKEN"] == "a-token-value" and env["PANDA_AUTH_VO"] == "Rubin"
    assert env["BPS_WMS_SERVICE_CLASS"] == "lsst.ctrl.bps.panda.PanDAService"


def test_the_local_wms_needs_no_connection():
    assert operator(CAMPAIGN)._panda_env() == {}


def test_a_connection_without_its_vo_is_refused_naming_the_field(tmp_path, monkeypatch):
    conn = {"conn_type": "http", "host": "http://127.0.0.1:8093/server/panda", "password": "a-token-value"}
    monkeypatch.setenv("AIRFLOW_CONN_DRP_PANDA_FRDF", json.dumps(conn))
    with pytest.raises(StepRefused) as err:
        operator(panda_campaign(tmp_path))._panda_env()
    assert "site FRDF" in str(err.value) and "drp_panda_frdf" in str(err.value) and "vo" in str(err.value)
