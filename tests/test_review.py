"""Review gates (#15): a step named in `review_gates` waits for a human approval first."""

from __future__ import annotations

import datetime as dt

import pytest

from drp_campaign.config import load_campaign
from drp_campaign.dag_factory import build_dag
from drp_campaign.ledger import Ledger
from drp_campaign.operators.review import GATES_PARAM, ReviewGateOperator, ReviewRejected
from drp_campaign.settings import CAMPAIGNS_DIR

CAMPAIGN = CAMPAIGNS_DIR / "test-3x3.yaml"


def gated(*steps: str):
    campaign = load_campaign(CAMPAIGN)
    campaign.review_gates = list(steps)
    return build_dag(campaign)


def test_a_gated_step_waits_at_every_site_for_one_approval_after_what_it_needs_everywhere():
    dag = gated("step2c", "step3")
    gate = dag.get_task("USDF.review_step2c")
    assert isinstance(gate, ReviewGateOperator) and gate.retries == 0 and gate.queue == "usdf"
    assert gate.upstream_task_ids == {
        "FRDF.gather_for_step2c.verify",
        "UKDF_RAL.gather_for_step2c.verify",
        "USDF.step2b",
    }
    assert dag.get_task("USDF.step2c").upstream_task_ids == {"USDF.review_step2c"}
    step3 = dag.get_task("USDF.review_step3")
    assert step3.upstream_task_ids == {"USDF.step2e", "FRDF.step2e", "UKDF_RAL.step2e"}, "every site's step2e"
    for site in ("USDF", "FRDF", "UKDF_RAL"):
        assert dag.get_task(f"{site}.step3").upstream_task_ids == {"USDF.review_step3", f"{site}.check_inputs"}
    assert dag.params[GATES_PARAM] is True, "gates on by default; the trigger form turns them off for a run"


def test_a_campaign_without_gates_has_no_gate_and_no_gates_param():
    dag = gated()
    assert not [t for t in dag.task_ids if "review_" in t] and GATES_PARAM not in dag.params


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("DRP_LEDGER_URL", url)
    return Ledger(url)


def gate_and_context(params: dict):
    gate = ReviewGateOperator(task_id="review_step2c", step="step2c", site="USDF", campaign_file=str(CAMPAIGN))
    run_id = "manual__2026-11-30T10:00:00+00:00"
    return gate, {"run_id": run_id, "params": {"sites": [], "tracts": [], "dry_run": False, **params}}


def test_gates_off_for_a_run_or_a_dry_run_pass_without_asking_and_say_so(ledger):
    for params, why in (({GATES_PARAM: False}, "review gates off"), ({"dry_run": True}, "dry run")):
        gate, context = gate_and_context(params)
        assert gate.execute(context)["chosen_options"] == ["Approve"]
        [review] = ledger.reviews("manual__2026-11-30T10-00-00")
        assert (review["step"], review["decision"]) == ("step2c", "passed") and why in review["decided_by"]


def test_a_decision_is_recorded_with_who_and_a_reject_stops_what_follows(ledger):
    gate, context = gate_and_context({})
    at = dt.datetime(2026, 11, 30, 10, 5, tzinfo=dt.UTC)
    answer = {"params_input": {}, "responded_at": at, "responded_by_user": {"id": "7", "name": "alice"}}
    with pytest.raises(ReviewRejected, match="step2c rejected by alice at 2026-11-30 10:05:00"):
        gate.execute_complete(context, {**answer, "chosen_options": ["Reject"]})
    [review] = ledger.reviews("manual__2026-11-30T10-00-00")
    assert (review["decision"], review["decided_by"]) == ("rejected", "alice")
    # Cleared and asked again: approved; the latest decision is the one recorded.
    assert gate.execute_complete(context, {**answer, "chosen_options": ["Approve"]})["chosen_options"] == ["Approve"]
    [review] = ledger.reviews("manual__2026-11-30T10-00-00")
    assert (review["decision"], review["decided_by"]) == ("approved", "alice")


def test_the_gate_body_shows_per_site_quanta_and_failures_from_the_ledger(ledger):
    gate, _ = gate_and_context({})
    key = "manual__2026-11-30T10-00-00"
    now = dt.datetime(2026, 11, 30, 10)
    for site, failed, accepted in (("FRDF", 0, 0), ("UKDF_RAL", 2, 2)):
        ledger.record_step(
            run_key=key,
            campaign="test-3x3",
            dag_run_id="r",
            site=site,
            step="step2b",
            group_label="g000",
            output_run="x",
            status="accepted" if failed else "succeeded",
            quanta={"total": 10, "succeeded": 10 - failed, "failed": failed, "accepted": accepted},
            started=now,
            finished=now,
            duration_s=1.0,
        )
    body = gate.what_to_look_at({}, key)
    assert "Before **step2c** starts" in body
    assert "| FRDF | step2b | 1 (succeeded) | 10 / 10 | 0 (0) |" in body
    assert "| UKDF_RAL | step2b | 1 (accepted) | 8 / 10 | 2 (2) |" in body
    assert f"/drp/run?run_id={key}" in body


