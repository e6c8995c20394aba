"""Operate one campaign run from the command line: status, retry, cancel, approve, reject.

Everything goes through Airflow's REST API as the operator's own Airflow user (`--user`; its
password from $DRP_AIRFLOW_PASSWORD, else the local simple auth manager's file), so Airflow's auth
decides what each may do, as in the UI: a viewer reads the status and is refused a retry, a cancel
or a decision, with an error that names them. The run, its sites, its columns (steps, hops,
gates) and each cell's state come from the campaign view's status API (`GET /drp/api/status`, the
matrix the view shows), so RUN may be the Airflow run id or the ledger's run key and no campaign
file is needed. Each command checks its input against that status first and changes nothing when
the input is wrong.

Each is a `Command` (command.py) for the table in cli.py; the HTTP client is imported lazily so
`drp-campaign validate` stays light.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from drp_campaign.command import EXIT_OK, Command
from drp_campaign.errors import DrpError

if TYPE_CHECKING:
    from drp_campaign.airflow_client import AirflowClient, TaskState

EXIT_FAILED = 1
GATE_PREFIX = "review_"  # a gate's column (and task) is review_<step>, at the hub
RETRIED_STATES = ("failed", "upstream_failed")
T = TypeVar("T")

# A matrix cell's word for its state (live_status.cell_state's one word); `n/N` follows when the
# cell holds several task instances (a step's groups, a hop's five tasks): for FAIL n of N failed,
# for the others n of N are done.
CELL_WORDS = {
    "success": "ok",
    "failed": "FAIL",
    "upstream_failed": "upfail",
    "up_for_retry": "retry",
    "awaiting_input": "ASK",
    "running": "run",
    "restarting": "run",
    "queued": "queue",
    "scheduled": "queue",
    "deferred": "wait",
    "up_for_reschedule": "wait",
    "skipped": "skip",
    "removed": "gone",
    "none": "-",
}
WHOLE_WORDS = {"success", "skipped", "none", "awaiting_input", "upstream_failed", "removed"}  # no n/N


# --- arguments and the connection ----------------------------------------------------------------


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_id",  # not `run`: that is the command's function
        metavar="RUN",
        help="the Airflow run id (as in the UI, e.g. manual__2026-11-30T16:05:27.302615+00:00) or the ledger's run key",
    )
    parser.add_argument(
        "--dag", default=None, metavar="DAG_ID", help="the campaign's DAG (default: the one the run belongs to)"
    )
    parser.add_argument(
        "--user",
        default=None,
        help="the Airflow user acting (default: $DRP_AIRFLOW_USER or operator); its password: "
        "$DRP_AIRFLOW_PASSWORD, else the local simple auth manager's password file",
    )
    parser.add_argument(
        "--url",
        default=None,
        help="Airflow's address (default: $AIRFLOW__API__BASE_URL or http://127.0.0.1:$DRP_AIRFLOW_PORT)",
    )


def _url(args: argparse.Namespace) -> str:
    from drp_campaign.airflow_client import default_base_url

    return (args.url or default_base_url()).rstrip("/")


def connect(args: argparse.Namespace) -> AirflowClient:
    """Log in to Airflow as the user of ARGS; a refused login is an error naming the user."""
    from drp_campaign.airflow_client import DEFAULT_USER, AirflowApiError, AirflowClient, default_password

    user = args.user or os.environ.get("DRP_AIRFLOW_USER") or DEFAULT_USER
    password = os.environ.get("DRP_AIRFLOW_PASSWORD")
    try:
        password = password or default_password(user)
    except AirflowApiError as exc:
        raise DrpError(f"{exc}; set $DRP_AIRFLOW_PASSWORD to the password of {user!r}") from None
    try:
        return AirflowClient(_url(args), username=user, password=password)
    except AirflowApiError as exc:
        if exc.status in (401, 403):
            raise DrpError(
                f"Airflow at {_url(args)} refused the login of user {user!r} (HTTP {exc.status}: {exc.detail}); "
                "check --user and its password ($DRP_AIRFLOW_PASSWORD)"
            ) from None
        raise


def _reaching_airflow(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run COMMAND; an Airflow that does not answer is an error naming its address, not a traceback."""

    @functools.wraps(command)
    def guarded(args: argparse.Namespace) -> int:
        import requests

        try:
            return command(args)
        except requests.RequestException as exc:
            raise DrpError(f"cannot reach Airflow at {_url(args)}: {exc}") from None

    return guarded


