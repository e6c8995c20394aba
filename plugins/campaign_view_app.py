"""The campaign view's FastAPI app (the plugin, `campaign_view.py`, mounts it under /drp).

Per run, a live site x step matrix from Airflow's own task instances (counted per cell by state),
merged with the ledger (quanta, bytes, rules, QA, reviews), elapsed time and ETA per site, the
campaign's storage at each site; then the ledger's report (steps, hops with Rucio's live rule
states, products at tape and IDACs, releases, reviews, site QA). A runs list gives each campaign
run with its verdict. Pages refresh themselves while a run is in flight; the same data is JSON
under /drp/api/, described by /drp/api/openapi.json.

Airflow mounts a plugin's app without its own auth, so this app applies it itself, with the very
dependency Airflow's public API uses (`airflow.api_fastapi.core_api.security.get_user`): a JWT
from `Authorization: Bearer` (`POST /auth/token`) or the UI's session cookie `_token`, checked by
the configured auth manager (signature, expiry, revocation). Anonymous callers get 401, a bad
token 403, on every route (the OpenAPI schema included; no docs pages). A run is shown to whoever
may read the runs of its campaign's DAG, as `GET /api/v2/dags/{dag_id}/dagRuns` asks the auth
manager (`is_authorized_dag(GET, DagAccessEntity.RUN)`); the list shows only those.
"""

from __future__ import annotations

import functools
import html
import json
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, get_user
from airflow.configuration import conf
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from drp_campaign.config import CampaignConfig, campaign_dag_id, campaign_of_dag
from drp_campaign.plugins import airflow_records as records

# Every route needs a logged-in user; nothing is served anonymously (the schema is a route below).
app = FastAPI(
    title="DRP campaign view",
    description="Live status of multisite DRP campaign runs: Airflow task states merged with the campaign ledger.",
    dependencies=[Depends(get_user)],
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)

TERMINAL = ("success", "failed")
REFRESH_S = 15
NOT_YET = "not yet"  # a task with no state: its upstream has not finished
GROUP_ROWS = 200  # the ledger's per-group table lists at most this many groups
_STYLE = """<style>body{font-family:sans-serif;margin:1.5em;font-size:14px}
table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.bad{color:#b00020;font-weight:bold}.ok{color:#137333;font-weight:bold}.note{color:#555}
table.matrix td,table.matrix th{font-size:12px;padding:2px 4px;min-width:4.5em}
table.matrix th.col{writing-mode:vertical-rl;transform:rotate(180deg);vertical-align:bottom;min-width:0}
td.s-success{background:#c8e6c9}td.s-failed{background:#ef9a9a}td.s-upstream_failed{background:#ffccbc}
td.s-up_for_retry{background:#ffe082}td.s-awaiting_input{background:#ffb74d}td.s-skipped{background:#eeeeee}
td.s-running,td.s-queued,td.s-scheduled,td.s-deferred,td.s-restarting,td.s-up_for_reschedule{background:#bbdefb}
td.s-none{background:#fff}td.s-not{background:#eeeeee;color:#777}td a{color:inherit;text-decoration:none;display:block}
span.badge{padding:1px 6px;border-radius:3px}</style>"""


def may_read_dag(user: BaseUser, dag_id: str) -> bool:
    """Whether USER may read the runs of DAG_ID: the question Airflow's own
    `requires_access_dag("GET", DagAccessEntity.RUN)` asks, of whichever auth manager is set up."""
    team = None
    if conf.getboolean("core", "multi_team"):
        from airflow.models.dag import DagModel

        team = DagModel.get_team_name(dag_id)
    return get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id, team_name=team), user=user
    )


def may_read_runs(user: BaseUser, campaign: str) -> bool:
    return may_read_dag(user, campaign_dag_id(campaign))


def _ledger():
    """The ledger at this process's ledger URL: one engine (and pool) for the api-server's life,
    not one per read (a page reads it several times; each new Ledger also checks its tables)."""
    from drp_campaign import settings

    return _ledger_at(str(settings.ledger_url()))


@functools.cache
def _ledger_at(url: str):
    from drp_campaign.ledger import Ledger

    return Ledger(url)


@dataclass
class RunRef:
    """One campaign run, found in the ledger, in Airflow, or both."""

    dag_id: str
    dag_run_id: str
    run_key: str | None  # None until the run reached the ledger (its first site started)
    campaign: str
    airflow: dict | None  # the DagRun's state and dates, None when Airflow no longer has it


