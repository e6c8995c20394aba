"""The campaign view in Airflow's UI: each run's steps per site and its ledger per hop.

An Airflow 3 plugin: a small FastAPI app served by the api-server under /drp, linked from the
Browse menu and from every DAG run ("Campaign ledger"). It reads the ledger, never Airflow's DB.
"""

from __future__ import annotations

import html

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse

app = FastAPI(title="DRP campaign view")

_STYLE = """<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.bad{color:#b00020;font-weight:bold}
.ok{color:#137333;font-weight:bold}</style>"""


def _ledger():
    from drp_campaign.ledger import Ledger

    return Ledger()


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def run_summary(run_id: str) -> dict:
    """The same report the campaign_report task writes, built live from the ledger."""
    from drp_campaign.graph import run_key
    from drp_campaign.report import build_report

    ledger = _ledger()
    known = ledger.campaign_run(run_id) or ledger.campaign_run(run_key(run_id))
    if not known:
        raise HTTPException(404, f"no campaign run {run_id!r} in the ledger (it has not started a site yet?)")
    return build_report(ledger, known["campaign"], known["run_key"])


@app.get("/api/run")
def run_json(run_id: str) -> dict:
    return run_summary(run_id)


@app.get("/run", response_class=HTMLResponse)
def run_page(run_id: str) -> str:
    report = run_summary(run_id)
    verdict = (
        '<p class="ok">Ledger balanced: every dataset sent arrived intact.</p>'
        if report["ledger_balanced"]
        else '<p class="bad">Ledger UNBALANCED: see the problems below.</p>'
    )
    steps = _table(
        ["site", "step", "group", "status", "quanta ok / total", "failed", "attempts", "seconds", "output run"],
        [[s["site"], s["step"], s["group_label"], s["status"], f"{s['quanta_succeeded']}/{s['quanta_total']}",
          s["quanta_failed"], s["attempts"], f"{s['duration_s']:.1f}", s["output_run"]] for s in report["steps"]],
    )  # fmt: skip
    hops = _table(
        ["hop", "from", "to", "rule", "rule state", "sent", "arrived intact", "bytes", "problems"],
        [[h["hop"], h["from"], h["to"], h.get("rule_id", ""), h.get("rule_state", ""), h["sent"], h["arrived"], h["bytes"],
          "; ".join(h["problems"][:5])] for h in report["hops"]],
    )
    released = _table(
        ["site", "copy of hop", "RSE", "files", "bytes", "rules dropped", "released"],
        [[r["site"], r["hop"], r["rse"], r["files"], r["bytes"], r["rules"], r["at"]] for r in report.get("released", [])],
    )
    title = f"Campaign {report['campaign']} — run {report['run_key']}"
    return (f"<html><head><title>{html.escape(title)}</title>{_STYLE}</head><body><h2>{html.escape(title)}</h2>{verdict}"
            f"<h3>Steps</h3>{steps}<h3>Hops</h3>{hops}<h3>Site copies released</h3>{released}</body></html>")


@app.get("/runs", response_class=HTMLResponse)
def runs_page() -> str:
    import sqlalchemy as sa

    from drp_campaign.ledger import campaign_runs

    with _ledger().engine.connect() as conn:
        rows = conn.execute(sa.select(campaign_runs).order_by(campaign_runs.c.started.desc()).limit(200)).all()
    links = "".join(
        f'<tr><td>{html.escape(r.campaign)}</td><td><a href="run?run_id={html.escape(r.run_key)}">{html.escape(r.dag_run_id)}</a></td>'
        f"<td>{r.started:%Y-%m-%d %H:%M:%S}</td><td>{r.finished or 'not finished'}</td></tr>"
        for r in rows
    )
    return f"<html><head><title>DRP campaigns</title>{_STYLE}</head><body><h2>DRP campaign runs</h2><table><tr><th>campaign</th><th>run</th><th>started</th><th>report written</th></tr>{links}</table></body></html>"


class DrpCampaignPlugin(AirflowPlugin):
    name = "drp_campaign"
    fastapi_apps = [{"app": app, "url_prefix": "/drp", "name": "DRP campaign view"}]
    external_views = [
        {"name": "DRP campaigns", "href": "/drp/runs", "destination": "nav", "category": "browse", "url_route": "drp-campaigns"},
        {"name": "Campaign ledger", "href": "/drp/run?run_id={RUN_ID}", "destination": "dag_run", "url_route": "drp-campaign-run"},
    ]
