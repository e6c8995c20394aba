"""The campaign view plugin renders a run's steps and ledger from the ledger alone."""

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from drp_campaign.ledger import HopEntry, Ledger
from drp_campaign.plugins.campaign_view import DrpCampaignPlugin, app


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("DRP_LEDGER_URL", url)
    ledger = Ledger(url)
    ledger.claim_run_key("manual__2026-11-25T17-00-00", "test-3x3", "manual__2026-11-25T17:00:00+00:00")
    now = dt.datetime(2026, 11, 25, 17)
    ledger.record_step(
        run_key="manual__2026-11-25T17-00-00", campaign="test-3x3", dag_run_id="manual__2026-11-25T17:00:00+00:00",
        site="FRDF", step="step2b", group_label="g000", output_run="drp/test-3x3/x/FRDF/step2b/g000",
        status="failed", quanta={"total": 1, "failed": 1}, started=now, finished=now, duration_s=3.0,
    )  # fmt: skip
    entries = [HopEntry("id-1", "isolated_star", "run", 10, "0000000a")]
    ledger.record_registered(run_key="manual__2026-11-25T17-00-00", campaign="test-3x3", hop="gather_for_step2c",
                             src_site="UKDF_RAL", dst_site="USDF", entries=entries)  # fmt: skip
    from drp_campaign.transfer.base import RuleStatus

    for state in ("REPLICATING", "STUCK"):  # the latest state wins
        ledger.record_rule(run_key="manual__2026-11-25T17-00-00", hop="gather_for_step2c", src_site="UKDF_RAL",
                           dst_site="USDF", status=RuleStatus("rule-abc123", state, 1, 0, 0))  # fmt: skip
    for released in (["rule-hold-9"], []):  # a re-run that released nothing keeps the first record
        ledger.record_release(run_key="manual__2026-11-25T17-00-00", hop="return_products", site="FRDF",
                              rse="FRDF_DISK", files=20, nbytes=45858, rule_ids=released)  # fmt: skip
    return ledger


def test_a_run_page_shows_steps_hops_and_the_verdict(ledger):
    client = TestClient(app)
    # The UI substitutes the raw run id; '+' arrives as ' ' in a query string and must still match.
    page = client.get("/run", params={"run_id": "manual__2026-11-25T17:00:00 00:00"})
    assert page.status_code == 200
    assert "Ledger UNBALANCED" in page.text
    assert "step2b" in page.text and "FRDF" in page.text and "0/1" in page.text
    assert "sent, never arrived" in page.text
    assert "rule-abc123" in page.text and "STUCK" in page.text and "REPLICATING" not in page.text
    assert "Site copies released" in page.text and "FRDF_DISK" in page.text and "rule-hold-9" in page.text
    [released] = client.get("/api/run", params={"run_id": "manual__2026-11-25T17-00-00"}).json()["released"]
    assert (released["site"], released["files"], released["bytes"], released["rules"]) == ("FRDF", 20, 45858, "rule-hold-9")
    assert client.get("/api/run", params={"run_id": "manual__2026-11-25T17:00:00+00:00"}).json()["ledger_balanced"] is False


def test_an_unknown_run_is_a_clear_404(ledger):
    answer = TestClient(app).get("/run", params={"run_id": "nope"})
    assert answer.status_code == 404 and "no campaign run 'nope'" in answer.text


def test_the_runs_list_links_each_run_and_the_plugin_registers_its_views(ledger):
    page = TestClient(app).get("/runs")
    assert 'href="run?run_id=manual__2026-11-25T17-00-00"' in page.text
    assert {v["destination"] for v in DrpCampaignPlugin.external_views} == {"nav", "dag_run"}
    assert DrpCampaignPlugin.fastapi_apps[0]["url_prefix"] == "/drp"