def test_the_review_command_refuses_a_step_without_a_gate_before_calling_airflow(capsys):
    from drp_campaign.cli import main

    code = main(["review", str(CAMPAIGN), "manual__x", "--step", "step3", "--approve"])
    assert code == 2
    assert "'step3' has no review gate in campaign test-3x3 (its gates: step2c)" in capsys.readouterr().err


def test_following_a_run_hands_a_gate_that_starts_waiting_to_the_caller_once():
    from drp_campaign.airflow_client import AirflowClient, TaskState

    polls = iter(
        [
            ("running", "running"),
            ("awaiting_input", "running"),
            ("awaiting_input", "running"),  # still waiting at the next poll: not handed over twice
            ("success", "success"),
        ]
    )
    client = AirflowClient.__new__(AirflowClient)  # no login: the two calls follow makes are stubbed
    current = {}

    def task_states(dag_id, run_id):
        current["gate"], current["run"] = next(polls)
        return [TaskState("USDF.review_step2c", -1, current["gate"], None, 1, None)]

    client.task_states = task_states
    client.dag_run = lambda dag_id, run_id: {"state": current["run"]}
    asked = []
    state = client.follow("d", "r", poll_s=0, on_progress=None, on_awaiting_input=lambda t: asked.append(t.task_id))
    assert state == "success" and asked == ["USDF.review_step2c"]


def test_a_script_answers_a_gate_only_once_it_has_been_waiting_for_the_settle_time(monkeypatch):
    """Airflow 3.3 fails a gate resumed before the scheduler saw its parking process exit: a
    script's answer waits until the gate has been asking for GATE_SETTLE_S, a late one does not."""
    from drp_campaign import airflow_client
    from drp_campaign.airflow_client import GATE_SETTLE_S, AirflowClient, TaskState

    client = AirflowClient.__new__(AirflowClient)
    sent, slept = [], []
    monkeypatch.setattr(airflow_client.time, "sleep", slept.append)
    client._patch = lambda path, body: sent.append((path, body)) or {}
    client.task_states = lambda dag_id, run_id: [TaskState("USDF.review_step2c", -1, "success", None, 1, None)]
    for asked_s_ago, expected_sleep in ((0.5, GATE_SETTLE_S - 0.5), (60, 0.0)):
        asked = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=asked_s_ago)
        client._get = lambda path, asked=asked, **params: {"created_at": asked.isoformat(), "total_entries": 0}
        client.decide("d", "r", "USDF.review_step2c", approve=True)
        assert slept[-1] == pytest.approx(expected_sleep, abs=0.2)
    assert sent[-1] == (
        "/api/v2/dags/d/dagRuns/r/taskInstances/USDF.review_step2c/-1/hitlDetails",
        {"chosen_options": ["Approve"], "params_input": {}},
    )


def test_an_approval_airflow_loses_to_its_resume_race_is_given_again_after_clearing_the_gate(monkeypatch):
    """CI saw Airflow fail a gate approved 5 s after it asked, on a loaded machine: the client
    notices (the gate failed, its log saying the server stopped it), clears the gate and what it
    held, waits for it to ask again and approves again; a gate failing otherwise is left as it is."""
    from drp_campaign import airflow_client
    from drp_campaign.airflow_client import LOST_RESUME, AirflowClient, TaskState

    monkeypatch.setattr(airflow_client.time, "sleep", lambda s: None)
    client = AirflowClient.__new__(AirflowClient)
    calls = []
    states = iter(["failed", "awaiting_input", "success"])
    mismatches = iter([0, 1, 1, 1])  # the scheduler's audit log: one "state mismatch" after the first answer

    def get(path, **params):
        if path == "/api/v2/eventLogs":
            assert params == {"dag_id": "d", "run_id": "r", "task_id": "USDF.review_step2c", "event": "state mismatch"}
            return {"total_entries": next(mismatches)}
        return {"created_at": "2026-11-30T00:00:00+00:00"}

    client._get = get
    client._patch = lambda path, body: calls.append("approve") or {}
    client.task_states = lambda dag_id, run_id: [TaskState("USDF.review_step2c", -1, next(states), None, 1, None)]
    client.task_log = lambda dag_id, run_id, task_id: "Pausing task as AWAITING_INPUT.\n::group::Pre Execute"
    client.clear = lambda dag_id, run_id, task_ids, only_failed, include_downstream: calls.append(
        ("clear", tuple(task_ids), only_failed, include_downstream)
    )
    client.decide("d", "r", "USDF.review_step2c", approve=True)
    assert calls == ["approve", ("clear", ("USDF.review_step2c",), True, True), "approve"]

    calls.clear()
    states, mismatches = iter(["failed"]), iter([1, 1])
    client.task_log = lambda dag_id, run_id, task_id: "ReviewRejected: ..."
    client.decide("d", "r", "USDF.review_step2c", approve=True)
    assert calls == ["approve"], "a gate failing for a reason of its own is not retried"

    calls.clear()
    states, mismatches = iter(["failed", "awaiting_input", "success"]), iter([1, 1, 1, 1])
    client.task_log = lambda dag_id, run_id, task_id: f"{LOST_RESUME}. Terminating process"  # its log says so
    client.decide("d", "r", "USDF.review_step2c", approve=True)
    assert calls == ["approve", ("clear", ("USDF.review_step2c",), True, True), "approve"]