def find_run(run_id: str, user: BaseUser, dag_id: str | None = None) -> RunRef:
    """The run RUN_ID names (its Airflow run id, or its ledger key) for a user who may read it:
    404 naming what was looked for, 403 naming the DAG."""
    from drp_campaign.graph import run_key

    known = _ledger().campaign_run(run_id) or _ledger().campaign_run(run_key(run_id))
    dag_run_id = known["dag_run_id"] if known else run_id
    found = records.dag_runs(dag_id=dag_id, run_id=dag_run_id) or records.dag_runs(
        dag_id=dag_id,
        run_id=dag_run_id.replace(" ", "+"),  # a '+' that went through a query string
    )
    if not known and not found:
        raise HTTPException(
            404,
            f"no campaign run {run_id!r} in the ledger or in Airflow: copy the run id from the DAG's grid "
            "or the runs list (/drp/runs)",
        )
    if len(found) > 1:
        raise HTTPException(409, f"run id {run_id!r} names runs of {len(found)} DAGs: add &dag_id=")
    airflow = found[0] if found else None
    ref = RunRef(
        dag_id=airflow["dag_id"] if airflow else campaign_dag_id(known["campaign"]),
        dag_run_id=airflow["run_id"] if airflow else dag_run_id,
        run_key=known["run_key"] if known else None,
        campaign=known["campaign"] if known else airflow["dag_id"].removeprefix("campaign_"),
        airflow=airflow,
    )
    if not may_read_dag(user, ref.dag_id):
        raise HTTPException(403, f"user {user.get_name()!r} may not read the runs of DAG {ref.dag_id}")
    return ref


def run_report(ref: RunRef, config: CampaignConfig | None) -> dict | None:
    """The ledger's report of the run, with its tape and IDAC copies when the config is known."""
    from drp_campaign.report import build_report

    if ref.run_key is None:
        return None
    return build_report(_ledger(), ref.campaign, ref.run_key, config=config)


def run_status(ref: RunRef, config: CampaignConfig, report: dict | None) -> dict | None:
    """The live matrix (drp_campaign/live_status.py), or None when Airflow has no record of the run."""
    from drp_campaign.live_status import build_status, typical_durations

    if ref.airflow is None:
        return None
    rule_ids = [h["rule_id"] for h in (report or {}).get("hops", []) if h.get("rule_id")]
    return build_status(
        config,
        ref.airflow,
        records.task_rows(ref.dag_id, ref.dag_run_id),
        report,
        typical_durations(records.history(ref.dag_id, ref.dag_run_id)),
        records.live_rule_states(rule_ids),
    )


def _config_of(ref: RunRef) -> CampaignConfig | None:
    return campaign_of_dag(ref.dag_id)


# -- JSON ----------------------------------------------------------------------------------------
@app.get("/api/run", summary="The ledger's report of a run (steps, hops, products, reviews, site QA)")
def run_json(run_id: str, user: GetUserDep, dag_id: str | None = None) -> dict:
    ref = find_run(run_id, user, dag_id)
    report = run_report(ref, _config_of(ref))
    if report is None:
        raise HTTPException(404, f"run {ref.dag_run_id} has not reached the ledger yet (no site has started)")
    return report


@app.get("/api/status", summary="A run's live site x step matrix, from Airflow's task states and the ledger")
def status_json(run_id: str, user: GetUserDep, dag_id: str | None = None) -> dict:
    ref = find_run(run_id, user, dag_id)
    config = _config_of(ref)
    if config is None:
        raise HTTPException(404, f"no campaign file makes DAG {ref.dag_id} now (configs/campaigns)")
    status = run_status(ref, config, run_report(ref, config))
    if status is None:
        raise HTTPException(404, f"Airflow has no record of run {ref.dag_run_id} of {ref.dag_id} (deleted?)")
    return status


@app.get("/api/runs", summary="Every campaign run the user may read, newest first, with its verdict")
def runs_json(user: GetUserDep) -> list[dict]:
    return list_runs(user)


@app.get("/api/rule", summary="One Rucio rule as Rucio has it now (a hop cell's link)")
def rule_json(rule_id: str, user: GetUserDep) -> dict:
    try:
        return records.rule_detail(rule_id)
    except HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - Rucio down or its Connection missing: say which
        raise HTTPException(502, f"Rucio could not be asked about rule {rule_id}: {exc}") from None


@app.get("/api/openapi.json", summary="This API's OpenAPI schema")
def openapi_json(user: GetUserDep) -> dict:
    return app.openapi()