def as_user(client: AirflowClient, what: str, change: Callable[[], T]) -> T:
    """Make one change in Airflow; Airflow refusing this user (HTTP 403: a viewer) is an error
    that names the user and the change, not a traceback."""
    from drp_campaign.airflow_client import AirflowApiError

    try:
        return change()
    except AirflowApiError as exc:
        if exc.status == 403:
            raise DrpError(
                f"Airflow refused user {client.username!r} to {what} (HTTP 403: {exc.detail or 'forbidden'}): "
                "that user's role may read runs but not change them; an operator or admin may (--user)"
            ) from None
        raise


def _sites(status: dict) -> list[str]:
    """The run's sites, the hub first (as the status lists them)."""
    return [row["site"] for row in status["sites"]]


def _run_name(status: dict) -> str:
    return f"run {status['run_id']} of {status['dag_id']}"


# --- status --------------------------------------------------------------------------------------


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    _run_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the campaign view's status JSON")


@_reaching_airflow
def status(args: argparse.Namespace) -> int:
    """Print the run's state, its sites and the site x step matrix; exit 1 when the run failed."""
    client = connect(args)
    run = client.campaign_status(args.run_id, args.dag)
    if args.json:
        print(json.dumps(run, indent=1))
    else:
        print(format_status(run, client.base_url, shutil.get_terminal_size((120, 24)).columns))
    return EXIT_FAILED if run["state"] == "failed" else EXIT_OK


def cell_word(cell: dict) -> str:
    """One short word for a cell, with how many of its task instances failed or are done."""
    counts: dict[str, int] = cell.get("counts", {})
    total = sum(counts.values())
    state = cell.get("state") or "none"
    word = CELL_WORDS.get(state, state)
    if total < 2 or state in WHOLE_WORDS:
        return word
    if state == "failed":
        return f"{word} {counts.get('failed', 0)}/{total}"
    return f"{word} {counts.get('success', 0) + counts.get('skipped', 0)}/{total}"


def format_matrix(run: dict, width: int = 120) -> list[str]:
    """Site rows x columns in data-path order, one word per cell (`.`: no such task at the site),
    wrapped into blocks of columns that fit WIDTH, each block with the site names again."""
    sites = _sites(run)
    words = {(row["site"], col): cell_word(cell) for row in run["sites"] for col, cell in row["cells"].items()}
    cols = [c for c in run["columns"] if any((s, c) in words for s in sites)]
    label = max(len(s) for s in sites) + 2
    col_width = {c: max(len(c), *(len(words.get((s, c), "")) for s in sites)) + 2 for c in cols}
    blocks: list[list[str]] = [[]]
    used = label + 2
    for c in cols:
        if blocks[-1] and used + col_width[c] > width:
            blocks.append([])
            used = label + 2
        blocks[-1].append(c)
        used += col_width[c]
    lines = []
    for block in blocks:
        lines.append(("  " + " " * label + "".join(c.ljust(col_width[c]) for c in block)).rstrip())
        for s in sites:
            cells = "".join(words.get((s, c), ".").ljust(col_width[c]) for c in block)
            lines.append(f"  {s:<{label}}{cells}".rstrip())
    return lines


def _duration(seconds: float) -> str:
    s = round(seconds)
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def format_status(run: dict, base_url: str, width: int = 120) -> str:
    """The run as an operator reads it in a terminal: what the campaign view shows, in text."""
    label = max(len(s) for s in _sites(run))
    lines = [
        f"Campaign {run['campaign']}  {_run_name(run)}  (run key {run.get('run_key') or '-'})",
        f"State: {run['state']}  started {run.get('started') or '-'}  ended {run.get('ended') or '-'}",
        f"Grid: {base_url}{run['links']['grid']}",
        "",
        "Sites (state, elapsed, ETA from earlier runs (?: none to go by), storage held of quota):",
    ]
    for row in run["sites"]:
        eta = "?" if row.get("eta_s") is None else _duration(row["eta_s"])
        held = row["storage"]
        lines.append(
            f"  {row['site']:<{label}}  {row['state']:<16} elapsed {_duration(row.get('elapsed_s') or 0):>7}  "
            f"ETA {eta:>7}  storage {_size(held['bytes'])} of {_size(held['quota_bytes'])} ({held['fraction']:.1%})"
        )
    lines += [
        "",
        "Matrix (ok; FAIL n/N: n of N tasks failed; run, queue, wait, retry n/N: n of N done; ASK: a gate",
        "awaits a decision; upfail: an upstream task failed; -: not started; .: no such task at the site):",
        *format_matrix(run, width),
    ]
    failed = [
        (row["site"], col, f) for row in run["sites"] for col, cell in row["cells"].items() for f in cell["failed"]
    ]
    if failed:
        lines += ["", "Failed tasks (their logs):"]
        for _, _, f in failed:
            group = f.get("group") or f["map_index"]  # the group's label when Airflow rendered one
            name = f["task_id"] + (f"[{group}]" if f["map_index"] >= 0 else "")
            lines.append(f"  {name:<40} {base_url}{f['link']}")
    problems = [
        (row["site"], col, p)
        for row in run["sites"]
        for col, cell in row["cells"].items()
        for p in (cell.get("hop") or {}).get("problems", [])
    ]
    if problems:
        lines += ["", "Hop problems (ledger):", *(f"  {site} {col}: {p}" for site, col, p in problems)]
    ledger = {
        True: "BALANCED: every dataset sent arrived intact",
        False: f"UNBALANCED: see drp-campaign ledger {run.get('run_key') or run['run_id']}",
    }
    lines += [
        "",
        "Ledger: " + ledger.get(run.get("ledger_balanced"), "no ledger report yet"),
        f"Site QA: {run.get('site_qa') or 'not run yet'}",
        "Reviews: " + ("none yet" if not run.get("reviews") else ""),
        *(f"  {r['step']:<12} {r['decision']:<9} by {r['by']}  {r['at']}" for r in run.get("reviews", [])),
        "Task states: " + ", ".join(f"{s} {n}" for s, n in sorted(run.get("task_states", {}).items())),
    ]
    return "\n".join(line.rstrip() for line in lines)


