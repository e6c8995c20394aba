"""A campaign run as it stands: a site x step matrix from Airflow's own task instances, merged
with the ledger's numbers (quanta, bytes, rules, QA, reviews).

Pure: the campaign view (plugins/campaign_view_app.py) reads the task instances from Airflow's
metadata DB and the report from the ledger, and hands both here; the tests hand in rows.

A cell is one (site, column): a column is a step, a hop (its register..verify tasks together),
a gate, a check or a release, in data-path order. A mapped step's cell counts its groups by state.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from dataclasses import dataclass
from urllib.parse import quote

from .config import CampaignConfig
from .graph import build_graph

# A cell's one-word state, the first that applies: what an operator must look at comes first.
ACTIVE = ("running", "queued", "scheduled", "deferred", "up_for_reschedule", "restarting")
CELL_STATES = ("failed", "upstream_failed", "up_for_retry", "awaiting_input", *ACTIVE, "success", "skipped")
DONE = frozenset({"success", "skipped", "failed", "upstream_failed", "removed"})
TB = 1e12
LISTED_GROUPS = 20  # a cell lists its groups' BPS runs up to this many (then only the unsuccessful)


@dataclass(frozen=True)
class TaskRow:
    """One task instance as Airflow's metadata DB holds it."""

    task_id: str
    map_index: int
    state: str | None
    start_date: dt.datetime | None = None
    end_date: dt.datetime | None = None
    try_number: int = 0
    run_id: str = ""  # set in a run's history (typical_durations), not needed within one run
    group: str | None = None  # a mapped step's group label (Airflow's rendered map index)


def columns(campaign: CampaignConfig) -> list[str]:
    """The matrix's columns in data-path order: software and input checks, the place hop, each
    stage (a gated step after its gate), the site QA after the fan-in that feeds it, the tape hop
    and the sites' releases, the report."""
    graph = build_graph(campaign)
    places = [s.name for s in graph.stages.values() if s.scope == "place"]
    cols = ["check_software", *places, "check_inputs"]
    compared = set(campaign.qa.compare)
    last_return = None
    for stage in graph.stages.values():
        if stage.scope == "place":
            continue
        if stage.name in campaign.review_gates:
            cols.append(f"review_{stage.name}")
        cols.append(stage.name)
        if stage.scope == "fan_in" and compared & set(stage.dataset_types):
            last_return = stage.name
        if stage.scope == "to_tape":
            cols.append("release_site_copies")
    if campaign.qa.overlap and last_return:
        cols.insert(cols.index(last_return) + 1, "site_qa")
    return [*cols, "campaign_report"]


def locate(task_id: str, hub: str) -> tuple[str, str]:
    """(row, column) of a task: `FRDF.step1` -> (FRDF, step1); `FRDF.place_inputs.wait` ->
    (FRDF, place_inputs); a task outside every site's group (the report) sits in the hub's row."""
    parts = task_id.split(".")
    if len(parts) == 1:
        return hub, parts[0]
    return parts[0], parts[1]


def cell_state(counts: Counter) -> str:
    """One word for a cell's task instances: failed first, then waiting on a human, then active."""
    if not counts:
        return "none"
    for state in CELL_STATES:
        if counts.get(state) and (state != "skipped" or set(counts) == {"skipped"}):
            return state
    if counts.get("success"):
        return "success"
    return "none"  # not yet scheduled: upstream still running


def row_state(cells: Counter) -> str:
    """A site's state from its cells' states: as a cell's, except that a site with finished and
    not-yet-started cells is running, not done."""
    state = cell_state(Counter({k: v for k, v in cells.items() if k != "none"}))
    if cells.get("none") and state in ("success", "skipped", "none"):
        return "running" if state != "none" else "none"
    return state