def list_runs(user: BaseUser, limit: int = 200) -> list[dict]:
    """Airflow's campaign runs merged with the ledger's (a run Airflow no longer has still shows),
    each with its verdict: the run's state, the ledger balance and the site QA from its report (the
    site QA from the ledger for a run without one)."""
    import sqlalchemy as sa

    from drp_campaign.ledger import campaign_runs
    from drp_campaign.nightly import summary_file
    from drp_campaign.report import report_file

    airflow = records.dag_runs(limit=limit)
    with _ledger().engine.connect() as conn:
        ledger_rows = conn.execute(sa.select(campaign_runs).order_by(campaign_runs.c.started.desc()).limit(limit)).all()
    by_run = {r.dag_run_id: r for r in ledger_rows}
    runs = []
    for a in airflow:
        row = by_run.pop(a["run_id"], None)
        runs.append(
            {
                "dag_id": a["dag_id"],
                "run_id": a["run_id"],
                "state": a["state"],
                "run_type": a["run_type"],
                "started": a["start_date"],
                "ended": a["end_date"],
                "run_key": row.run_key if row else None,
            }
        )
    for row in by_run.values():
        runs.append(
            {
                "dag_id": campaign_dag_id(row.campaign),
                "run_id": row.dag_run_id,
                "state": "unknown to Airflow",
                "run_type": "",
                "started": row.started,
                "ended": row.finished,
                "run_key": row.run_key,
            }
        )
    readable = {dag_id: may_read_dag(user, dag_id) for dag_id in {r["dag_id"] for r in runs}}
    runs = [r for r in runs if readable[r["dag_id"]]]
    # A run whose site QA failed has no report (campaign_report does not run after a failed QA):
    # its verdict comes from the ledger's checks, as the run's own page shows them.
    qa_in_ledger = _ledger().site_qa_verdicts(r["run_key"] for r in runs if r["run_key"])
    out = []
    for r in runs:
        verdict = {"site_qa": qa_in_ledger.get(r["run_key"])}
        if r["run_key"] and report_file(r["run_key"]).is_file():
            written = json.loads(report_file(r["run_key"]).read_text())
            verdict = {
                "ledger_balanced": written.get("ledger_balanced"),
                "site_qa": (written.get("site_qa") or {}).get("verdict"),
            }
        if r["run_key"] and summary_file(r["run_key"]).is_file():  # a scheduled run's, pass or fail
            nightly = json.loads(summary_file(r["run_key"]).read_text())
            verdict["nightly"] = nightly["verdict"]
            verdict["regressions"] = len(nightly["regressions"])
        out.append({**r, "started": _iso(r["started"]), "ended": _iso(r["ended"]), **verdict})
    return out


def _iso(value) -> str | None:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else value


# -- HTML ----------------------------------------------------------------------------------------
@app.exception_handler(HTTPException)
async def _error_page(request: Request, exc: HTTPException):
    """A page asked for by a browser gets a page, the API gets JSON."""
    if (
        request.url.path.startswith("/api/")
        or "/api/" in request.url.path
        or "html" not in request.headers.get("accept", "")
    ):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    body = (
        f"<html><head><title>DRP campaigns: {exc.status_code}</title>{_STYLE}</head><body>"
        f'<h2>{exc.status_code}</h2><p class="bad">{html.escape(str(exc.detail))}</p>'
        '<p><a href="runs">All campaign runs</a></p></body></html>'
    )
    return HTMLResponse(body, status_code=exc.status_code)


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, body: str, refresh: bool) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return f"<html><head><title>{html.escape(title)}</title>{meta}{_STYLE}</head><body>{body}</body></html>"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def _bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _cell_html(cell: dict | None) -> str:
    if cell is None:
        return "<td></td>"
    counts = cell["counts"]
    lines = [NOT_YET if cell["state"] == "none" else cell["state"].replace("_", " ")]
    if len(counts) > 1 or sum(counts.values()) > 1:
        done = counts.get("success", 0)
        lines.append(f"{done}/{sum(counts.values())} tasks")
    if q := cell.get("quanta"):
        lines.append(f"{q['succeeded']}/{q['total']} quanta")
    if hop := cell.get("hop"):
        lines.append(f"{hop['files_arrived']}/{hop['files_sent']} files")
        lines += [f"rule {r['state']}" + ("" if r["live"] else " (ledger)") for r in hop["rules"]]
    if cell.get("verdict"):
        lines.append(f"QA {cell['verdict'].upper()}")
    title = json.dumps({k: v for k, v in cell.items() if k not in ("link",)}, default=str)[:2000]
    text = "<br>".join(html.escape(line) for line in lines)
    link = html.escape(cell["link"])
    return f'<td class="s-{html.escape(cell["state"])}" title="{html.escape(title)}"><a href="{link}">{text}</a></td>'


def _attention_html(status: dict) -> str:
    """What on-call looks at first: each failed task (with its group) linking to its log, and
    each gate waiting for a decision."""
    items = []
    for site in status["sites"]:
        for col, cell in site["cells"].items():
            for f in cell["failed"]:
                group = f" [{f['group'] or f['map_index']}]" if f["map_index"] >= 0 else ""
                items.append(
                    f'<li><a href="{html.escape(f["link"])}">{html.escape(f["task_id"])}{html.escape(group)}</a>'
                    " failed: its log says why</li>"
                )
            if cell["state"] == "awaiting_input":
                items.append(
                    f'<li><a href="{html.escape(cell["link"])}/required_actions">{html.escape(site["site"])}.'
                    f"{html.escape(col)}</a> waits for a review decision</li>"
                )
    if not items:
        return ""
    return f'<h3 class="bad">Needs attention</h3><ul>{"".join(items)}</ul>'