# --- retry ---------------------------------------------------------------------------------------


def _retry_arguments(parser: argparse.ArgumentParser) -> None:
    _run_arguments(parser)
    parser.add_argument("--site", default=None, help="only this site's tasks (e.g. FRDF)")
    parser.add_argument(
        "--step", default=None, help="only this column's tasks: a step, hop or gate (e.g. step2b, gather_for_step2c)"
    )


def retry_selection(run: dict, tasks: list[TaskState], site: str | None, step: str | None) -> list[TaskState]:
    """The run's failed and upstream-failed task instances at SITE in STEP (each when given),
    placed in the matrix as the view places them (`FRDF.gather_for_step2c.verify` is FRDF's
    gather_for_step2c; a task outside every site, the report, is the hub's). Refuses a site or
    step the run does not have, and a selection with nothing failed in it (its upstream-failed
    tasks alone would only fail again)."""
    from drp_campaign.live_status import locate

    sites = _sites(run)
    if site is not None and site not in sites:
        raise DrpError(f"site {site!r} is not in {_run_name(run)}: its sites are {', '.join(sites)}")
    if step is not None and step not in run["columns"]:
        raise DrpError(
            f"step {step!r} is not in {_run_name(run)}: its steps, hops and gates are {', '.join(run['columns'])}"
        )

    def selected(t: TaskState) -> bool:
        row, col = locate(t.task_id, sites[0])
        return (site is None or row == site) and (step is None or col == step)

    chosen = [t for t in tasks if t.state in RETRIED_STATES and selected(t)]
    if not any(t.state == "failed" for t in chosen):
        failed = [t.label for t in tasks if t.state == "failed"]
        if not failed:
            raise DrpError(f"nothing failed in {_run_name(run)}: nothing to retry, nothing changed")
        where = " ".join(w for w in (f"at {site}" if site else "", f"in {step}" if step else "") if w)
        raise DrpError(f"nothing failed {where} in {_run_name(run)}, nothing changed; what failed: {', '.join(failed)}")
    return chosen


@_reaching_airflow
def retry(args: argparse.Namespace) -> int:
    """Clear the run's failed tasks (at --site, in --step) and what failed because of them, so
    Airflow runs them again; print what was cleared."""
    from drp_campaign.live_status import locate

    client = connect(args)
    run = client.campaign_status(args.run_id, args.dag)
    tasks = client.task_states(run["dag_id"], run["run_id"])
    chosen = retry_selection(run, tasks, args.site, args.step)
    task_ids = sorted({t.task_id for t in chosen})
    cleared = as_user(
        client,
        f"clear failed tasks of {_run_name(run)}",
        lambda: client.clear(run["dag_id"], run["run_id"], task_ids, only_failed=True, include_downstream=True),
    )
    was = {(t.task_id, t.map_index): t.state for t in tasks}
    sites, cols = _sites(run), run["columns"]

    def order(t: TaskState) -> tuple:
        row, col = locate(t.task_id, sites[0])
        return (
            cols.index(col) if col in cols else len(cols),
            sites.index(row) if row in sites else len(sites),
            t.label,
        )

    print(f"cleared {len(cleared)} task instances of {_run_name(run)} as {client.username}; Airflow runs them again:")
    for t in sorted(cleared, key=order):
        print(f"  {t.label:<45} was {was.get((t.task_id, t.map_index)) or 'not run'}")
    return EXIT_OK


