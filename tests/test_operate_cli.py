"""The operator commands (status, retry, cancel, approve, reject, failover) against a canned 3-site run.

No server: the real AirflowClient is used with its three HTTP verbs stubbed by `FakeAirflow`,
which answers the reads from a run built by live_status.build_status (the campaign view's status
API) over the real test-3x3 DAG's task ids, and records every write. Bad input must make no write.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import urllib.parse

import pytest
import requests

from drp_campaign import airflow_client, failover
from drp_campaign.airflow_client import AirflowApiError, AirflowClient
from drp_campaign.cli import main
from drp_campaign.config import load_campaign
from drp_campaign.graph import run_key
from drp_campaign.live_status import TaskRow, build_status
from drp_campaign.operate_commands import cell_word, format_matrix
from drp_campaign.settings import CAMPAIGNS_DIR

DAG_ID = "campaign_test_3x3"
RUN_ID = "manual__2026-11-30T16:05:27.302615+00:00"
KEY = run_key(RUN_ID)
BASE = "http://airflow.test"
T0 = dt.datetime(2026, 11, 30, 16, 5, tzinfo=dt.UTC)
GROUPS = 3  # every site's mapped steps run three groups


@pytest.fixture(scope="module")
def campaign():
    return load_campaign(CAMPAIGNS_DIR / "test-3x3.yaml")


@pytest.fixture(scope="module")
def task_ids(campaign):
    from drp_campaign.dag_factory import build_dag

    return build_dag(campaign).task_ids


MAPPED = re.compile(r"^[A-Z_]+\.step\d[a-z]?$")  # a site's step: mapped over its groups


def rows_of(task_ids, states: dict[tuple[str, int] | str, str | None]) -> list[TaskRow]:
    """Every task instance of the DAG (mapped steps with GROUPS groups), in the state STATES gives
    it by (task_id, map_index) or task_id, else not started."""
    rows = []
    for task_id in task_ids:
        for index in range(GROUPS) if MAPPED.match(task_id) and task_id != "USDF.step2c" else [-1]:
            state = states.get((task_id, index), states.get(task_id))
            started = T0 if state else None
            ended = T0 + dt.timedelta(minutes=5) if state in ("success", "failed") else None
            rows.append(TaskRow(task_id, index, state, started, ended))
    return rows


def done_up_to_step2b(task_ids) -> dict:
    """What every site has finished when step2b is done everywhere (the fan-in not started)."""
    first = ("check_software", "place_inputs", "check_inputs", "step1", "step2a", "step2b")
    return {t: "success" for t in task_ids if t.split(".")[1:2] and t.split(".")[1] in first}


@pytest.fixture
def failing(task_ids):
    """A running run: FRDF's step2b failed in one group (its gather upstream-failed), UKDF_RAL's
    gather failed its verify, so the hub's gate for step2c upstream-failed; nothing after ran."""
    states = done_up_to_step2b(task_ids) | {
        ("FRDF.step2b", 1): "failed",
        **{
            f"FRDF.gather_for_step2c.{t}": "upstream_failed"
            for t in ("register", "replicate", "wait", "ingest", "verify")
        },
        **{f"UKDF_RAL.gather_for_step2c.{t}": "success" for t in ("register", "replicate", "wait", "ingest")},
        "UKDF_RAL.gather_for_step2c.verify": "failed",
        "USDF.review_step2c": "upstream_failed",
    }
    return rows_of(task_ids, states)


@pytest.fixture
def gate_asks(task_ids):
    """A running run whose gate before step2c awaits a decision; UKDF_RAL's step2b group 1 re-running."""
    gathers = {t: "success" for t in task_ids if ".gather_for_step2c." in t}
    states = done_up_to_step2b(task_ids) | gathers | {"USDF.review_step2c": "awaiting_input"}
    return rows_of(task_ids, states)