def _matrix_html(status: dict) -> str:
    cols = [c for c in status["columns"] if any(c in s["cells"] for s in status["sites"])]
    head = (
        "<tr><th>site</th><th>state</th><th>elapsed</th><th>ETA</th><th>storage / quota</th>"
        + "".join(f'<th class="col">{html.escape(c)}</th>' for c in cols)
        + "</tr>"
    )
    rows = []
    for s in status["sites"]:
        storage = s["storage"]
        rows.append(
            f"<tr><th>{html.escape(s['site'])}</th><td class='s-{s['state']}'>{html.escape(s['state'])}</td>"
            f"<td>{_duration(s['elapsed_s'])}</td><td>{_duration(s['eta_s'])}</td>"
            f"<td>{_bytes(storage['bytes'])} / {_bytes(storage['quota_bytes'])} ({storage['fraction']:.1%})</td>"
            + "".join(_cell_html(s["cells"].get(c)) for c in cols)
            + "</tr>"
        )
    return f'<table class="matrix">{head}{"".join(rows)}</table>'


@app.get("/run", response_class=HTMLResponse, include_in_schema=False)
def run_page(run_id: str, user: GetUserDep, dag_id: str | None = None) -> str:
    ref = find_run(run_id, user, dag_id)
    config = _config_of(ref)
    report = run_report(ref, config)
    status = run_status(ref, config, report) if config else None
    title = f"Campaign {ref.campaign} — run {ref.run_key or ref.dag_run_id}"
    state = ref.airflow["state"] if ref.airflow else "unknown to Airflow"
    parts = [
        f"<h2>{html.escape(title)}</h2>",
        f'<p>Airflow run <a href="/dags/{quote(ref.dag_id)}/runs/{quote(ref.dag_run_id, safe="")}">'
        f"{html.escape(ref.dag_run_id)}</a>: <b>{html.escape(state)}</b>"
        + (f" — refreshes every {REFRESH_S} s" if state not in TERMINAL else "")
        + ' · <a href="runs">all runs</a>'
        + _plan_link(ref.campaign)
        + (
            f' · <a href="failover?run_id={quote(ref.dag_run_id)}">a site is down: fail it over</a>'
            if state != "success" and ref.airflow
            else ""
        )
        + "</p>",
    ]
    if status:
        parts.append(
            _attention_html(status)
            + "<h3>Sites and steps (live, from Airflow's task states and the ledger)</h3>"
            + _matrix_html(status)
            + '<p class="note">Each cell links to its tasks in Airflow (logs, tries); hover for the numbers. '
            "Storage: the campaign's Rucio-registered data at the site per the ledger, against sites.yaml storage_tb. "
            "ETA: what the site's remaining tasks took in the last earlier successful runs.</p>"
        )
    elif config is None:
        parts.append(f'<p class="bad">No campaign file makes DAG {html.escape(ref.dag_id)} now: no live matrix.</p>')
    if ref.run_key:
        parts.append(_nightly_section(ref.run_key))
    if report is None:
        parts.append('<p class="note">Not in the ledger yet: no site has started a step.</p>')
    else:
        parts.append(_ledger_html(report, status))
    return _page(title, "".join(parts), refresh=state not in TERMINAL)


def _plan_link(campaign: str) -> str:
    """A link to the plan that writes CAMPAIGN, when configs/plans has one."""
    from drp_campaign.planner.served import plan_names

    return f' · <a href="plan?name={quote(campaign)}">its plan</a>' if campaign in plan_names() else ""


# -- failover (drp_campaign/failover.py), as the logged-in user -------------------------------------
@app.get("/failover", response_class=HTMLResponse, include_in_schema=False)
def failover_form(run_id: str, user: GetUserDep) -> str:
    """The form: which site is down, which takes its unfinished tracts (runbook 4.9)."""
    ref = find_run(run_id, user)
    config = _config_of(ref)
    sites = config.campaign_sites() if config else []
    hub = config.hub() if config else None
    down = next((s for s in sites if s != hub), None)  # a data facility goes down more often than the hub

    def options(chosen: str | None) -> str:
        return "".join(f"<option{' selected' if s == chosen else ''}>{html.escape(s)}</option>" for s in sites)

    title = f"Fail a site over — run {ref.run_key or ref.dag_run_id}"
    body = (
        f"<h2>{html.escape(title)}</h2>"
        "<p>The down site's unfinished tracts are recorded in the ledger as moved; the other site's tasks run "
        "again with them (their inputs placed there through Rucio, their products returned from there); the down "
        "site's unfinished tasks are skipped. Refused, with nothing changed, when the move cannot be made "
        "(e.g. the down site's outputs have started coming home).</p>"
        '<form method="post" action="failover">'
        f'<input type="hidden" name="run_id" value="{html.escape(ref.dag_run_id)}">'
        f'<label>Down site <select name="from_site">{options(down)}</select></label> '
        f'<label>moves its work to <select name="to_site">{options(hub)}</select></label> '
        '<button type="submit">Fail over</button></form>'
        f'<p><a href="run?run_id={quote(ref.dag_run_id)}">Back to the run</a></p>'
    )
    return _page(title, body, refresh=False)


