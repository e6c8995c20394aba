"""The same campaign triggered twice at once: the rule (drp_campaign.trigger_guard) and the
api-server middleware that applies it (plugins/trigger_guard.py), here without a server: the
middleware's Airflow lookups are replaced, the request and the app behind it are plain ASGI.
The e2e (test_sites_e2e.py, the failover slice) triggers twice at the same instant for real."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import pytest

from drp_campaign.config import load_campaign
from drp_campaign.plugins import trigger_guard as middleware
from drp_campaign.settings import CAMPAIGNS_DIR
from drp_campaign.trigger_guard import ActiveRun, refusal, run_choices, twin_run

DAG_ID = "campaign_test_3x3"


@pytest.fixture(scope="module")
def campaign():
    return load_campaign(CAMPAIGNS_DIR / "test-3x3.yaml")


def running(conf, run_id="manual__first", state="running", user="operator") -> ActiveRun:
    return ActiveRun(run_id, state, conf, user)


@pytest.mark.parametrize(
    "first, second",
    [
        ({}, {}),
        ({}, {"sites": ["USDF", "FRDF", "UKDF_RAL"], "dry_run": False, "review_gates": True}),  # the form's defaults
        ({"sites": ["FRDF", "UKDF_RAL"]}, {"sites": ["UKDF_RAL", "FRDF"]}),  # order does not matter
        ({"tracts": ["3", 1]}, {"tracts": [1, 3]}),  # the form sends strings, a script numbers
        ({"tracts": None}, {"tracts": []}),  # no tracts: all of them
    ],
)
def test_the_same_choices_written_differently_are_one_run(campaign, first, second):
    assert run_choices(campaign, first) == run_choices(campaign, second)
    assert twin_run(campaign, second, [running(first)]) == running(first)


@pytest.mark.parametrize(
    "first, second",
    [
        ({}, {"sites": ["FRDF"]}),
        ({"tracts": [3]}, {"tracts": [3, 4]}),
        ({}, {"dry_run": True}),
        ({}, {"review_gates": False}),
    ],
)
def test_other_choices_are_other_work(campaign, first, second):
    assert twin_run(campaign, second, [running(first)]) is None


def test_the_twin_is_found_among_other_runs_and_a_conf_unreadable_now_is_skipped(campaign):
    active = [running({"tracts": ["x"]}, "manual__odd"), running({"sites": ["FRDF"]}, "manual__frdf", "queued")]
    assert twin_run(campaign, {"sites": ["FRDF"]}, active).run_id == "manual__frdf"
    assert twin_run(campaign, {}, active) is None


def test_the_refusal_names_the_run_its_state_who_and_what_to_do(campaign):
    text = refusal(DAG_ID, running({}, "manual__first", "queued", "operator"))
    assert "run 'manual__first' of campaign_test_3x3 (triggered by operator) is queued" in text
    assert "mark it failed first" in text


# --- the middleware --------------------------------------------------------------------------


class Airflow:
    """The app behind the middleware: records what reached it, answers 200."""

    def __init__(self):
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.bodies.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def post(app, path: str, body: dict | bytes, method: str = "POST") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    chunks = [data[:5], data[5:]]  # sent in two parts, as a client may
    sent: list[dict] = []

    async def receive():
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(app(scope, receive, send))
    body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body_out)


@pytest.fixture
def guarded(monkeypatch, campaign):
    """The middleware over a recording app, with a run of all the defaults running."""
    active = [running({})]
    allowed = {"yes": True}

    async def may_trigger(scope, dag_id):
        return allowed["yes"]

    @asynccontextmanager
    async def no_lock(dag_id):
        yield

    monkeypatch.setattr(middleware, "_campaign_of", lambda dag_id: campaign if dag_id == DAG_ID else None)
    monkeypatch.setattr(middleware, "_may_trigger", may_trigger)
    monkeypatch.setattr(middleware, "_dag_lock", no_lock)
    monkeypatch.setattr(middleware, "_twin", lambda c, dag_id, conf: twin_run(c, conf, active))
    app = Airflow()
    return middleware.OneRunPerChoice(app), app, allowed


PATH = f"/api/v2/dags/{DAG_ID}/dagRuns"


def test_a_second_trigger_with_the_same_choices_is_refused_and_reaches_nothing(guarded):
    guard, app, _ = guarded
    status, answer = post(guard, PATH, {"conf": {"dry_run": False}})
    assert status == 409 and "run 'manual__first'" in answer["detail"] and "is running" in answer["detail"]
    assert app.bodies == []


def test_other_choices_and_other_requests_reach_airflow_with_their_body_whole(guarded):
    guard, app, allowed = guarded
    body = {"conf": {"sites": ["FRDF"]}, "note": "frdf only"}
    assert post(guard, PATH, body)[0] == 200
    assert json.loads(app.bodies[-1]) == body
    assert post(guard, PATH, {"conf": {}}, method="GET")[0] == 200  # not a trigger
    assert post(guard, "/api/v2/dags/other_dag/dagRuns", {"conf": {}})[0] == 200  # not a campaign DAG
    assert post(guard, PATH, b"not json")[0] == 200  # Airflow's route answers that (422)
    allowed["yes"] = False  # a caller who may not trigger hears Airflow's 401/403, not of the other run
    assert post(guard, PATH, {"conf": {}})[0] == 200
    assert len(app.bodies) == 5