class FakeAirflow:
    """Airflow's REST API as AirflowClient's `_get/_post/_patch` see it: reads answered from one
    run (its status as the campaign view builds it, its task instances), writes recorded."""

    def __init__(self, campaign, tasks: list[TaskRow], state: str = "running", report: dict | None = None):
        run = {"dag_id": DAG_ID, "run_id": RUN_ID, "state": state, "start_date": T0}
        self.status = build_status(campaign, run, tasks, report, now=T0 + dt.timedelta(minutes=30))
        self.tasks = tasks
        self.writes: list[tuple[str, str, dict]] = []
        self.status_asked: list[dict] = []
        self.logins: list[tuple[str, str | None]] = []
        self.refuse_writes = False
        self.conf: dict = {}  # the run's trigger form (none: the campaign's sites and tracts)
        self.ended: set[str] = set()  # "task_id/map_index" the scheduler skipped meanwhile
        self.reskip: set[str] = set()  # task ids a scheduler loop skips again just after a clear

    def get(self, path: str, **params) -> dict:
        if path == "/drp/api/status":
            self.status_asked.append(params)
            return self.status
        run_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(RUN_ID, safe='')}"
        if path == run_path:
            return {"dag_run_id": RUN_ID, "state": self.status["state"], "conf": self.conf}
        if path == f"{run_path}/taskInstances":
            entries = [
                {"task_id": t.task_id, "map_index": t.map_index, "state": t.state, "rendered_map_index": None}
                for t in self.tasks
            ]
            return {"task_instances": entries, "total_entries": len(entries)}
        if path == "/api/v2/eventLogs":  # the scheduler's audit log: no "state mismatch" here
            return {"event_logs": [], "total_entries": 0}
        if path.startswith(run_path) and path.endswith("/hitlDetails"):
            return {"created_at": "2026-11-30T16:00:00+00:00"}  # long enough ago: decide does not wait
        raise AssertionError(f"unexpected GET {path}")

    def write(self, method: str, path: str, body: dict) -> dict:
        if self.refuse_writes:
            raise AirflowApiError(f"{method} {BASE}{path}: HTTP 403: Forbidden", status=403, detail="Forbidden")
        if method == "PATCH" and path.partition("/taskInstances/")[2] in self.ended:  # Airflow: "already in ... state"
            raise AirflowApiError(f"PATCH {BASE}{path}: HTTP 409", status=409, detail="already in skipped state")
        self.writes.append((method, path, body))
        if path.endswith("/hitlDetails"):  # the gate goes on (approved) or fails (rejected), as in Airflow
            gate = path.split("/taskInstances/")[1].split("/")[0]
            state = "success" if body["chosen_options"] == ["Approve"] else "failed"
            self.tasks = [dataclasses.replace(t, state=state) if t.task_id == gate else t for t in self.tasks]
        if path.endswith("/clearTaskInstances"):  # what Airflow would clear of the named tasks (no downstream here)
            cleared = [
                t
                for t in self.tasks
                if t.task_id in body.get("task_ids", [t.task_id])
                and (t.state in ("failed", "upstream_failed") or not body["only_failed"])
            ]
            if not body["dry_run"]:  # cleared: to be run again (but a racing scheduler loop re-skips `reskip`, once)
                self.tasks = [dataclasses.replace(t, state=None) if t in cleared else t for t in self.tasks]
                self.tasks = [
                    dataclasses.replace(t, state="skipped") if t.task_id in self.reskip else t for t in self.tasks
                ]
                self.reskip = set()
            return {
                "task_instances": [{"task_id": t.task_id, "map_index": t.map_index, "state": None} for t in cleared]
            }
        return {}


@pytest.fixture
def airflow(monkeypatch):
    """Install a FakeAirflow behind AirflowClient: `airflow(tasks, state=..., report=...)`."""
    fakes = []

    def install(campaign, tasks, state="running", report=None) -> FakeAirflow:
        fake = FakeAirflow(campaign, tasks, state, report)
        fakes.append(fake)

        def init(self, base_url=None, username=airflow_client.DEFAULT_USER, password=None):
            fake.logins.append((username, password))
            self.base_url, self.username = (base_url or BASE).rstrip("/"), username

        monkeypatch.setattr(AirflowClient, "__init__", init)
        monkeypatch.setattr(AirflowClient, "_get", lambda self, path, **params: fake.get(path, **params))
        monkeypatch.setattr(AirflowClient, "_post", lambda self, path, body, auth=True: fake.write("POST", path, body))
        monkeypatch.setattr(AirflowClient, "_patch", lambda self, path, body: fake.write("PATCH", path, body))
        monkeypatch.setattr(airflow_client.time, "sleep", lambda s: None)
        monkeypatch.setattr(failover, "SETTLE_S", 0)
        monkeypatch.setattr(airflow_client, "default_password", lambda user: f"{user}-from-file")
        return fake

    monkeypatch.delenv("DRP_AIRFLOW_USER", raising=False)
    monkeypatch.delenv("DRP_AIRFLOW_PASSWORD", raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE)
    return install


