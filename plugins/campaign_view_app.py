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
from urllib.parse import quote

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, get_user
from airflow.configuration import conf
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

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
        f"<h3>Steps</h3>{steps}<h3>Hops</h3>{hops}<h3>Site copies released</h3>{released}"
        f"{_reviews_section(report)}{_site_qa_section(report)}</body></html>"
    )


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


@app.get("/site_qa.png")
def site_qa_plot(run_id: str, tract: int, user: GetUserDep) -> FileResponse:
    """One overlap tract's plot, as the site_qa task wrote it (same access as the run's page)."""
    from drp_campaign.report import site_qa_dir
    from drp_campaign.site_qa import plot_name

    report = run_summary(run_id, user)
    path = site_qa_dir(report["run_key"]) / plot_name(tract)
    if not path.is_file():
        raise HTTPException(404, f"no site QA plot for tract {tract} of run {report['run_key']} (has site_qa run?)")
    return FileResponse(path, media_type="image/png")


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