def typical_durations(history: list[TaskRow]) -> dict[str, float]:
    """Median seconds per task id over earlier successful runs (HISTORY: their task instances,
    each with its run_id; a skipped one took no time): a mapped task counts its longest group of
    each run, since the groups run side by side."""
    per_run: dict[tuple[str, str], float] = {}
    for t in history:
        if t.state == "skipped":  # nothing to do that night (e.g. a hop with nothing to move): no time
            seconds = 0.0
        elif t.state == "success" and t.start_date and t.end_date:
            seconds = (t.end_date - t.start_date).total_seconds()
        else:
            continue
        key = (t.task_id, t.run_id)
        per_run[key] = max(per_run.get(key, 0.0), seconds)
    by_task: dict[str, list[float]] = {}
    for (task_id, _), seconds in per_run.items():
        by_task.setdefault(task_id, []).append(seconds)
    return {task_id: statistics.median(v) for task_id, v in by_task.items()}


def ui_link(dag_id: str, run_id: str, task_id: str, map_index: int = -1, group: bool = False) -> str:
    """Airflow 3's UI page of a task (its logs, tries and details), mapped instance or group."""
    base = f"/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}/tasks"
    if group:
        return f"{base}/group/{quote(task_id)}"
    return f"{base}/{quote(task_id)}" + (f"/mapped/{map_index}" if map_index >= 0 else "")


class _Cell:
    def __init__(self):
        self.counts: Counter = Counter()
        self.task_ids: set[str] = set()
        self.mapped = False
        self.failed: list[dict] = []

    def add(self, t: TaskRow) -> None:
        self.counts[t.state or "none"] += 1
        self.task_ids.add(t.task_id)
        self.mapped |= t.map_index >= 0


def build_status(
    campaign: CampaignConfig,
    run: dict,
    tasks: list[TaskRow],
    report: dict | None,
    durations: dict[str, float] | None = None,
    live_rules: dict[str, str] | None = None,
    now: dt.datetime | None = None,
) -> dict:
    """The run's status as the view shows it and its JSON API returns it.

    RUN: {dag_id, run_id, state, start_date, end_date, conf}; TASKS: its task instances; REPORT: the
    ledger's report of the run (None before it reached the ledger); DURATIONS: typical seconds
    per task id from earlier runs (the ETA); LIVE_RULES: {rule_id: state} as Rucio says now."""
    now = now or dt.datetime.now(dt.UTC)
    hub = campaign.hub()
    sites = [hub, *[s for s in campaign.campaign_sites() if s != hub]]
    cols = columns(campaign)
    cells: dict[tuple[str, str], _Cell] = {}
    by_row: dict[str, list[TaskRow]] = {}
    for t in tasks:
        row, col = locate(t.task_id, hub)
        by_row.setdefault(row, []).append(t)
        if col not in cols:
            cols.append(col)  # a task this code does not know of still shows
        cell = cells.setdefault((row, col), _Cell())
        cell.add(t)
        if t.state == "failed":
            cell.failed.append(
                {
                    "task_id": t.task_id,
                    "map_index": t.map_index,
                    "group": t.group,
                    "link": ui_link(run["dag_id"], run["run_id"], t.task_id, t.map_index),
                }
            )
    report = report or {}
    selected = (run.get("conf") or {}).get("sites")  # the run's trigger-form choice, if it made one
    rows = []
    for site in sites:
        row_tasks = by_row.get(site, [])
        matrix = {}
        for col in cols:
            cell = cells.get((site, col))
            if cell is None:
                continue
            matrix[col] = _cell_json(campaign, run, site, col, cell, report, live_rules or {})
        timing = _timing(row_tasks, durations or {}, now)
        state = row_state(Counter(c["state"] for c in matrix.values()))
        if selected and site not in selected:  # the trigger form left it out: its tasks skip
            state, timing["eta_s"] = "not selected", None
        rows.append(
            {
                "site": site,
                "state": state,
                **timing,
                "storage": _storage(campaign, site, report),
                "cells": matrix,
            }
        )
    qa = report.get("site_qa") or {}
    return {
        "campaign": campaign.name,
        "dag_id": run["dag_id"],
        "run_id": run["run_id"],
        "run_key": report.get("run_key"),
        "state": run["state"],
        "started": _iso(run.get("start_date")),
        "ended": _iso(run.get("end_date")),
        "columns": cols,
        "sites": rows,
        "task_states": dict(Counter(t.state or "none" for t in tasks)),
        "ledger_balanced": report.get("ledger_balanced"),
        "site_qa": qa.get("verdict"),
        "reviews": report.get("reviews", []),
        "links": {"grid": f"/dags/{quote(run['dag_id'])}/runs/{quote(run['run_id'], safe='')}"},
    }


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _cell_json(campaign, run, site, col, cell: _Cell, report: dict, live_rules: dict) -> dict:
    group = any(t.count(".") == 2 for t in cell.task_ids)  # a hop: register .. verify
    task_id = f"{site}.{col}" if group else next(iter(cell.task_ids))
    link = ui_link(run["dag_id"], run["run_id"], task_id, group=group) + ("/mapped" if cell.mapped else "")
    out = {
        "state": cell_state(cell.counts),
        "counts": dict(cell.counts),
        "link": link,
        "failed": cell.failed,
    }
    steps = [s for s in report.get("steps", []) if s["site"] == site and s["step"] == col]
    if steps:
        out["quanta"] = {
            "succeeded": sum(s["quanta_succeeded"] for s in steps),
            "total": sum(s["quanta_total"] for s in steps),
            "failed": sum(s["quanta_failed"] for s in steps),
        }
        # Each group's BPS run, or at scale (hundreds of groups) only those that did not succeed.
        listed = steps if len(steps) <= LISTED_GROUPS else [s for s in steps if s["status"] != "succeeded"]
        out["wms_runs"] = [
            {
                "group": s["group_label"],
                "status": s["status"],
                "wms_run_id": s.get("wms_run_id", ""),
                "output_run": s["output_run"],
            }
            for s in listed[:LISTED_GROUPS]
        ]
    hops = [h for h in report.get("hops", []) if h["hop"] == col and site in (h["from"], h["to"])]
    if hops:
        out["hop"] = {
            "files_sent": sum(h["sent"] for h in hops),
            "files_arrived": sum(h["arrived"] for h in hops),
            "bytes_arrived": sum(h["bytes"] for h in hops),
            "rules": [
                {
                    "rule_id": h["rule_id"],
                    "from": h["from"],
                    "to": h["to"],
                    "state": live_rules.get(h["rule_id"]) or h["rule_state"],
                    "live": h["rule_id"] in live_rules,
                    "link": f"/drp/api/rule?rule_id={quote(h['rule_id'])}" if h["rule_id"] else "",
                }
                for h in hops
            ],
            "problems": [p for h in hops for p in h["problems"]][:5],
        }
    if col == "site_qa" and report.get("site_qa"):
        out["verdict"] = report["site_qa"]["verdict"]
    return out