@app.post("/failover", response_class=HTMLResponse, include_in_schema=False)
async def failover_submit(request: Request, user: GetUserDep) -> HTMLResponse:
    """Do it as this user (their token: Airflow checks they may clear and mark the run's tasks)."""
    from starlette.concurrency import run_in_threadpool

    from drp_campaign.airflow_client import AirflowClient
    from drp_campaign.errors import DrpError
    from drp_campaign.failover import fail_over

    origin = request.headers.get("origin")  # a browser says which page posted: ours only (no cross-site posts)
    if origin and urlsplit(origin).netloc != request.url.netloc:
        raise HTTPException(403, f"a failover is asked from this site's own pages only, not from {origin}")
    form = await request.form()
    run_id, from_site, to_site = (str(form.get(k, "")) for k in ("run_id", "from_site", "to_site"))
    ref = find_run(run_id, user)
    token = request.cookies.get("_token") or request.headers.get("authorization", "").removeprefix("Bearer ")
    client = AirflowClient.with_token(token, user.get_name())
    back = f'<p><a href="run?run_id={quote(ref.dag_run_id)}">Back to the run</a></p>'
    try:
        done = await run_in_threadpool(
            fail_over, client, ref.dag_run_id, ref.dag_id, from_site, to_site, campaign=_config_of(ref)
        )
    except DrpError as exc:
        body = f'<h2>Not failed over</h2><p class="bad">{html.escape(str(exc))}</p>{back}'
        return HTMLResponse(_page("Not failed over", body, refresh=False), status_code=400)
    lines = done.lines()
    body = (
        f'<h2>Failed over</h2><p class="ok">{html.escape(lines[0])}</p>'
        f"<pre>{html.escape(chr(10).join(lines[1:]))}</pre>{back}"
    )
    return HTMLResponse(_page("Failed over", body, refresh=False))


