"""Alerts (#15): a task that fails for good is recorded for on-call and sent to the webhook."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest

from drp_campaign.alerts import CampaignAlert, alerts_file


def failed(task_id: str, map_index: int = -1, error: Exception | None = None) -> dict:
    ti = SimpleNamespace(dag_id="campaign_test_3x3", task_id=task_id, map_index=map_index, try_number=2)
    return {"ti": ti, "run_id": "manual__2026-11-30T10:00:00+00:00", "exception": error}


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.setenv("DRP_WORK_DIR", str(tmp_path))
    monkeypatch.setenv("DRP_AIRFLOW_PORT", "8090")
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_DRP_ALERTS", raising=False)
    return tmp_path


def test_a_failed_task_is_recorded_naming_run_site_task_group_error_and_log(work):
    error = ValueError("1 of 2 quanta failed (0 blocked downstream); BPS run 42\nmore detail")
    CampaignAlert()(failed("FRDF.step2b", 0, error))
    CampaignAlert()(failed("USDF.site_qa", error=RuntimeError("site-independence QA failed")))
    path = alerts_file()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert (first["site"], first["task"], first["map_index"], first["try"]) == ("FRDF", "step2b", 0, 2)
    assert first["error"] == "1 of 2 quanta failed (0 blocked downstream); BPS run 42 more detail", "one line"
    assert first["log"] == (
        "http://127.0.0.1:8090/dags/campaign_test_3x3/runs/manual__2026-11-30T10%3A00%3A00%2B00%3A00"
        "/tasks/FRDF.step2b/mapped/0"
    )
    assert (second["site"], second["task"], second["map_index"]) == ("USDF", "site_qa", -1)


def test_the_alert_goes_to_the_drp_alerts_webhook_and_a_dead_webhook_does_not_raise(work, monkeypatch):
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_DRP_ALERTS", f"http://127.0.0.1:{server.server_port}/hooks/oncall")
        CampaignAlert()(failed("UKDF_RAL.return_products.verify", error=RuntimeError("3 datasets refused")))
    finally:
        server.shutdown()
    [message] = received
    assert message["text"].startswith(
        "DRP campaign campaign_test_3x3 run manual__2026-11-30T10:00:00+00:00: UKDF_RAL return_products.verify "
        "failed (try 2): 3 datasets refused - log: http://127.0.0.1:8090/"
    )
    assert message["alert"]["site"] == "UKDF_RAL"
    # Nobody listens there any more: the alert is still recorded, and nothing is raised.
    CampaignAlert()(failed("FRDF.step1", 1, RuntimeError("boom")))
    assert len(alerts_file().read_text().splitlines()) == 2
    assert os.environ["AIRFLOW_CONN_DRP_ALERTS"]


def test_every_campaign_task_alerts_on_failure():
    from drp_campaign.config import load_campaign
    from drp_campaign.dag_factory import build_dag
    from drp_campaign.settings import CAMPAIGNS_DIR

    dag = build_dag(load_campaign(CAMPAIGNS_DIR / "test-3x3.yaml"))
    for task in dag.tasks:
        assert any(isinstance(c, CampaignAlert) for c in task.on_failure_callback), task.task_id