def matrix_cells(lines: list[str]) -> dict[tuple[str, str], str]:
    """(site, column) -> word, read back from format_matrix's blocks by the header's positions."""
    cells = {}
    header: list[tuple[int, str]] = []
    for line in lines:
        if line.startswith("   "):  # a block's header: column names after the blank site label
            header = [(m.start(), m.group()) for m in re.finditer(r"\S+", line)]
            continue
        site = line.split()[0]
        for i, (start, col) in enumerate(header):
            end = header[i + 1][0] if i + 1 < len(header) else None
            cells[(site, col)] = line[start:end].strip()
    return cells


# --- status --------------------------------------------------------------------------------------


def test_status_prints_each_sites_row_of_the_matrix_and_the_failed_tasks_links(campaign, failing, airflow, capsys):
    fake = airflow(campaign, failing)
    assert main(["status", KEY, "--dag", DAG_ID]) == 0, "a running run, failures or not"
    assert fake.status_asked == [{"run_id": KEY, "dag_id": DAG_ID}] and fake.writes == []
    out = capsys.readouterr().out
    assert f"run {RUN_ID} of {DAG_ID}" in out and "State: running" in out
    cells = matrix_cells(format_matrix(fake.status, width=1000))
    assert cells[("FRDF", "step2b")] == f"FAIL 1/{GROUPS}"
    assert cells[("USDF", "step2b")] == cells[("FRDF", "step1")] == "ok"
    assert cells[("FRDF", "gather_for_step2c")] == "upfail"
    assert cells[("UKDF_RAL", "gather_for_step2c")] == "FAIL 1/5", "a hop's five tasks, one failed"
    assert cells[("USDF", "gather_for_step2c")] == ".", "the hub gathers nothing from itself"
    assert cells[("USDF", "step3")] == "-"
    link = f"{BASE}/dags/{DAG_ID}/runs/{urllib.parse.quote(RUN_ID, safe='')}/tasks/FRDF.step2b/mapped/1"
    assert re.search(rf"FRDF\.step2b\[1\]\s+{re.escape(link)}", out)
    assert "UKDF_RAL.gather_for_step2c.verify" in out and "Ledger: no ledger report yet" in out


def test_the_matrix_wraps_to_the_width_and_keeps_every_column_once(campaign, gate_asks, airflow):
    fake = airflow(campaign, gate_asks)
    lines = format_matrix(fake.status, width=80)
    assert max(len(line) for line in lines) <= 80
    cells = matrix_cells(lines)
    assert {col for _, col in cells} == set(fake.status["columns"])
    assert cells[("USDF", "review_step2c")] == "ASK" and cells[("FRDF", "review_step2c")] == "."
    assert sum(line.startswith("  FRDF") for line in lines) == sum(line.startswith("   ") for line in lines) > 1


@pytest.mark.parametrize(
    ("state", "counts", "word"),
    [
        ("running", {"running": 1, "success": 2}, "run 2/3"),
        ("queued", {"queued": 2, "skipped": 1}, "queue 1/3"),
        ("deferred", {"success": 2, "deferred": 1, None: 2}, "wait 2/5"),
        ("failed", {"failed": 2, "success": 1}, "FAIL 2/3"),
        ("failed", {"failed": 1}, "FAIL"),
        ("success", {"success": 3}, "ok"),
        ("awaiting_input", {"awaiting_input": 1}, "ASK"),
    ],
)
def test_a_cell_is_one_word_and_how_many_of_its_tasks_failed_or_are_done(state, counts, word):
    assert cell_word({"state": state, "counts": {str(k): n for k, n in counts.items()}}) == word


