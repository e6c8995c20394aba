"""A small client for Airflow's REST API (v2): trigger a campaign, follow it, retry failures.

Used by `drp-campaign run` and the operator commands (status, retry, cancel, approve, reject), the
demo, the benchmark and the end-to-end tests, so all of them drive Airflow exactly as an
operator's script would, as a logged-in Airflow user.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import string
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from .errors import DrpError

TERMINAL_RUN_STATES = {"success", "failed"}
# Task states `follow` reports as each task reaches them.
AWAITING_INPUT = "awaiting_input"  # a human-in-the-loop task (a review gate) waiting for a decision
REPORTED_STATES = frozenset(
    {"success", "failed", "skipped", "upstream_failed", "up_for_retry", "deferred", AWAITING_INPUT}
)
# How long a gate must have been waiting before a script may answer it, how often an approval
# Airflow lost is given again, and how the lost one shows in the gate's log (AirflowClient.decide).
GATE_SETTLE_S = 5.0
GATE_ATTEMPTS = 3
LOST_RESUME = "Server indicated the task shouldn't be running anymore"
STATE_MISMATCH = "state mismatch"  # the scheduler's audit-log event when it fails a task so
PAGE_SIZE = 100  # Airflow's default maximum_page_limit: a larger limit is cut to it


class AirflowApiError(DrpError):
    """Airflow's REST API refused or failed a call; the message has the URL and the answer.

    STATUS is the HTTP status (403: the user's role may not do this), DETAIL the answer's
    `detail` (FastAPI's error field) when it has one: callers turn them into what to do."""

    def __init__(self, message: str, status: int | None = None, detail: str | None = None):
        super().__init__(message)
        self.status = status
        self.detail = detail


def _detail(resp: requests.Response) -> str | None:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        return None
    return detail if isinstance(detail, str) or detail is None else json.dumps(detail)


def default_base_url() -> str:
    return os.environ.get("AIRFLOW__API__BASE_URL") or f"http://127.0.0.1:{os.environ.get('DRP_AIRFLOW_PORT', '8090')}"


def password_file() -> Path:
    """Where the simple auth manager keeps its users' passwords: `[core] simple_auth_manager_passwords_file`,
    else `$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated` (0600, written by ensure_passwords)."""
    configured = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    if configured:
        return Path(configured)
    home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()
    return home / "simple_auth_manager_passwords.json.generated"


# Who the scripts (drp-campaign run, the demo, the benchmarks, the tests) act as: an operator may
# trigger, follow, clear and mark, which is all they do; admin's Connections are not needed.
DEFAULT_USER = "operator"


def default_password(username: str = DEFAULT_USER) -> str:
    """The local password of USERNAME (admin, operator, viewer: scripts/env.sh sets the users and roles)."""
    if not password_file().is_file():
        raise AirflowApiError(
            f"no password for Airflow user {username!r}: {password_file()} (the local simple auth manager's "
            "password file) does not exist"
        )
    passwords = json.loads(password_file().read_text())
    if username not in passwords:
        raise AirflowApiError(
            f"no password for Airflow user {username!r} in {password_file()} (users there: "
            f"{', '.join(sorted(passwords))}); add it to AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS "
            "and restart: scripts/airflow-services.sh start"
        )
    return passwords[username]


def ensure_passwords(users: str, path: Path | None = None) -> list[str]:
    """Give each user of USERS (`name:role,...`, the simple auth manager's `[core] simple_auth_manager_users`)
    without a password in PATH (default password_file()) a generated one; the file is this OS user's only
    (0600, its directory 0700), whether or not anything was added. Returns the names added. Airflow would
    generate missing ones itself at start, but into a file made with the umask's permissions."""
    from .settings import private_file

    path = path or password_file()
    passwords = json.loads(path.read_text() or "{}") if path.is_file() else {}
    added = [name for name in (u.split(":")[0].strip() for u in users.split(",")) if name and name not in passwords]
    alphabet = string.ascii_letters + string.digits
    passwords.update({name: "".join(secrets.choice(alphabet) for _ in range(16)) for name in added})
    private_file(path, json.dumps(passwords) + "\n")
    return added


@dataclass
class TaskState:
    task_id: str
    map_index: int
    state: str | None
    rendered_map_index: str | None
    try_number: int
    duration: float | None
    hostname: str | None = None  # the worker that ran it (`<host>-<site queue>`: drp_campaign.workers)
    queue: str | None = None
    executor: str | None = None  # None: the deployment's default executor

    @classmethod
    def from_api(cls, t: dict) -> TaskState:
        """From one entry of the API's `task_instances` (a listing, or what a clear cleared)."""
        return cls(
            t["task_id"],
            t["map_index"],
            t["state"],
            t.get("rendered_map_index"),
            t.get("try_number", 0),
            t.get("duration"),
            t.get("hostname") or None,
            t.get("queue"),
            t.get("executor"),
        )

    @property
    def label(self) -> str:
        if self.map_index < 0:
            return self.task_id
        return f"{self.task_id}[{self.rendered_map_index or self.map_index}]"


class AirflowClient:
    def __init__(self, base_url: str | None = None, username: str = DEFAULT_USER, password: str | None = None):
        self.base_url = (base_url or default_base_url()).rstrip("/")
        self.username = username
        self.session = requests.Session()
        login = {"username": username, "password": password or default_password(username)}
        token = self._post("/auth/token", login, auth=False)
        self.session.headers["Authorization"] = f"Bearer {token['access_token']}"

    @classmethod
    def with_token(cls, token: str, username: str, base_url: str | None = None) -> AirflowClient:
        """A client acting with a token the user already holds (the campaign view's, from their
        login): Airflow checks that user's permissions on every call, as for the CLI."""
        client = cls.__new__(cls)
        client.base_url = (base_url or default_base_url()).rstrip("/")
        client.username = username
        client.session = requests.Session()
        client.session.headers["Authorization"] = f"Bearer {token}"
        return client

    # -- plumbing ---------------------------------------------------------------------------
    def _check(self, resp: requests.Response) -> dict:
        where = f"{resp.request.method} {resp.url}"
        if resp.status_code >= 400:
            raise AirflowApiError(
                f"{where}: HTTP {resp.status_code}: {resp.text[:500]}", status=resp.status_code, detail=_detail(resp)
            )
        try:
            return resp.json() if resp.content else {}
        except ValueError:  # e.g. the UI's HTML page for a path no API serves
            raise AirflowApiError(
                f"{where}: HTTP {resp.status_code} but not JSON: {resp.text[:100]!r}", status=resp.status_code
            ) from None

    def _get(self, path: str, **params) -> dict:
        return self._check(self.session.get(self.base_url + path, params=params, timeout=30))

    def _get_all(self, path: str, field: str, **params) -> list[dict]:
        """Every entry of a listing: Airflow returns at most `[api] maximum_page_limit` (100) per
        page whatever `limit` asks for, so read pages until `total_entries` are in."""
        entries: list[dict] = []
        while True:
            page = self._get(path, **params, limit=PAGE_SIZE, offset=len(entries))
            entries += page.get(field, [])
            if not page.get(field) or len(entries) >= page.get("total_entries", 0):
                return entries

    def _post(self, path: str, body: dict, auth: bool = True) -> dict:
        sender = self.session if auth else requests
        return self._check(sender.post(self.base_url + path, json=body, timeout=30))

    def _patch(self, path: str, body: dict) -> dict:
        return self._check(self.session.patch(self.base_url + path, json=body, timeout=30))

    @staticmethod
    def _q(value: str) -> str:  # run ids hold ':' and '+'
        return urllib.parse.quote(value, safe="")

    # -- DAGs and runs ----------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout_s: float = 120) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._get(f"/api/v2/dags/{dag_id}")
            except AirflowApiError:
                errors = self._get_all("/api/v2/importErrors", "import_errors")
                if errors:
                    raise AirflowApiError(f"DAG files failed to import: {errors}") from None
                if time.monotonic() > deadline:
                    raise AirflowApiError(f"DAG {dag_id} not parsed after {timeout_s:.0f} s; see the dag-processor log")
                time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self._patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        run = self._post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self._get(f"/api/v2/dags/{dag_id}/dagRuns/{self._q(run_id)}")

    def task_states(self, dag_id: str, run_id: str) -> list[TaskState]:
        listing = self._get_all(f"/api/v2/dags/{dag_id}/dagRuns/{self._q(run_id)}/taskInstances", "task_instances")
        return [TaskState.from_api(t) for t in listing]

    def cancel_run(self, dag_id: str, run_id: str) -> dict:
        """Set the run to failed, as the UI's "Mark run as failed" does: Airflow fails its running
        tasks, whose operators' on_kill cancel what they started (their BPS runs), and skips the rest."""
        return self._patch(f"/api/v2/dags/{dag_id}/dagRuns/{self._q(run_id)}", {"state": "failed"})

    def campaign_status(self, run: str, dag_id: str | None = None) -> dict:
        """The campaign view's status of RUN (Airflow run id or run key): the site x step matrix,
        failed tasks, ledger verdict, site QA and reviews (`GET /drp/api/status`, behind the same
        login as the REST API). An unknown run, or a server without the view, is an AirflowApiError
        that says which."""
        url = f"{self.base_url}/drp/api/status"
        params = {"run_id": run, **({"dag_id": dag_id} if dag_id else {})}
        try:
            status = self._get("/drp/api/status", **params)
        except AirflowApiError as exc:
            if exc.status == 404 and exc.detail and exc.detail != "Not Found":
                raise AirflowApiError(f"no campaign run {run!r}: {exc.detail}", status=404, detail=exc.detail) from None
            if exc.status not in (404, 200):
                raise
            status = None
        if not isinstance(status, dict) or "sites" not in status:
            raise AirflowApiError(
                f"the campaign view's API does not answer at {url}: is the drp_campaign plugin "
                "(plugins/campaign_view.py) loaded by the api-server? (`airflow plugins` lists it)"
            )
        return status

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
        """The text of every try of one task instance, oldest first."""
        ti = self._get(f"/api/v2/dags/{dag_id}/dagRuns/{self._q(run_id)}/taskInstances/{task_id}/{map_index}")
        text = []
        for attempt in range(1, ti["try_number"] + 1):
            raw = self._get(
                f"/api/v2/dags/{dag_id}/dagRuns/{self._q(run_id)}/taskInstances/{task_id}/logs/{attempt}",
                map_index=map_index,
                full_content="true",
            )
            content = raw.get("content", [])
            text += [e.get("event", "") if isinstance(e, dict) else str(e) for e in content]
        return "\n".join(text)

    def decide(self, dag_id: str, run_id: str, task_id: str, approve: bool = True) -> dict:
        """Answer a review gate (a human-in-the-loop task awaiting input) as this client's user;
        an approval returns once the gate has gone on.

        Airflow 3.3's scheduler fails a gate resumed before it has processed the exit of the
        process that parked it ("state changed externally"; CI saw it with answers 0.3 s and 5 s
        after the gate asked, on a loaded machine). So a script answers only once the gate has been
        asking for GATE_SETTLE_S, and if Airflow still loses an approval that way (the gate failed,
        its log saying the server stopped it) the gate and what it held are cleared, it asks again
        and is approved again, up to GATE_ATTEMPTS times. Lost shows as a new "state mismatch" in
        the task's audit log (or its log saying the server stopped it)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{self._q(run_id)}/taskInstances/{task_id}/-1/hitlDetails"
        body = {"chosen_options": ["Approve" if approve else "Reject"], "params_input": {}}
        for _ in range(GATE_ATTEMPTS):
            asked = dt.datetime.fromisoformat(self._get(path)["created_at"])
            waited = (dt.datetime.now(dt.UTC) - asked).total_seconds()
            time.sleep(min(GATE_SETTLE_S, max(0.0, GATE_SETTLE_S - waited)))
            mismatches = self._state_mismatches(dag_id, run_id, task_id)
            answer = self._patch(path, body)
            if not approve or self._gate_outcome(dag_id, run_id, task_id) != "failed":
                return answer
            lost = self._state_mismatches(dag_id, run_id, task_id) > mismatches or LOST_RESUME in self.task_log(
                dag_id, run_id, task_id
            )
            if not lost:
                return answer  # failed for a reason of its own: the caller's run shows it
            self.clear(dag_id, run_id, [task_id], only_failed=True, include_downstream=True)
            self._wait_for_gate(dag_id, run_id, task_id, {AWAITING_INPUT})
        raise AirflowApiError(
            f"{task_id} of run {run_id}: Airflow lost the approval {GATE_ATTEMPTS} times; see its log"
        )

    def _state_mismatches(self, dag_id: str, run_id: str, task_id: str) -> int:
        """How many times the scheduler failed this task for a "state mismatch" (its audit log)."""
        try:
            events = self._get("/api/v2/eventLogs", dag_id=dag_id, run_id=run_id, task_id=task_id, event=STATE_MISMATCH)
        except AirflowApiError:  # a user who may not read the audit log: the task's log still tells
            return 0
        return int(events.get("total_entries", 0))

    def _gate_outcome(self, dag_id: str, run_id: str, task_id: str) -> str:
        """The gate's state once it has left waiting and running after an answer."""
        return self._wait_for_gate(dag_id, run_id, task_id, {"success", "failed", "skipped", "upstream_failed"})

    def _wait_for_gate(self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout_s: float = 300) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            state = next((t.state for t in self.task_states(dag_id, run_id) if t.task_id == task_id), None)
            if state in states:
                return state
            if time.monotonic() > deadline:
                raise AirflowApiError(f"{task_id} of run {run_id} still {state} after {timeout_s:.0f} s")
            time.sleep(1)

    def clear(
        self,
        dag_id: str,
        run_id: str,
        task_ids: list[str] | None = None,
        only_failed: bool = True,
        include_downstream: bool = False,
        dry_run: bool = False,
    ) -> list[TaskState]:
        """Clear task instances of one run so they run again, as the UI's Clear does; a finished
        run is queued again. TASK_IDS: these tasks (every map index of a mapped one), else all;
        ONLY_FAILED: only their failed and upstream-failed instances; INCLUDE_DOWNSTREAM: also
        their downstream tasks (in those states, with ONLY_FAILED). Returns what was cleared (DRY_RUN:
        what would be, with nothing changed; Airflow still checks the user may clear)."""
        body = {
            "dry_run": dry_run,
            "dag_run_id": run_id,
            "only_failed": only_failed,
            "include_downstream": include_downstream,
            "reset_dag_runs": True,
            **({"task_ids": task_ids} if task_ids is not None else {}),
        }
        cleared = self._post(f"/api/v2/dags/{dag_id}/clearTaskInstances", body)
        return [TaskState.from_api(t) for t in cleared.get("task_instances", [])]

    def clear_failed(self, dag_id: str, run_id: str) -> list[str]:
        """Clear the run's failed (and upstream-failed) tasks so they run again: a retry."""
        return [t.task_id for t in self.clear(dag_id, run_id)]

    def clear_tasks(self, dag_id: str, run_id: str, task_ids: list[str]) -> list[str]:
        """Clear these tasks (whatever their state) so they run again, as the UI's Clear does."""
        return [t.task_id for t in self.clear(dag_id, run_id, task_ids, only_failed=False)]

    def mark_task(
        self, dag_id: str, run_id: str, task_id: str, state: str, map_index: int = -1, note: str | None = None
    ) -> None:
        """Set one task instance's state, as the UI's "Mark as failed/success" does, with NOTE (shown
        on the task instance in the UI) saying why."""
        self._patch(
            f"/api/v2/dags/{dag_id}/dagRuns/{self._q(run_id)}/taskInstances/{task_id}/{map_index}",
            {"new_state": state, **({"note": note} if note else {})},
        )

    def follow(
        self,
        dag_id: str,
        run_id: str,
        timeout_s: float = 1800,
        poll_s: float = 3,
        on_progress: Callable[[str], None] | None = print,
        on_awaiting_input: Callable[[TaskState], None] | None = None,
    ) -> str:
        """Poll until the run ends; report each task that finishes, and hand each task that starts
        waiting for a human decision (a review gate) to ON_AWAITING_INPUT. Returns the run's final state."""
        deadline = time.monotonic() + timeout_s
        seen: dict[tuple[str, int], str | None] = {}
        while True:
            states = self.task_states(dag_id, run_id)
            for t in states:
                key = (t.task_id, t.map_index)
                if seen.get(key) != t.state and t.state in REPORTED_STATES:
                    if on_progress:
                        on_progress(f"  {t.label:<40} {t.state}")
                    if t.state == AWAITING_INPUT and on_awaiting_input:
                        on_awaiting_input(t)
                seen[key] = t.state
            run_state = self.dag_run(dag_id, run_id)["state"]
            if run_state in TERMINAL_RUN_STATES:
                if on_progress:
                    counts = Counter(t.state for t in states)
                    on_progress(f"run {run_id}: {run_state} ({dict(counts)})")
                return run_state
            if time.monotonic() > deadline:
                raise AirflowApiError(f"run {run_id} of {dag_id} still {run_state} after {timeout_s:.0f} s")
            time.sleep(poll_s)