def _ledger_html(report: dict, status: dict | None) -> str:
    live = {
        r["rule_id"]: r["state"]
        for s in (status or {}).get("sites", [])
        for c in s["cells"].values()
        for r in c.get("hop", {}).get("rules", [])
        if r["live"]
    }
    verdict = (
        '<p class="ok">Ledger balanced: every dataset sent arrived intact.</p>'
        if report["ledger_balanced"]
        else '<p class="bad">Ledger UNBALANCED: see the problems below.</p>'
    )
    per_step: dict[tuple[str, str], list[dict]] = {}
    for s in sorted(report["steps"], key=lambda s: s["started"]):
        per_step.setdefault((s["site"], s["step"]), []).append(s)
    steps = _table(
        [
            "site",
            "step",
            "groups (succeeded)",
            "quanta ok / total",
            "failed (accepted)",
            "most attempts",
            "seconds (longest group)",
        ],
        [
            [
                site,
                step,
                f"{len(g)} ({sum(x['status'] == 'succeeded' for x in g)})",
                f"{sum(x['quanta_succeeded'] for x in g)}/{sum(x['quanta_total'] for x in g)}",
                f"{sum(x['quanta_failed'] for x in g)} ({sum(x.get('quanta_accepted', 0) for x in g)})",
                max(x["attempts"] for x in g),
                f"{max(x['duration_s'] for x in g):.1f}",
            ]
            for (site, step), g in sorted(per_step.items())
        ],
    )
    # Every group of a 3x3; at scale, the groups that did not succeed (capped: the matrix counts them all).
    groups = (
        report["steps"]
        if len(report["steps"]) <= GROUP_ROWS
        else [s for s in report["steps"] if s["status"] != "succeeded"]
    )
    if groups:
        which = "that did not succeed" if groups is not report["steps"] else "with their BPS runs and output RUNs"
        steps += (
            f"<details><summary>{len(groups)} groups {which}</summary>"
            + _table(
                [
                    "site",
                    "step",
                    "group",
                    "status",
                    "quanta ok / total",
                    "failed",
                    "attempts",
                    "seconds",
                    "WMS run",
                    "output run",
                ],
                [
                    [
                        s["site"],
                        s["step"],
                        s["group_label"],
                        s["status"],
                        f"{s['quanta_succeeded']}/{s['quanta_total']}",
                        s["quanta_failed"],
                        s["attempts"],
                        f"{s['duration_s']:.1f}",
                        s.get("wms_run_id", ""),
                        s["output_run"],
                    ]
                    for s in sorted(groups, key=lambda s: (s["site"], s["started"]))[:GROUP_ROWS]
                ],
            )
            + "</details>"
        )
    hops = _table(
        [
            "hop",
            "from",
            "to",
            "rule",
            "rule state (Rucio now)",
            "in the ledger",
            "sent",
            "arrived intact",
            "bytes",
            "problems",
        ],
        [
            [
                h["hop"],
                h["from"],
                h["to"],
                h.get("rule_id", ""),
                live.get(h.get("rule_id"), "?"),
                h.get("rule_state", ""),
                h["sent"],
                h["arrived"],
                h["bytes"],
                "; ".join(h["problems"][:5]),
            ]
            for h in report["hops"]
        ],
    )
    out = [f"<h3>Ledger</h3>{verdict}<h4>Steps</h4>{steps}<h4>Hops</h4>{hops}"]
    if report.get("at_tape") or report.get("at_idacs"):
        copies = [
            [c["hop"], c.get("idac", "tape"), c["rse"], f"{c['files']}/{c['sent']}", c["bytes"], c["rule_id"],
             live.get(c["rule_id"], c["rule_state"])]
            for c in [*report.get("at_tape", []), *report.get("at_idacs", [])]
        ]  # fmt: skip
        out.append(
            "<h4>Products out: tape and IDACs</h4>"
            + _table(["hop", "copy", "RSE", "files intact / registered", "bytes", "rule", "rule state"], copies)
        )
    released = _table(
        ["site", "copy of hop", "RSE", "files", "bytes", "rules dropped", "released"],
        [
            [r["site"], r["hop"], r["rse"], r["files"], r["bytes"], r["rules"], r["at"]]
            for r in report.get("released", [])
        ],
    )
    out.append(f"<h4>Site copies released</h4>{released}")
    if report.get("hub_products"):
        out.append(
            "<h4>Products at the hub</h4>"
            + _table(["dataset type", "datasets"], sorted(report["hub_products"].items()))
        )
    return "".join(out) + _failovers_section(report) + _reviews_section(report) + _site_qa_section(report)


def _nightly_section(run_key: str) -> str:
    """A scheduled run's nightly summary (operators/nightly.py), once it was written."""
    from drp_campaign.nightly import summary_file

    path = summary_file(run_key)
    if not path.is_file():
        return ""
    summary = json.loads(path.read_text())
    css = "ok" if summary["verdict"] == "PASS" else "bad"
    rows = [
        [
            site,
            r["verdict"],
            _duration(r["duration_s"]),
            _duration(r["median_s"]),
            r["nights"],
            "; ".join(r["failed"][:3]),
        ]
        for site, r in summary["sites"].items()
    ]
    rows += [
        [f"hop {name}", r["verdict"], "", "", "", f"{r['arrived']}/{r['sent']} arrived"]
        for name, r in summary["hops"].items()
        if r["verdict"] != "PASS"
    ]
    regressions = "".join(f'<li class="bad">{html.escape(r)}</li>' for r in summary["regressions"])
    return (
        f'<h3>Nightly summary: <span class="{css}">{summary["verdict"]}</span></h3>'
        + _table(["site / hop", "verdict", "steps took", "median of earlier nights", "nights", "failed"], rows)
        + (f"<p>Regressions:</p><ul>{regressions}</ul>" if regressions else '<p class="note">No regression.</p>')
    )


def _failovers_section(report: dict) -> str:
    """Tracts moved from a down site to another (drp-campaign failover), who moved them and when."""
    if not report.get("failovers"):
        return ""
    rows = [[f["tract"], f["from"], f["to"], f["by"], f["at"]] for f in report["failovers"]]
    note = "<p>Processed at the site they were moved to; what the down site made of them never came home.</p>"
    return f"<h3>Failed over</h3>{note}{_table(['tract', 'from (down)', 'to', 'by', 'at'], rows)}"


def _reviews_section(report: dict) -> str:
    """Who decided on each review gate of the run, what and when."""
    if not report.get("reviews"):
        return ""
    rows = [[r["step"], r["decision"], r["by"], r["at"]] for r in report["reviews"]]
    return f"<h3>Review gates</h3>{_table(['before step', 'decision', 'by', 'at'], rows)}"