# --- cancel --------------------------------------------------------------------------------------


@_reaching_airflow
def cancel(args: argparse.Namespace) -> int:
    """Set the run to failed: Airflow fails its running tasks (their on_kill cancels their BPS
    runs) and skips what has not started. A run that has ended is left alone."""
    from drp_campaign.airflow_client import TERMINAL_RUN_STATES
    from drp_campaign.live_status import ACTIVE

    client = connect(args)
    run = client.campaign_status(args.run_id, args.dag)
    if run["state"] in TERMINAL_RUN_STATES:
        raise DrpError(f"{_run_name(run)} has already ended ({run['state']}): nothing to cancel, nothing changed")
    stopping = [t for t in client.task_states(run["dag_id"], run["run_id"]) if t.state in (*ACTIVE, "awaiting_input")]
    as_user(client, f"cancel {_run_name(run)}", lambda: client.cancel_run(run["dag_id"], run["run_id"]))
    print(
        f"{_run_name(run)}: set to failed by {client.username}; Airflow stops its {len(stopping)} active tasks "
        "(a step's on_kill cancels its BPS run) and skips those not started:"
    )
    for t in stopping:
        print(f"  {t.label:<45} was {t.state}")
    return EXIT_OK


# --- approve / reject ----------------------------------------------------------------------------


def _gate_arguments(parser: argparse.ArgumentParser) -> None:
    _run_arguments(parser)
    parser.add_argument("step", metavar="STEP", help="the gated step (e.g. step2c): its gate is <hub>.review_<STEP>")


def gate_awaiting(run: dict, step: str) -> str:
    """The task id of STEP's review gate in RUN, if it awaits a decision; else an error that
    lists the run's gates, or gives the gate's state (and any decision already taken)."""
    column = GATE_PREFIX + step
    rows = [row for row in run["sites"] if column in row["cells"]]
    if not rows:
        gates = [c.removeprefix(GATE_PREFIX) for c in run["columns"] if c.startswith(GATE_PREFIX)]
        raise DrpError(
            f"step {step!r} has no review gate in {_run_name(run)} (its gated steps: {', '.join(gates) or 'none'})"
        )
    task_id = f"{rows[0]['site']}.{column}"
    state = rows[0]["cells"][column]["state"]
    if state != "awaiting_input":
        decided = [f"{r['decision']} by {r['by']} at {r['at']}" for r in run.get("reviews", []) if r["step"] == step]
        raise DrpError(
            f"{task_id} of {_run_name(run)} is not awaiting a decision: it is {state}"
            + (f" ({'; '.join(decided)})" if decided else "")
            + "; nothing changed"
        )
    return task_id


def _decide(args: argparse.Namespace, approve: bool) -> int:
    client = connect(args)
    run = client.campaign_status(args.run_id, args.dag)
    task_id = gate_awaiting(run, args.step)
    verb = "approve" if approve else "reject"
    as_user(
        client,
        f"{verb} {task_id} of {_run_name(run)}",
        lambda: client.decide(run["dag_id"], run["run_id"], task_id, approve=approve),
    )
    gate = GATE_PREFIX + args.step
    follows = (
        f"{args.step} runs"
        if approve
        else f"{args.step} and what follows do not run (to ask again: drp-campaign retry RUN --step {gate})"
    )
    print(f"{task_id} of {_run_name(run)}: {verb}d by {client.username}; {follows}")
    return EXIT_OK


@_reaching_airflow
def approve(args: argparse.Namespace) -> int:
    """Approve a review gate that awaits a decision: the gated step runs."""
    return _decide(args, approve=True)


@_reaching_airflow
def reject(args: argparse.Namespace) -> int:
    """Reject a review gate that awaits a decision: the gated step and what follows do not run."""
    return _decide(args, approve=False)


COMMANDS = [
    Command(
        "status",
        "a run's state, per site and step, failed tasks, ledger, site QA, reviews; exit 1 if the run failed",
        _status_arguments,
        status,
    ),
    Command(
        "retry",
        "clear a run's failed tasks (at --site, in --step) and what failed because of them, so they run again",
        _retry_arguments,
        retry,
    ),
    Command(
        "cancel", "stop a running campaign run: set it to failed (its BPS runs are cancelled)", _run_arguments, cancel
    ),
    Command("approve", "approve a run's review gate for STEP (the step runs)", _gate_arguments, approve),
    Command(
        "reject", "reject a run's review gate for STEP (the step and what follows do not run)", _gate_arguments, reject
    ),
]
