"""The campaign view's FastAPI app (the plugin, `campaign_view.py`, mounts it under /drp): each
run's steps per site and its ledger per hop. It reads the ledger, never Airflow's DB.

Airflow mounts a plugin's app without its own auth, so this app applies it itself, with the very
dependency Airflow's public API uses (`airflow.api_fastapi.core_api.security.get_user`): a JWT
from `Authorization: Bearer` (`POST /auth/token`) or the UI's session cookie `_token`, checked by
the configured auth manager (signature, expiry, revocation). Anonymous callers get 401, a bad
token 403, on every route (no OpenAPI or docs pages either). A run's page and JSON are shown to
whoever may read the runs of that campaign's DAG, as `GET /api/v2/dags/{dag_id}/dagRuns` asks
the auth manager (`is_authorized_dag(GET, DagAccessEntity.RUN)`); the list shows only those.
"""

from __future__ import annotations

import html

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, get_user
from airflow.configuration import conf
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse

from drp_campaign.config import campaign_dag_id

# Every route needs a logged-in user; nothing is served anonymously (docs and schema are off).
app = FastAPI(
    title="DRP campaign view", dependencies=[Depends(get_user)], docs_url=None, redoc_url=None, openapi_url=None
)

_STYLE = """<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.bad{color:#b00020;font-weight:bold}
.ok{color:#137333;font-weight:bold}</style>"""


def may_read_runs(user: BaseUser, campaign: str) -> bool:
    """Whether USER may read the runs of CAMPAIGN's DAG: the question Airflow's own
    `requires_access_dag("GET", DagAccessEntity.RUN)` asks, of whichever auth manager is set up."""
    dag_id = campaign_dag_id(campaign)
    team = None
    if conf.getboolean("core", "multi_team"):
        from airflow.models.dag import DagModel

        team = DagModel.get_team_name(dag_id)
    return get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id, team_name=team), user=user
    )


def _ledger():
    from drp_campaign.ledger import Ledger

    return Ledger()


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def run_summary(run_id: str, user: BaseUser) -> dict:
    """The same report the campaign_report task writes, built live from the ledger, for a user
    who may read that campaign's runs (else 403)."""
    from drp_campaign.graph import run_key
    from drp_campaign.report import build_report

    ledger = _ledger()
    known = ledger.campaign_run(run_id) or ledger.campaign_run(run_key(run_id))
    if not known:
        raise HTTPException(404, f"no campaign run {run_id!r} in the ledger (it has not started a site yet?)")
    if not may_read_runs(user, known["campaign"]):
        raise HTTPException(
            403, f"user {user.get_name()!r} may not read the runs of DAG {campaign_dag_id(known['campaign'])}"
        )
    return build_report(ledger, known["campaign"], known["run_key"])


@app.get("/api/run")
def run_json(run_id: str, user: GetUserDep) -> dict:
    return run_summary(run_id, user)


@app.get("/run", response_class=HTMLResponse)
def run_page(run_id: str, user: GetUserDep) -> str:
    report = run_summary(run_id, user)
    verdict = (
        '<p class="ok">Ledger balanced: every dataset sent arrived intact.</p>'
        if report["ledger_balanced"]
        else '<p class="bad">Ledger UNBALANCED: see the problems below.</p>'
    )
    steps = _table(
        ["site", "step", "group", "status", "quanta ok / total", "failed", "attempts", "seconds", "output run"],
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
                s["output_run"],
            ]
            for s in report["steps"]
        ],
    )
    hops = _table(
        ["hop", "from", "to", "rule", "rule state", "sent", "arrived intact", "bytes", "problems"],
        [
            [
                h["hop"],
                h["from"],
                h["to"],
                h.get("rule_id", ""),
                h.get("rule_state", ""),
                h["sent"],
                h["arrived"],
                h["bytes"],
                "; ".join(h["problems"][:5]),
            ]
            for h in report["hops"]
        ],
    )
    released = _table(
        ["site", "copy of hop", "RSE", "files", "bytes", "rules dropped", "released"],
        [
            [r["site"], r["hop"], r["rse"], r["files"], r["bytes"], r["rules"], r["at"]]
            for r in report.get("released", [])
        ],
    )
    title = html.escape(f"Campaign {report['campaign']} — run {report['run_key']}")
    return (
        f"<html><head><title>{title}</title>{_STYLE}</head><body><h2>{title}</h2>{verdict}"
        f"<h3>Steps</h3>{steps}<h3>Hops</h3>{hops}<h3>Site copies released</h3>{released}</body></html>"
    )


@app.get("/runs", response_class=HTMLResponse)
def runs_page(user: GetUserDep) -> str:
    """The latest 200 campaign runs in the ledger, of the campaigns whose runs USER may read."""
    import sqlalchemy as sa

    from drp_campaign.ledger import campaign_runs

    with _ledger().engine.connect() as conn:
        rows = conn.execute(sa.select(campaign_runs).order_by(campaign_runs.c.started.desc()).limit(200)).all()
    readable = {name: may_read_runs(user, name) for name in {r.campaign for r in rows}}
    links = "".join(
        f"<tr><td>{html.escape(r.campaign)}</td>"
        f'<td><a href="run?run_id={html.escape(r.run_key)}">{html.escape(r.dag_run_id)}</a></td>'
        f"<td>{r.started:%Y-%m-%d %H:%M:%S}</td><td>{r.finished or 'not finished'}</td></tr>"
        for r in rows
        if readable[r.campaign]
    )
    head = "<tr><th>campaign</th><th>run</th><th>started</th><th>report written</th></tr>"
    return (
        f"<html><head><title>DRP campaigns</title>{_STYLE}</head><body><h2>DRP campaign runs</h2>"
        f"<table>{head}{links}</table></body></html>"
    )