def _site_qa_section(report: dict) -> str:
    """The site-independence QA: per overlap tract its verdict, what differs, and its plot."""
    qa = report.get("site_qa")
    if not qa:
        return ""
    verdict = (
        '<p class="ok">Site-independence QA passed: every compared quantity within its tolerance.</p>'
        if qa["verdict"] == "pass"
        else '<p class="bad">Site-independence QA FAILED: the sites differ beyond a tolerance (below).</p>'
    )
    parts = [f"<h3>Site-independence QA</h3>{verdict}"]
    for t in qa["tracts"]:
        ok = t["compared"] - len(t["failed"])
        parts.append(
            f"<h4>Tract {t['tract']}: {html.escape(t['site_a'])} (product) vs {html.escape(t['site_b'])}, "
            f"{ok}/{t['compared']} within tolerance</h4>"
        )
        if t["failed"]:
            parts.append(
                _table(
                    ["dataset type", "quantity", t["site_a"], t["site_b"], "tolerance", "note"],
                    [
                        [f["dataset_type"], f["quantity"], f["value_a"], f["value_b"], f["tolerance"], f["note"]]
                        for f in t["failed"]
                    ],
                )
            )
        src = f"site_qa.png?run_id={quote(report['run_key'])}&tract={t['tract']}"
        parts.append(f'<p><img src="{html.escape(src)}" alt="site QA plot, tract {t["tract"]}" width="800"></p>')
    return "".join(parts)


@app.get("/site_qa.png", include_in_schema=False)
def site_qa_plot(run_id: str, tract: int, user: GetUserDep) -> FileResponse:
    """One overlap tract's plot, as the site_qa task wrote it (same access as the run's page)."""
    from drp_campaign.report import site_qa_dir
    from drp_campaign.site_qa import plot_name

    ref = find_run(run_id, user)
    if ref.run_key is None:
        raise HTTPException(404, f"run {ref.dag_run_id} has not reached the ledger yet: no site QA plots")
    path = site_qa_dir(ref.run_key) / plot_name(tract)
    if not path.is_file():
        raise HTTPException(404, f"no site QA plot for tract {tract} of run {ref.run_key} (has site_qa run?)")
    return FileResponse(path, media_type="image/png")


@app.get("/runs", response_class=HTMLResponse, include_in_schema=False)
def runs_page(user: GetUserDep) -> str:
    """The latest 200 campaign runs, of the campaigns whose runs USER may read, with verdicts."""
    runs = list_runs(user)
    rows = []
    for r in runs:
        target = r["run_key"] or r["run_id"]
        balanced = {True: '<span class="ok">balanced</span>', False: '<span class="bad">UNBALANCED</span>'}.get(
            r.get("ledger_balanced"), "—"
        )
        qa = {"pass": '<span class="ok">pass</span>', "fail": '<span class="bad">FAIL</span>'}.get(
            r.get("site_qa"), "—"
        )
        night = {"PASS": '<span class="ok">PASS</span>', "FAIL": '<span class="bad">FAIL</span>'}.get(
            r.get("nightly"), "—"
        )
        if r.get("regressions"):
            night += f' <span class="bad">{r["regressions"]} regression(s)</span>'
        rows.append(
            f"<tr><td>{html.escape(r['dag_id'].removeprefix('campaign_'))}</td>"
            f'<td><a href="run?run_id={quote(target)}&amp;dag_id={quote(r["dag_id"])}">'
            f"{html.escape(r['run_id'])}</a></td>"
            f"<td>{html.escape(r['run_type'] or '')}</td>"
            f"<td class='s-{html.escape(r['state'])}'>{html.escape(r['state'])}</td>"
            f"<td>{r['started'] or ''}</td><td>{r['ended'] or 'not finished'}</td><td>{balanced}</td><td>{qa}</td>"
            f"<td>{night}</td></tr>"
        )
    head = (
        "<tr><th>campaign</th><th>run</th><th>type</th><th>state</th><th>started</th><th>ended</th>"
        "<th>ledger</th><th>site QA</th><th>nightly</th></tr>"
    )
    active = any(r["state"] not in (*TERMINAL, "unknown to Airflow") for r in runs)
    plans = (
        '<p class="note"><a href="plans">Campaign plans</a>: which site processes which tracts, and what it costs.</p>'
    )
    return _page(
        "DRP campaigns", f"<h2>DRP campaign runs</h2>{plans}<table>{head}{''.join(rows)}</table>", refresh=active
    )


