"""PipelineStepOperator's checks before anything is submitted (no services needed)."""

from __future__ import annotations

import json
from pathlib import Path

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
    return PipelineStepOperator(
        task_id="step1",
        campaign_file=str(campaign_file),
        site=site,
        step="step1",
        work_group={"label": "g000", "tracts": [2]},
    )


def test_panda_without_the_sites_connection_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_DRP_PANDA_FRDF", raising=False)
    with pytest.raises(StepRefused) as err:
        operator(panda_campaign(tmp_path))._panda_env()
    text = str(err.value)
    assert "site FRDF" in text and "'drp_panda_frdf'" in text and "add it" in text


def test_panda_environment_comes_from_the_connection_not_from_code(tmp_path, monkeypatch):
    conn = {
        "conn_type": "http",
        "host": "http://127.0.0.1:8093/server/panda",
        "password": "a-token-value",
        "extra": {"vo": "Rubin"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_DRP_PANDA_FRDF", json.dumps(conn))
    monkeypatch.setenv("DRP_WORK_DIR", str(tmp_path / "work"))
    env = operator(panda_campaign(tmp_path))._panda_env()
    assert env["PANDA_URL_SSL"] == env["PANDA_URL"] == conn["host"]
    assert env["PANDA_AUTH_VO"] == "Rubin" and "PANDA_AUTH_ID_TOKEN" not in env
    # The token goes by a file only this user can read, never in an environment a command may dump.
    token_file = Path(env["OIDC_AUTH_TOKEN_FILE"])
    assert token_file.read_text() == "a-token-value"
    assert (token_file.stat().st_mode & 0o777, token_file.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    assert env["BPS_WMS_SERVICE_CLASS"] == "lsst.ctrl.bps.panda.PanDAService"


def test_the_local_wms_needs_no_connection():
    assert operator(CAMPAIGN)._panda_env() == {}


def test_a_connection_without_its_vo_is_refused_naming_the_field(tmp_path, monkeypatch):
    conn = {"conn_type": "http", "host": "http://127.0.0.1:8093/server/panda", "password": "a-token-value"}
    monkeypatch.setenv("AIRFLOW_CONN_DRP_PANDA_FRDF", json.dumps(conn))
    with pytest.raises(StepRefused) as err:
        operator(panda_campaign(tmp_path))._panda_env()
    assert "site FRDF" in str(err.value) and "drp_panda_frdf" in str(err.value) and "vo" in str(err.value)


def test_the_panda_connection_is_looked_up_once_per_task_run(tmp_path, monkeypatch):
    """submit, the inline wait, restarts and the report all need it: one lookup serves them."""
    from airflow.sdk import BaseHook

    conn = {
        "conn_type": "http",
        "host": "http://127.0.0.1:8093/server/panda",
        "password": "a-token-value",
        "extra": {"vo": "Rubin"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_DRP_PANDA_FRDF", json.dumps(conn))
    lookups = []
    real = BaseHook.get_connection.__func__
    monkeypatch.setattr(
        BaseHook, "get_connection", classmethod(lambda cls, conn_id: lookups.append(conn_id) or real(cls, conn_id))
    )
    op = operator(panda_campaign(tmp_path))
    envs = [op._panda_env() for _ in range(3)]
    assert lookups == ["drp_panda_frdf"] and envs[0] == envs[2] and envs[0]["PANDA_AUTH_VO"] == "Rubin"


def test_killed_while_waiting_in_the_task_it_cancels_the_bps_run(monkeypatch):
    """Marked failed in the UI during the short wait before deferring: on_kill cancels the run
    for real, as the trigger's on_kill does once the task has deferred."""
    from drp_campaign.hooks.stack import StackHook

    calls = []
    monkeypatch.setattr(
        StackHook,
        "run",
        lambda self, sub, args, extra_env=None: calls.append((self.site.name, sub, args)) or {"action": "cancelled"},
    )
    op = operator(CAMPAIGN)
    op.on_kill()
    assert calls == [], "nothing is waited on: nothing to cancel"
    op._waiting_on = "/work/bps/run-dir"
    op.on_kill()
    assert calls == [("FRDF", "bps-cancel", ["--run-dir", "/work/bps/run-dir"])]


def test_a_task_of_a_run_whose_key_names_another_run_fails_before_doing_anything(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("DRP_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    assert operator(CAMPAIGN).run_key({"run_id": "manual__a.b"}) == "manual__a-b"
    assert operator(CAMPAIGN).run_key({"run_id": "manual__a.b"}) == "manual__a-b"  # its own run: again fine
    with pytest.raises(AirflowFailException, match="already names run 'manual__a.b'"):
        operator(CAMPAIGN).run_key({"run_id": "manual__a:b"})


def test_a_group_failed_over_to_another_site_does_nothing_at_its_old_site_and_runs_at_the_new(tmp_path, monkeypatch):
    """A task of a group planned at FRDF before a failover moved its tract (cleared by someone, or
    run by FRDF's worker coming back) skips before submitting anything; the new site runs it."""
    from airflow.sdk.exceptions import AirflowSkipException

    from drp_campaign.ledger import Ledger

    monkeypatch.setenv("DRP_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    context = {"run_id": "manual__failover", "params": {}}
    Ledger().record_failover("manual__failover", "FRDF", "UKDF_RAL", [2], by="operator")
    with pytest.raises(AirflowSkipException, match=r"g000: tracts \[2\] were failed over to UKDF_RAL; they run there"):
        operator(CAMPAIGN).execute(context)
    at_ral = operator(CAMPAIGN, site="UKDF_RAL")
    at_ral.work_group = {"label": "FRDF-g000", "tracts": [2]}
    at_ral._skip_if_moved(context)  # planned there now: it runs
    assert [g.label for g in at_ral.work_groups(context)] == ["g000", "g001", "FRDF-g000"]
    Ledger().record_failover("manual__failover", "FRDF", "UKDF_RAL", [3], by="operator")
    with pytest.raises(AirflowSkipException, match=r"site FRDF: its tracts \[2, 3\] were failed over"):
        operator(CAMPAIGN).skip_unless_selected(context)


def test_the_site_qa_compares_a_failed_over_tract_nowhere_twice_and_drops_the_down_sites_copies(tmp_path, monkeypatch):
    """The 3x3 compares tract 2 (FRDF's, second copy at UKDF_RAL) and 4 (UKDF_RAL's, at USDF). With
    FRDF failed over to UKDF_RAL, tract 2's product is made at UKDF_RAL, its only copy: nothing to
    compare; tract 4 still is. With UKDF_RAL down instead, neither is compared."""
    from drp_campaign.ledger import Ledger
    from drp_campaign.operators.site_qa import SiteQaOperator

    monkeypatch.setenv("DRP_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    qa = SiteQaOperator(task_id="site_qa", campaign_file=str(CAMPAIGN), site="USDF")
    context = {"run_id": "manual__qa", "params": {}}
    assert qa.overlap_tracts(context) == {2: ("FRDF", "UKDF_RAL"), 4: ("UKDF_RAL", "USDF")}
    Ledger().record_failover("manual__qa", "FRDF", "UKDF_RAL", [2], by="operator")
    assert SiteQaOperator(task_id="site_qa", campaign_file=str(CAMPAIGN), site="USDF").overlap_tracts(context) == {
        4: ("UKDF_RAL", "USDF")
    }
    # UKDF_RAL down instead: tract 4 made at the hub only, and tract 2's second copy was to be UKDF_RAL's.
    other = {"run_id": "manual__qa2", "params": {}}
    Ledger().record_failover("manual__qa2", "UKDF_RAL", "USDF", [4], by="operator")
    assert SiteQaOperator(task_id="site_qa", campaign_file=str(CAMPAIGN), site="USDF").overlap_tracts(other) == {}