def test_status_json_is_the_views_json_and_a_failed_run_exits_1_with_the_ledger_verdict(
    campaign, failing, airflow, capsys
):
    report = {
        "run_key": KEY,
        "ledger_balanced": False,
        "reviews": [{"step": "step2c", "decision": "rejected", "by": "alice", "at": "2026-11-30T17:00:00"}],
    }
    fake = airflow(campaign, failing, state="failed", report=report)
    assert main(["status", RUN_ID, "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == fake.status
    assert main(["status", RUN_ID]) == 1
    out = capsys.readouterr().out
    assert "Ledger: UNBALANCED" in out and re.search(r"step2c\s+rejected\s+by alice", out)


# --- retry ---------------------------------------------------------------------------------------

FRDF_GATHER = [f"FRDF.gather_for_step2c.{t}" for t in ("ingest", "register", "replicate", "verify", "wait")]


@pytest.mark.parametrize(
    ("filters", "task_ids"),
    [
        ([], sorted(["FRDF.step2b", *FRDF_GATHER, "UKDF_RAL.gather_for_step2c.verify", "USDF.review_step2c"])),
        (["--site", "FRDF"], sorted(["FRDF.step2b", *FRDF_GATHER])),
        (["--step", "step2b"], ["FRDF.step2b"]),
        (["--step", "gather_for_step2c"], sorted([*FRDF_GATHER, "UKDF_RAL.gather_for_step2c.verify"])),
        (["--site", "UKDF_RAL", "--step", "gather_for_step2c"], ["UKDF_RAL.gather_for_step2c.verify"]),
    ],
)
def test_retry_clears_the_failed_and_upstream_failed_tasks_the_filters_select_and_what_follows(
    campaign, failing, airflow, capsys, filters, task_ids
):
    fake = airflow(campaign, failing)
    assert main(["retry", KEY, *filters]) == 0
    [(method, path, body)] = fake.writes
    assert (method, path) == ("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances")
    assert body == {
        "dry_run": False,
        "dag_run_id": RUN_ID,  # the run's id, though it was named by its key
        "task_ids": task_ids,
        "only_failed": True,
        "include_downstream": True,
        "reset_dag_runs": True,
    }
    out = capsys.readouterr().out
    assert re.search(r"FRDF\.step2b\[1\]\s+was failed", out) if "FRDF.step2b" in task_ids else "step2b" not in out


@pytest.mark.parametrize(
    ("filters", "says"),
    [
        (["--site", "CCIN2P3"], "site 'CCIN2P3' is not in run .* its sites are USDF, FRDF, UKDF_RAL"),
        (["--step", "step9"], "step 'step9' is not in run .* its steps, hops and gates are check_software, "),
        (["--site", "USDF"], r"nothing failed at USDF in run .* nothing changed; what failed: FRDF\.step2b\[1\], "),
        (["--site", "FRDF", "--step", "gather_for_step2c"], "nothing failed at FRDF in gather_for_step2c in run"),
    ],
)
def test_retry_refuses_a_site_or_step_not_in_the_run_or_nothing_failed_there_and_changes_nothing(
    campaign, failing, airflow, capsys, filters, says
):
    fake = airflow(campaign, failing)
    assert main(["retry", KEY, *filters]) == 1
    assert re.search(says, capsys.readouterr().err)
    assert fake.writes == []


def test_retry_of_a_run_without_failures_says_so(campaign, gate_asks, airflow, capsys):
    fake = airflow(campaign, gate_asks)
    assert main(["retry", KEY]) == 1
    assert "nothing failed in run" in capsys.readouterr().err and fake.writes == []


def test_a_viewer_refused_by_airflow_gets_an_error_naming_them_not_a_traceback(campaign, failing, airflow, capsys):
    fake = airflow(campaign, failing)
    fake.refuse_writes = True
    assert main(["retry", KEY, "--user", "viewer"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Airflow refused user 'viewer' to clear failed tasks of run ")
    assert "HTTP 403" in err and "Traceback" not in err
    assert fake.logins == [("viewer", "viewer-from-file")], "the local password file's, without $DRP_AIRFLOW_PASSWORD"


# --- cancel --------------------------------------------------------------------------------------


def test_cancel_sets_a_running_run_to_failed_and_lists_what_it_stops(campaign, task_ids, airflow, capsys):
    tasks = rows_of(task_ids, done_up_to_step2b(task_ids) | {("UKDF_RAL.step2b", 2): "running"})
    fake = airflow(campaign, tasks)
    assert main(["cancel", RUN_ID]) == 0
    assert fake.writes == [
        ("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(RUN_ID, safe='')}", {"state": "failed"})
    ]
    assert re.search(r"UKDF_RAL\.step2b\[2\]\s+was running", capsys.readouterr().out)


@pytest.mark.parametrize("state", ["success", "failed"])
def test_cancel_refuses_a_run_that_has_ended_and_changes_nothing(campaign, failing, airflow, capsys, state):
    fake = airflow(campaign, failing, state=state)
    assert main(["cancel", RUN_ID]) == 1
    assert f"has already ended ({state}): nothing to cancel" in capsys.readouterr().err
    assert fake.writes == []


# --- approve / reject ----------------------------------------------------------------------------

RUN_PATH = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(RUN_ID, safe='')}"
GATE_PATH = f"{RUN_PATH}/taskInstances/USDF.review_step2c/-1/hitlDetails"


@pytest.mark.parametrize(("command", "option"), [("approve", "Approve"), ("reject", "Reject")])
def test_approve_and_reject_answer_the_hubs_gate_as_the_user_from_the_environment(
    campaign, gate_asks, airflow, capsys, monkeypatch, command, option
):
    monkeypatch.setenv("DRP_AIRFLOW_USER", "alice")
    monkeypatch.setenv("DRP_AIRFLOW_PASSWORD", "alice-secret")
    fake = airflow(campaign, gate_asks)
    assert main([command, KEY, "step2c"]) == 0
    assert fake.writes == [("PATCH", GATE_PATH, {"chosen_options": [option], "params_input": {}})]
    assert fake.logins == [("alice", "alice-secret")]
    assert f"USDF.review_step2c of run {RUN_ID} of {DAG_ID}: {command}d by alice" in capsys.readouterr().out


def test_approve_refuses_a_step_without_a_gate_listing_the_gates(campaign, gate_asks, airflow, capsys):
    fake = airflow(campaign, gate_asks)
    assert main(["approve", KEY, "step2b"]) == 1
    assert "step 'step2b' has no review gate in run" in (err := capsys.readouterr().err)
    assert "(its gated steps: step2c)" in err and fake.writes == []


def test_approve_refuses_a_gate_not_awaiting_a_decision_giving_its_state_and_any_decision(
    campaign, failing, task_ids, airflow, capsys
):
    fake = airflow(campaign, failing)
    assert main(["approve", KEY, "step2c"]) == 1
    assert "USDF.review_step2c of run" in (err := capsys.readouterr().err)
    assert "is not awaiting a decision: it is upstream_failed" in err and fake.writes == []
    decided = {"run_key": KEY, "reviews": [{"step": "step2c", "decision": "approved", "by": "bob", "at": "T"}]}
    tasks = rows_of(task_ids, done_up_to_step2b(task_ids) | {"USDF.review_step2c": "success"})
    fake = airflow(campaign, tasks, report=decided)
    assert main(["reject", KEY, "step2c"]) == 1
    assert "it is success (approved by bob at T)" in capsys.readouterr().err and fake.writes == []


def test_a_viewer_approving_gets_an_error_naming_them(campaign, gate_asks, airflow, capsys):
    fake = airflow(campaign, gate_asks)
    fake.refuse_writes = True
    assert main(["approve", KEY, "step2c", "--user", "viewer"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Airflow refused user 'viewer' to approve USDF.review_step2c of run ")
    assert "Traceback" not in err


# --- reaching Airflow and the view -------------------------------------------------------------


def response(status: int, body: str, content_type: str = "application/json") -> requests.Response:
    resp = requests.Response()
    resp.status_code, resp._content = status, body.encode()
    resp.headers["Content-Type"] = content_type
    resp.request = requests.Request("GET", f"{BASE}/drp/api/status").prepare()
    resp.url = resp.request.url
    return resp


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (response(404, '{"detail": "no campaign run \'x\' in the ledger"}'), "no campaign run 'nope': no campaign run"),
        (response(404, '{"detail": "Not Found"}'), "is the drp_campaign plugin"),
        (response(200, "<html>the UI</html>", "text/html"), "is the drp_campaign plugin"),
        (response(403, '{"detail": "user \'eve\' may not read the runs"}'), "HTTP 403"),
    ],
)
def test_the_status_api_tells_an_unknown_run_from_a_server_without_the_campaign_view(answer, says):
    client = AirflowClient.__new__(AirflowClient)  # no login: the session is stubbed
    client.base_url, client.username = BASE, "operator"
    client.session = type("Session", (), {"get": lambda self, url, params, timeout: answer})()
    with pytest.raises(AirflowApiError, match=says):
        client.campaign_status("nope")


def test_an_airflow_that_does_not_answer_is_an_error_naming_its_address(monkeypatch, capsys):
    def refuse(self, *args, **kwargs):
        raise requests.ConnectionError("Connection refused")

    monkeypatch.setattr(AirflowClient, "__init__", refuse)
    monkeypatch.setenv("DRP_AIRFLOW_PASSWORD", "secret")
    assert main(["status", KEY, "--url", "http://127.0.0.1:1/"]) == 1
    assert capsys.readouterr().err == "error: cannot reach Airflow at http://127.0.0.1:1: Connection refused\n"


@pytest.mark.parametrize("filters", [["--site", "USDF"], ["--step", "campaign_report"]])
def test_retry_counts_the_report_as_the_hubs_as_the_matrix_shows_it(campaign, task_ids, airflow, filters):
    everything = {t: "success" for t in task_ids} | {"campaign_report": "failed"}
    fake = airflow(campaign, rows_of(task_ids, everything))
    assert matrix_cells(format_matrix(fake.status, width=1000))[("USDF", "campaign_report")] == "FAIL"
    assert main(["retry", KEY, *filters]) == 0
    [(_, _, body)] = fake.writes
    assert body["task_ids"] == ["campaign_report"]


def test_a_user_without_a_password_is_told_where_to_give_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(tmp_path / "absent.json"))
    monkeypatch.delenv("DRP_AIRFLOW_PASSWORD", raising=False)
    assert main(["status", KEY, "--user", "carol"]) == 1
    err = capsys.readouterr().err
    assert "no password for Airflow user 'carol'" in err and "set $DRP_AIRFLOW_PASSWORD" in err


def test_the_writes_are_bodies_airflows_own_request_models_accept(campaign, failing, airflow):
    """The bodies checked against Airflow 3.3's API models (strict: an unknown key is a 422)."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import DAGRunPatchBody
    from airflow.api_fastapi.core_api.datamodels.task_instances import ClearTaskInstancesBody

    fake = airflow(campaign, failing)
    assert main(["retry", KEY, "--site", "FRDF"]) == 0
    clear = ClearTaskInstancesBody.model_validate(fake.writes[0][2])
    assert (clear.dry_run, clear.only_failed, clear.include_downstream, clear.dag_run_id) == (False, True, True, RUN_ID)
    fake = airflow(campaign, failing)
    assert main(["cancel", KEY]) == 0
    assert DAGRunPatchBody.model_validate(fake.writes[0][2]).state == "failed"


# --- failover ------------------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    from drp_campaign.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("DRP_LEDGER_URL", url)
    return Ledger(url)


@pytest.fixture
def frdf_down(task_ids):
    """FRDF's worker died after its inputs were checked: its step1 groups wait in its queue; the
    other sites are at step2b (UKDF_RAL's gather done, the hub's gate waiting for FRDF's)."""
    states = done_up_to_step2b(task_ids)
    states = {t: s for t, s in states.items() if not t.startswith("FRDF.step")}
    states |= {("FRDF.step1", 0): "queued", ("FRDF.step1", 1): "running"}
    states |= {t: "success" for t in task_ids if t.startswith("UKDF_RAL.gather_for_step2c.")}
    return rows_of(task_ids, states)


def _writes_of(fake, method: str) -> list[tuple[str, dict]]:
    return [(path, body) for m, path, body in fake.writes if m == method]


def test_failover_records_the_move_reruns_the_new_sites_tasks_and_skips_the_down_sites(
    campaign, frdf_down, airflow, ledger, capsys
):
    fake = airflow(campaign, frdf_down)
    fake.ended = {"FRDF.step2b/0"}  # skipped by the scheduler after its upstream was: a 409, no harm
    assert main(["failover", KEY, "--from", "FRDF", "--to", "UKDF_RAL"]) == 0
    assert ledger.moved_tracts(KEY) == {2: "UKDF_RAL", 3: "UKDF_RAL"}
    assert [r["moved_by"] for r in ledger.failovers(KEY)] == ["operator", "operator"]
    (probe, dry), (_, clear) = _writes_of(fake, "POST")
    assert dry["dry_run"] is True and clear["dry_run"] is False and clear["only_failed"] is False
    assert probe.endswith("/clearTaskInstances")
    assert "UKDF_RAL.check_software" not in clear["task_ids"], "its stack was checked: it stays"
    assert {"UKDF_RAL.place_inputs.register", "UKDF_RAL.check_inputs", "UKDF_RAL.step2b"} <= set(clear["task_ids"])
    assert "UKDF_RAL.gather_for_step2c.verify" in clear["task_ids"], "it comes home again with the moved tracts"
    assert not any(t.startswith(("FRDF.", "USDF.")) for t in clear["task_ids"]), "nothing else runs again"
    patched = {path.split("/taskInstances/")[1]: body for path, body in _writes_of(fake, "PATCH")}
    assert "FRDF.step1/0" in patched and "FRDF.step1/1" in patched and "FRDF.gather_for_step2c.verify/-1" in patched
    assert "FRDF.check_inputs/-1" not in patched, "what FRDF finished stays as it was"
    assert {b["new_state"] for b in patched.values()} == {"skipped"}
    assert all("failed over to UKDF_RAL by operator" in b["note"] for b in patched.values())
    out = capsys.readouterr().out
    assert "tracts [2, 3] of FRDF now run at UKDF_RAL" in out and "FRDF.step1[0]" in out


def test_a_failover_stopped_half_way_is_finished_by_running_it_again_and_then_refused(
    campaign, frdf_down, airflow, ledger, capsys
):
    ledger.record_failover(KEY, "FRDF", "UKDF_RAL", [2, 3], by="operator")  # it stopped after the ledger
    fake = airflow(campaign, frdf_down)
    assert main(["failover", KEY, "--from", "FRDF", "--to", "UKDF_RAL"]) == 0
    assert len(_writes_of(fake, "PATCH")) > 0 and "tracts [2, 3] of FRDF" in capsys.readouterr().out
    done = [dataclasses.replace(t, state="skipped") if t.task_id.startswith("FRDF.") else t for t in frdf_down]
    fake = airflow(campaign, done)
    assert main(["failover", KEY, "--from", "FRDF", "--to", "UKDF_RAL"]) == 1
    err = capsys.readouterr().err
    assert "--from FRDF: nothing left to do in run" in err and "moved to UKDF_RAL already" in err
    assert fake.writes == []


@pytest.mark.parametrize(
    ("argv", "conf", "changed", "says"),
    [
        (["--from", "FRDF", "--to", "FRDF"], {}, {}, "--from and --to are both FRDF"),
        (["--from", "FRDF", "--to", "IDAC_UK"], {}, {}, "--to IDAC_UK: not a site of campaign test-3x3"),
        (["--from", "LSST", "--to", "USDF"], {}, {}, "--from LSST: not a site of campaign test-3x3"),
        (["--from", "USDF", "--to", "FRDF"], {}, {}, "--from USDF: the hub cannot be failed over"),
        (["--from", "FRDF", "--to", "UKDF_RAL"], {"sites": ["USDF", "FRDF"]}, {}, "--to UKDF_RAL: not a site of run"),
        (["--from", "FRDF", "--to", "USDF"], {"tracts": [0, 4]}, {}, "--from FRDF: nothing left to do"),
        (
            ["--from", "FRDF", "--to", "USDF"],
            {},
            {"FRDF.gather_for_step2c.register": "success"},
            "its outputs have started coming home (FRDF.gather_for_step2c.register is success)",
        ),
    ],
)
def test_failover_refuses_bad_input_naming_it_and_changes_nothing(
    campaign, task_ids, frdf_down, airflow, ledger, capsys, argv, conf, changed, says
):
    tasks = [dataclasses.replace(t, state=changed.get(t.task_id, t.state)) for t in frdf_down]
    fake = airflow(campaign, tasks)
    fake.conf = conf
    assert main(["failover", KEY, *argv]) == 1
    assert says in capsys.readouterr().err
    assert fake.writes == [] and ledger.failovers(KEY) == []


def test_failover_of_a_finished_run_or_by_a_viewer_changes_nothing(campaign, frdf_down, airflow, ledger, capsys):
    airflow(campaign, frdf_down, state="success")
    assert main(["failover", KEY, "--from", "FRDF", "--to", "USDF"]) == 1
    assert "has finished (success): nothing left to move" in capsys.readouterr().err
    fake = airflow(campaign, frdf_down)
    fake.refuse_writes = True
    assert main(["failover", KEY, "--from", "FRDF", "--to", "USDF", "--user", "viewer"]) == 1
    assert "Airflow refused user 'viewer' to fail FRDF over to USDF" in capsys.readouterr().err
    assert ledger.failovers(KEY) == []


def test_failover_to_a_site_with_nothing_of_its_own_in_the_run_runs_it_all_from_its_software_check(
    campaign, task_ids, airflow, ledger, capsys
):
    """A slice of FRDF's tract 3 with UKDF_RAL taking part: UKDF_RAL skipped everything, its
    software check too; after the failover all of it runs, the check first."""
    states = {t: "skipped" for t in task_ids if t.startswith("UKDF_RAL.")} | {"FRDF.check_software": "queued"}
    fake = airflow(campaign, rows_of(task_ids, states))
    fake.conf = {"sites": ["FRDF", "UKDF_RAL"], "tracts": [3]}
    assert main(["failover", KEY, "--from", "FRDF", "--to", "UKDF_RAL"]) == 0
    assert ledger.moved_tracts(KEY) == {3: "UKDF_RAL"}
    (_, clear) = _writes_of(fake, "POST")[1]
    assert set(clear["task_ids"]) == {t for t in task_ids if t.startswith("UKDF_RAL.")}
    assert "tracts [3] of FRDF now run at UKDF_RAL" in capsys.readouterr().out


def test_a_task_the_scheduler_skips_again_just_after_the_clear_is_cleared_again_before_the_down_site_is_skipped(
    campaign, task_ids, airflow, ledger, capsys
):
    """A scheduler loop that read UKDF_RAL's tasks before the clear writes its skip after it: left
    so, its fan-in would let the global step skip once FRDF's are. The failover clears it again."""
    states = {t: "skipped" for t in task_ids if t.startswith("UKDF_RAL.")} | {"FRDF.check_software": "queued"}
    fake = airflow(campaign, rows_of(task_ids, states))
    fake.conf = {"sites": ["FRDF", "UKDF_RAL"], "tracts": [3]}
    fake.reskip = {"UKDF_RAL.gather_for_step2c.verify"}
    assert main(["failover", KEY, "--from", "FRDF", "--to", "UKDF_RAL"]) == 0
    clears = [body for _, body in _writes_of(fake, "POST") if not body["dry_run"]]
    assert [c["task_ids"] for c in clears[1:]] == [["UKDF_RAL.gather_for_step2c.verify"]]
    first_patch = next(i for i, (m, _, _) in enumerate(fake.writes) if m == "PATCH")
    last_clear = max(i for i, (m, _, b) in enumerate(fake.writes) if m == "POST" and not b["dry_run"])
    assert last_clear < first_patch, "FRDF's tasks are skipped only once UKDF_RAL's stay cleared"