def _timing(row_tasks: list[TaskRow], durations: dict[str, float], now: dt.datetime) -> dict:
    """Elapsed seconds at the site, and an ETA from earlier runs: the typical time of each of its
    tasks not finished yet (their chain at a site is serial); None when a task has no history."""
    starts = [t.start_date for t in row_tasks if t.start_date]
    if not starts:
        return {"elapsed_s": 0.0, "eta_s": None}
    finished = all(t.state in DONE for t in row_tasks)
    ends = [t.end_date for t in row_tasks if t.end_date]
    until = max(ends) if finished and ends else now
    left = {t.task_id for t in row_tasks if t.state not in DONE}
    eta = None if any(tid not in durations for tid in left) else sum(durations[tid] for tid in left)
    return {"elapsed_s": round((until - min(starts)).total_seconds(), 1), "eta_s": eta}


def _storage(campaign: CampaignConfig, site: str, report: dict) -> dict:
    """The campaign's Rucio-registered data held at the site, per the ledger: what arrived there,
    and at a site other than the hub what it sent (its products stay until released), less what
    was released; against the site's storage quota (sites.yaml storage_tb). The hub's own inputs
    and products are not hops, so not counted."""
    hub = campaign.hub()
    held = 0
    for h in report.get("hops", []):
        if h["to"] == site or (h["from"] == site != hub):
            held += h["bytes"]
    held -= sum(r["bytes"] for r in report.get("released", []) if r["site"] == site)
    quota = campaign.sites_config.sites[site].storage_tb * TB
    return {"bytes": max(held, 0), "quota_bytes": quota, "fraction": max(held, 0) / quota}
