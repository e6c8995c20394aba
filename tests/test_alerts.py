"""Alerts (#15): what needs on-call is recorded, and sent to the webhook and by e-mail, once.

Each kind is raised the way Airflow raises it (the failure callback, the hop's trigger, the
gate's notifier, the triggerer's deadline callback) and received by a real HTTP server and a
real SMTP server (aiosmtpd) on loopback ports. A transfer service that answers from a script
stands in for Rucio (a STUCK rule cannot be made to order there).
"""

from __future__ import annotations

import asyncio
import email
import json
import logging
import socket
import threading
import time
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest

from drp_campaign.alerts import CampaignAlert, GateWaitingAlert, TransferWatch, alerts_file, run_deadline
from drp_campaign.config import load_campaign
from drp_campaign.settings import CAMPAIGNS_DIR
from drp_campaign.transfer.base import RuleStatus

DAG_ID = "campaign_test_3x3"
RUN_ID = "manual__2026-11-30T10:00:00+00:00"
QUOTED_RUN = "manual__2026-11-30T10%3A00%3A00%2B00%3A00"
CAMPAIGN = CAMPAIGNS_DIR / "test-3x3.yaml"


def task_instance(task_id: str, map_index: int = -1, try_number: int = 2) -> SimpleNamespace:
    return SimpleNamespace(
        dag_id=DAG_ID, run_id=RUN_ID, task_id=task_id, map_index=map_index, try_number=try_number, id="0"
    )


def failed(task_id: str, map_index: int = -1, error: Exception | None = None, task=None) -> dict:
    return {"ti": task_instance(task_id, map_index), "run_id": RUN_ID, "exception": error, "task": task}


def records() -> list[dict]:
    return [json.loads(line) for line in alerts_file().read_text().splitlines()] if alerts_file().exists() else []