# -- plans (drp_campaign/planner/served.py): what `drp-campaign plan --simulate --pictures` shows ----
@app.get("/plans", response_class=HTMLResponse, include_in_schema=False)
def plans_page(user: GetUserDep) -> str:
    """Every plan of configs/plans, each linked to its page (plans hold no run data: any logged-in user)."""
    from drp_campaign.planner.served import PLANS_DIR, plan_files, plan_names

    named = plan_names()
    rows = [
        f'<tr><td><a href="plan?name={quote(name)}">{html.escape(name)}</a></td><td>{html.escape(path.name)}</td></tr>'
        for name, path in sorted(named.items())
    ]
    unnamed = [p.name for p in plan_files() if p not in named.values()]
    body = (
        "<h2>Campaign plans</h2>"
        f'<p class="note">The plans in {html.escape(str(PLANS_DIR))}: which site processes which tracts, and what '
        'the campaign costs against the lower bound (drp-campaign plan). <a href="runs">All campaign runs</a></p>'
        f"<table><tr><th>plan</th><th>file</th></tr>{''.join(rows)}</table>"
    )
    if unnamed:
        body += (
            f'<p class="bad">Not shown, no plan name of its own in: {html.escape(", ".join(unnamed))} '
            "(no name, or one an earlier file has; check each with drp-campaign plan FILE).</p>"
        )
    return _page("Campaign plans", body, refresh=False)


@app.get("/plan", response_class=HTMLResponse, include_in_schema=False)
def plan_page(
    name: str, user: GetUserDep, site_down: str | None = None, from_day: float = 0.0, days: float = 7.0
) -> str:
    """One plan: the simulated campaign per site (the CLI's --simulate report), whether `plan --out`
    would write it, a site-down what-if (the CLI's --site-down), and its sky map, Gantt chart and
    storage pictures."""
    plan = _served_plan(name)
    what_if = _what_if_html(plan, site_down, from_day, days)
    dag_id = campaign_dag_id(plan.name)
    campaign = campaign_of_dag(dag_id)
    writes = (
        f'<p class="bad">plan --out would write nothing: {html.escape(plan.refused)}</p>'
        if plan.refused
        else f'<p class="ok">plan --out writes campaign {html.escape(plan.name)}: it fits every site.</p>'
    )
    if plan.caveat:
        writes += f'<p class="bad">Note: {html.escape(plan.caveat)}.</p>'
    if campaign is not None:
        writes += (
            f"<p>Campaign {html.escape(plan.name)} is loaded ({html.escape(campaign.file.name)}): "
            f'<a href="/dags/{quote(dag_id)}">its DAG</a>.</p>'
        )
    images = "".join(
        f'<p><img src="plan.png?name={quote(plan.name)}&amp;picture={kind}" alt="{kind} of plan '
        f'{html.escape(plan.name)}" width="900"></p>'
        for kind in plan.pictures
    )
    body = (
        f"<h2>Plan {html.escape(plan.name)}</h2>"
        f'<p class="note">{html.escape(plan.file.name)}, filling in {html.escape(plan.template.name)} · '
        '<a href="plans">all plans</a> · <a href="runs">all campaign runs</a></p>'
        f'{writes}<pre style="white-space:pre-wrap">{html.escape(plan.report)}</pre>{what_if}{images}'
    )
    return _page(f"Plan {plan.name}", body, refresh=False)


def _what_if_html(plan, site_down: str | None, from_day: float, days: float) -> str:
    """The what-if form, and its answer when one was asked (a bad site or days: 422 naming them)."""
    from drp_campaign.errors import DrpError

    answer = ""
    if site_down:
        try:
            answer = f'<pre style="white-space:pre-wrap">{html.escape(plan.site_down(site_down, from_day, days))}</pre>'
        except DrpError as exc:
            raise HTTPException(422, f"what-if for plan {plan.name}: {exc}") from None
    options = "".join(
        f'<option value="{html.escape(s)}"{" selected" if s == site_down else ""}>{html.escape(s)}</option>'
        for s in plan.sites
    )
    return (
        f'<form method="get" action="plan"><input type="hidden" name="name" value="{html.escape(plan.name)}">'
        f'What if <select name="site_down">{options}</select> is down from day '
        f'<input name="from_day" type="number" min="0" step="any" value="{from_day:g}" style="width:5em"> for '
        f'<input name="days" type="number" min="0" step="any" value="{days:g}" style="width:5em"> days? '
        f"<button>Simulate</button></form>{answer}"
    )


@app.get("/plan.png", include_in_schema=False)
def plan_picture(name: str, picture: str, user: GetUserDep) -> FileResponse:
    from drp_campaign.planner.served import PICTURES

    if picture not in PICTURES:
        raise HTTPException(404, f"no picture {picture!r} of a plan; one of {', '.join(PICTURES)}")
    return FileResponse(_served_plan(name).pictures[picture], media_type="image/png")


def _served_plan(name: str):
    from drp_campaign.config import ConfigError
    from drp_campaign.errors import DrpError
    from drp_campaign.planner.served import served_plan

    try:
        return served_plan(name)
    except ConfigError as exc:  # the plan file (or its campaign, its sites) as drp-campaign plan names it
        raise HTTPException(422, f"plan {name} does not load: {exc}") from None
    except DrpError as exc:
        raise HTTPException(404, str(exc)) from None