def free_port() -> int:
    """A loopback port nobody listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.setenv("DRP_WORK_DIR", str(tmp_path))
    monkeypatch.setenv("DRP_AIRFLOW_PORT", "8090")
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_DRP_ALERTS", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_DRP_ALERTS_SMTP", raising=False)
    return tmp_path


def smtp_connection(port: int, **extra) -> str:
    """The drp_alerts_smtp Connection, as an environment variable (JSON), for a plain relay."""
    fields = {"from_email": "drp-alerts@example.org", "to": ["oncall@example.org"], "disable_ssl": True}
    return json.dumps(
        {"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": {**fields, "disable_tls": True, **extra}}
    )


class OnCall:
    """What a webhook and an SMTP server on loopback ports received."""

    def __init__(self):
        self.posts: list[dict] = []
        self.mails: list[Message] = []

    def both(self) -> list[tuple[dict, Message]]:
        """Each alert as the webhook and the mailbox got it (in the order sent)."""
        assert len(self.posts) == len(self.mails), (self.posts, self.mails)
        return list(zip(self.posts, self.mails, strict=True))


def body(mail: Message) -> str:
    [part] = mail.get_payload()
    return part.get_payload(decode=True).decode()


@pytest.fixture
def oncall(work, monkeypatch):
    from aiosmtpd.smtp import SMTP

    got = OnCall()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            got.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    class Mailbox:
        async def handle_DATA(self, server, session, envelope):
            assert envelope.rcpt_tos == ["oncall@example.org"]
            got.mails.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    http = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=http.serve_forever, args=(0.05,), daemon=True).start()
    loop = asyncio.new_event_loop()
    smtp = loop.run_until_complete(loop.create_server(lambda: SMTP(Mailbox()), "127.0.0.1", 0))
    smtp_thread = threading.Thread(target=loop.run_forever, daemon=True)
    smtp_thread.start()
    monkeypatch.setenv("AIRFLOW_CONN_DRP_ALERTS", f"http://127.0.0.1:{http.server_port}/hooks/oncall")
    monkeypatch.setenv("AIRFLOW_CONN_DRP_ALERTS_SMTP", smtp_connection(smtp.sockets[0].getsockname()[1]))
    yield got
    http.shutdown()
    http.server_close()
    loop.call_soon_threadsafe(loop.stop)
    smtp_thread.join(5)
    smtp.close()
    loop.run_until_complete(smtp.wait_closed())
    loop.close()


# --- task_failed -------------------------------------------------------------------------------


def test_a_failed_task_is_recorded_naming_run_site_task_group_error_and_log(work):
    error = ValueError("1 of 2 quanta failed (0 blocked downstream); BPS run 42\nmore detail")
    CampaignAlert()(failed("FRDF.step2b", 0, error))
    CampaignAlert()(failed("USDF.site_qa", error=RuntimeError("site-independence QA failed")))
    path = alerts_file()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    first, second = records()
    assert (first["kind"], first["site"], first["task"], first["map_index"], first["try"]) == (
        "task_failed",
        "FRDF",
        "step2b",
        0,
        2,
    )
    assert first["error"] == "1 of 2 quanta failed (0 blocked downstream); BPS run 42 more detail", "one line"
    assert first["link"] == f"http://127.0.0.1:8090/dags/{DAG_ID}/runs/{QUOTED_RUN}/tasks/FRDF.step2b/mapped/0"
    assert first["failure_class"] is None and first["error_type"] == "ValueError"
    assert (second["site"], second["task"], second["map_index"]) == ("USDF", "site_qa", -1)


def test_a_step_failed_for_review_alerts_both_channels_with_its_class_and_group(oncall):
    from drp_campaign.operators.steps import StepFailed

    step = SimpleNamespace(work_group={"label": "g001", "tracts": [9813]})
    error = StepFailed("2 of 9 quanta failed (1 blocked downstream); BPS run 7\nsite FRDF step step1 ...", "review")
    CampaignAlert()(failed("FRDF.step1", 1, error, task=step))
    [(post, mail)] = oncall.both()
    link = f"http://127.0.0.1:8090/dags/{DAG_ID}/runs/{QUOTED_RUN}/tasks/FRDF.step1/mapped/1"
    assert post["text"] == (
        f"DRP campaign {DAG_ID} run {RUN_ID}: FRDF step1[g001] failed (try 2, class review): "
        f"2 of 9 quanta failed (1 blocked downstream); BPS run 7 site FRDF step step1 ... - log: {link}"
    )
    assert (post["alert"]["failure_class"], post["alert"]["group"]) == ("review", "g001")
    assert mail["Subject"] == f"DRP campaign {DAG_ID}: FRDF step1[g001] failed (try 2, class review)"
    assert mail["From"] == "drp-alerts@example.org" and mail["To"] == "oncall@example.org"
    assert f"href='{link}'" in body(mail) and RUN_ID in body(mail)
    assert records() == [post["alert"]]


def test_a_step_fails_naming_the_class_that_failed_it():
    from drp_campaign.failures import load_rules

    rules = load_rules()
    transient = {"task": "isr", "error": "MemoryError: ", "exit_code": 137, "status": "failure"}
    unknown = {"task": "isr", "error": "ValueError: nobody has seen this", "exit_code": 1, "status": "failure"}
    assert rules.match(transient).failure_class == "transient", "the rules file still says so"
    assert rules.classify([transient]).failing_class() == "transient", "retries used up"
    assert rules.classify([transient, unknown]).failing_class() == "review"


# --- transfer_stuck, transfer_slow --------------------------------------------------------------


class ScriptedRule:
    """A transfer service whose rule goes through the given states (then stays in the last)."""

    def __init__(self, *states: str):
        self.states = list(states)
        self.boosted: list[str] = []

    def boost(self, rule_id: str) -> bool:
        self.boosted.append(rule_id)
        return True

    def rule_status(self, rule_id: str) -> RuleStatus:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        errors = ["raw/5000/det1.fits: checksum mismatch after copy"] if state == "STUCK" else []
        return RuleStatus(rule_id, state, 10, 7 if state != "OK" else 10, 7000, errors)


def run_trigger(task_id: str, service: ScriptedRule, **kwargs) -> list[dict]:
    from drp_campaign.triggers.rule_state import RuleStateTrigger

    trigger = RuleStateTrigger("rule-abc", "local", poll_interval_s=0, stuck_after_s=600, **kwargs)
    trigger.task_instance = task_instance(task_id, try_number=1)

    async def service_():
        return service

    trigger._service = service_

    async def events():
        return [event.payload async for event in trigger.run()]

    return asyncio.run(events())


def test_a_stuck_rule_alerts_once_while_the_wait_gives_it_time_and_a_slow_wait_once(oncall):
    started_an_hour_ago = time.time() - 3600
    script = ("STUCK", "STUCK", "REPLICATING", "STUCK", "OK")
    [event] = run_trigger("FRDF.gather_for_step2c.wait", ScriptedRule(*script), expected_s=1800.0)
    assert event["state"] == "OK"
    [(post, mail)] = oncall.both()  # STUCK seen three times, said once; 0 of the 30 expected minutes waited
    task_link = f"http://127.0.0.1:8090/dags/{DAG_ID}/runs/{QUOTED_RUN}/tasks/FRDF.gather_for_step2c.wait"
    assert post["text"] == (
        f"DRP campaign {DAG_ID} run {RUN_ID}: FRDF gather_for_step2c.wait transfer stuck: rule rule-abc is STUCK: "
        "7/10 files replicated; the wait gives it up to 10 min to recover; failing: raw/5000/det1.fits: checksum "
        f"mismatch after copy - task: {task_link}"
    )
    assert mail["Subject"] == f"DRP campaign {DAG_ID}: FRDF gather_for_step2c.wait transfer stuck"
    # The triggerer restarts the trigger (or the task is retried): the same rule, still STUCK, and
    # now waited on for an hour: the slow wait is news, the stuck rule is not.
    run_trigger(
        "FRDF.gather_for_step2c.wait", ScriptedRule(*script), expected_s=1800.0, waiting_since=started_an_hour_ago
    )
    assert [p["alert"]["kind"] for p in oncall.posts] == ["transfer_stuck", "transfer_slow"]
    slow = oncall.posts[1]["alert"]
    assert "rule rule-abc is STUCK after 60 min (the hop expects at most 30 min)" in slow["detail"]
    assert slow["waited_min"] == pytest.approx(60, abs=1)
    # Another site's wait on its own rule is another alert.
    run_trigger("UKDF_RAL.gather_for_step2c.wait", ScriptedRule(*script))
    assert [p["alert"]["site"] for p in oncall.posts] == ["FRDF", "FRDF", "UKDF_RAL"]
    assert len(oncall.mails) == 3 and len(records()) == 3


def test_the_sensor_alerts_a_stuck_rule_it_sees_before_deferring_and_the_trigger_does_not_again(oncall, monkeypatch):
    from drp_campaign.sensors import hops

    rule = ScriptedRule("STUCK", "STUCK", "OK")
    monkeypatch.setattr(hops.TransferHook, "get_service", lambda self: rule)
    monkeypatch.setattr(hops, "INLINE_POLL_S", 0.0)
    sensor = hops.HopReplicationSensor(task_id="wait", rule_id="rule-abc", stuck_after_s=600)
    context = {"ti": task_instance("USDF.archive_products.wait", try_number=1), "run_id": RUN_ID}
    assert sensor.execute(context)["files_total"] == 10
    assert rule.boosted == ["rule-abc"], "boosted once, when first seen STUCK, for Rucio to retry it now"
    in_trigger = ScriptedRule("STUCK", "STUCK", "OK")
    run_trigger("USDF.archive_products.wait", in_trigger)
    assert in_trigger.boosted == ["rule-abc"]
    [(post, _)] = oncall.both()
    assert (post["alert"]["kind"], post["alert"]["task"]) == ("transfer_stuck", "archive_products.wait")
    fails_at_once = ScriptedRule("STUCK")
    monkeypatch.setattr(hops.TransferHook, "get_service", lambda self: fails_at_once)
    with pytest.raises(Exception, match="rule rule-abc is STUCK"):
        hops.HopReplicationSensor(task_id="wait", rule_id="rule-abc").execute(context)
    assert fails_at_once.boosted == [], "a wait that gives the rule no time fails, and boosts nothing"


def test_a_rule_that_fails_the_wait_at_once_or_a_wait_without_expected_time_raises_no_transfer_alert(work):
    stuck = RuleStatus("rule-abc", "STUCK", 10, 7, 7000)
    assert TransferWatch(stuck_after_s=0).due(stuck) == [], "the wait fails now: task_failed says so"
    assert TransferWatch(expected_s=0, since=0).due(RuleStatus("rule-abc", "REPLICATING", 10, 7, 7000)) == []
    assert TransferWatch(expected_s=60, since=time.time() - 61).due(stuck) == ["transfer_slow"]


# --- gate_waiting ------------------------------------------------------------------------------


@pytest.fixture
def gate_run(work, monkeypatch):
    """A review gate asking for its decision: the request written to the API server is skipped."""
    from airflow.providers.standard.operators import hitl

    from drp_campaign.operators.review import ReviewGateOperator

    monkeypatch.setenv("DRP_LEDGER_URL", f"sqlite:///{work / 'ledger.db'}")
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **kwargs: None)
    gate = ReviewGateOperator(task_id="USDF.review_step2c", step="step2c", site="USDF", campaign_file=str(CAMPAIGN))
    ti = task_instance("USDF.review_step2c", try_number=1)

    def run(**params):
        params = {"sites": [], "tracts": [], "dry_run": False, **params}
        return gate.execute({"run_id": RUN_ID, "params": params, "ti": ti, "task_instance": ti, "task": gate})

    return run


def test_a_review_gate_that_starts_waiting_alerts_with_the_link_to_answer_it(oncall, gate_run):
    from airflow.sdk.exceptions import TaskAwaitingInput

    with pytest.raises(TaskAwaitingInput):
        gate_run()
    [(post, mail)] = oncall.both()
    link = f"http://127.0.0.1:8090/dags/{DAG_ID}/runs/{QUOTED_RUN}/tasks/USDF.review_step2c/required_actions"
    assert post["text"] == (
        f"DRP campaign {DAG_ID} run {RUN_ID}: USDF review_step2c waits for a review decision: "
        f"test-3x3 run manual__2026-11-30T10-00-00: approve step2c? - decide: {link}"
    )
    assert mail["Subject"] == f"DRP campaign {DAG_ID}: USDF review_step2c waits for a review decision"
    # Gates off for a run: nothing waits, nobody is called.
    assert gate_run(review_gates=False)["passed"]
    assert len(oncall.posts) == 1


# --- run_late ----------------------------------------------------------------------------------


def test_a_run_past_its_deadline_alerts_from_the_triggerer(oncall):
    from datetime import timedelta

    from airflow.sdk import DAG, DeadlineReference
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.triggers.callback import CallbackTrigger

    campaign = load_campaign(CAMPAIGN)
    assert run_deadline(campaign) is None, "no deadline_hours: no deadline"
    campaign.deadline_hours = 6
    deadline = run_deadline(campaign)
    assert (deadline.reference, deadline.interval) == (DeadlineReference.DAGRUN_QUEUED_AT, timedelta(hours=6))
    dag = DagSerialization.from_dict(DagSerialization.to_dict(DAG(DAG_ID, schedule=None, deadline=deadline)))
    assert dag.deadline, "the DAG with it serializes, as the dag-processor stores it"
    # What the triggerer runs when the scheduler finds the deadline missed (airflow.models.deadline).
    context = {
        "dag_run": {"dag_id": DAG_ID, "dag_run_id": RUN_ID, "queued_at": "2026-11-30T10:00:00Z", "state": "running"},
        "deadline": {"id": "d1", "deadline_time": "2026-11-30T16:00:00Z"},
    }
    trigger = CallbackTrigger(deadline.callback.path, {**deadline.callback.kwargs, "context": context})

    async def events():
        return [event.payload async for event in trigger.run()]

    assert [e["state"] for e in asyncio.run(events())] == ["running", "success"]
    [(post, mail)] = oncall.both()
    assert post["text"] == (
        f"DRP campaign {DAG_ID} run {RUN_ID}: not finished by its deadline: 6 h after it was queued "
        "(2026-11-30T10:00:00Z), deadline 2026-11-30T16:00:00Z, it is still running - run: "
        f"http://127.0.0.1:8090/dags/{DAG_ID}/runs/{QUOTED_RUN}"
    )
    assert (post["alert"]["kind"], post["alert"]["site"], post["alert"]["task"]) == ("run_late", "", "")
    assert mail["Subject"] == f"DRP campaign {DAG_ID}: not finished by its deadline"


# --- channels that fail ------------------------------------------------------------------------


def test_dead_channels_do_not_raise_and_say_why_in_the_log(work, monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW_CONN_DRP_ALERTS", f"http://127.0.0.1:{free_port()}/hooks/oncall")
    monkeypatch.setenv("AIRFLOW_CONN_DRP_ALERTS_SMTP", smtp_connection(free_port()))
    with caplog.at_level(logging.WARNING, logger="drp_campaign.alerts"):
        CampaignAlert()(failed("FRDF.step1", 1, RuntimeError("boom")))
        TransferWatch(stuck_after_s=60).alert(
            "transfer_stuck", task_instance("FRDF.place_inputs.wait"), RuleStatus("r", "STUCK", 1, 0, 0)
        )
    assert [r["kind"] for r in records()] == ["task_failed", "transfer_stuck"], "recorded all the same"
    undelivered = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(undelivered) == 4
    assert sum("Connection drp_alerts: ConnectionError" in m for m in undelivered) == 2
    assert sum("Connection drp_alerts_smtp: ConnectionRefusedError" in m for m in undelivered) == 2
    # A Connection without recipients is refused with what to add.
    monkeypatch.setenv("AIRFLOW_CONN_DRP_ALERTS_SMTP", smtp_connection(free_port(), to=[]))
    caplog.clear()
    CampaignAlert()(failed("FRDF.step1", 1, RuntimeError("boom")))
    assert any('names no recipients: add them to its extra as "to"' in r.getMessage() for r in caplog.records)


def test_every_campaign_task_alerts_on_failure_and_every_gate_when_it_waits():
    from drp_campaign.dag_factory import build_dag
    from drp_campaign.operators.review import ReviewGateOperator

    dag = build_dag(load_campaign(CAMPAIGN))
    gates = [task for task in dag.tasks if isinstance(task, ReviewGateOperator)]
    assert gates, "the 3x3 has a review gate"
    for task in dag.tasks:
        assert any(isinstance(c, CampaignAlert) for c in task.on_failure_callback), task.task_id
    for gate in gates:
        assert any(isinstance(n, GateWaitingAlert) for n in gate.notifiers), gate.task_id
