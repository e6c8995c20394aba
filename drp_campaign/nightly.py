"""The nightly summary: did tonight's run pass, per site and per hop, how long did each site take
against the last seven nights, and what regressed (issue #15, "a nightly run that reports").

Pure: the `nightly_summary` task (operators/nightly.py) hands in its run's task states, the
ledger's step records and hop balances, and the summaries of earlier nights; the summary is
written next to the run's report, posted through the alert channels and shown in the campaign view.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from . import settings
from .live_status import locate

NIGHTS = 7  # durations are compared with this many earlier nights
MIN_NIGHTS = 3  # fewer earlier nights than this: no duration regression is called
SLOWER = 1.5  # a site taking this many times its median of earlier nights is a regression
FAILED = frozenset({"failed", "upstream_failed"})


def summary_file(run_key: str) -> Path:
    return settings.work_dir() / "reports" / f"{run_key}-nightly.json"


def task_of(state_key: str, task_ids: set[str]) -> str:
    """The task id of a key of Airflow's task-state map (`FRDF.step1_0` for a mapped instance)."""
    if state_key in task_ids:
        return state_key
    base = re.sub(r"_\d+$", "", state_key)
    return base if base in task_ids else state_key


def site_durations(steps: list[dict]) -> dict[str, float]:
    """Seconds each site spent in its steps: per step its longest group (they run side by side)."""
    longest: dict[tuple[str, str], float] = {}
    for s in steps:
        key = (s["site"], s["step"])
        longest[key] = max(longest.get(key, 0.0), float(s["duration_s"]))
    out: dict[str, float] = {}
    for (site, _), seconds in longest.items():
        out[site] = out.get(site, 0.0) + seconds
    return out


def summarize(
    *,
    campaign: str,
    hub: str,
    sites: list[str],
    run_id: str,
    run_key: str,
    task_states: dict[str, str | None],
    steps: list[dict],
    hops: list[dict],
    earlier: list[dict],
) -> dict:
    """Tonight's summary. TASK_STATES: task id (mapped instances merged) -> worst state; STEPS:
    the ledger's step records; HOPS: its balances (hop, from, to, sent, arrived, problems);
    EARLIER: the summaries of earlier nights, newest first."""
    failed_at: dict[str, list[str]] = {site: [] for site in sites}
    for task_id, state in task_states.items():
        if state in FAILED:
            failed_at.setdefault(locate(task_id, hub)[0], []).append(f"{task_id} {state}")
    durations = site_durations(steps)
    last = earlier[0] if earlier else None
    nights = earlier[:NIGHTS]
    regressions: list[str] = []
    site_rows = []
    for site in sites:
        failed = sorted(failed_at.get(site, []))
        before = [n["sites"][site]["duration_s"] for n in nights if site in n.get("sites", {})]
        median = statistics.median(before) if before else None
        seconds = durations.get(site, 0.0)
        row = {
            "verdict": "FAIL" if failed else "PASS",
            "failed": failed,
            "duration_s": round(seconds, 1),
            "median_s": round(median, 1) if median is not None else None,
            "nights": len(before),
        }
        if failed and last and last.get("sites", {}).get(site, {}).get("verdict") == "PASS":
            regressions.append(f"{site} failed tonight ({failed[0]}), passed last night")
        if median and len(before) >= MIN_NIGHTS and seconds > SLOWER * median:
            regressions.append(
                f"{site} took {seconds:.0f} s, {seconds / median:.1f}x its median of the last {len(before)} nights "
                f"({median:.0f} s)"
            )
        site_rows.append((site, row))
    hop_rows = []
    for h in hops:
        ok = h["arrived"] == h["sent"] and not h["problems"]
        name = f"{h['hop']} {h['from']}->{h['to']}"
        hop_rows.append(
            (
                name,
                {
                    "verdict": "PASS" if ok else "FAIL",
                    "sent": h["sent"],
                    "arrived": h["arrived"],
                    "problems": h["problems"][:5],
                },
            )
        )
        if not ok and last and last.get("hops", {}).get(name, {}).get("verdict") == "PASS":
            regressions.append(f"hop {name} lost files tonight ({h['arrived']}/{h['sent']}), balanced last night")
    verdict = "PASS" if all(r["verdict"] == "PASS" for _, r in [*site_rows, *hop_rows]) else "FAIL"
    return {
        "campaign": campaign,
        "run_id": run_id,
        "run_key": run_key,
        "verdict": verdict,
        "sites": dict(site_rows),
        "hops": dict(hop_rows),
        "regressions": regressions,
        "nights_compared": len(nights),
    }


def text(summary: dict) -> str:
    """The summary as the alert channels carry it: one headline, then a line per site and problem."""
    lines = [
        f"Nightly {summary['campaign']} {summary['run_id']}: {summary['verdict']}"
        + (f", {len(summary['regressions'])} regression(s)" if summary["regressions"] else "")
    ]
    for site, row in summary["sites"].items():
        median = f" (median of {row['nights']} nights {row['median_s']:.0f} s)" if row["median_s"] else ""
        lines.append(f"  {site}: {row['verdict']} in {row['duration_s']:.0f} s{median}")
        lines += [f"    {f}" for f in row["failed"][:5]]
    lines += [
        f"  hop {name}: FAIL {r['arrived']}/{r['sent']}"
        for name, r in summary["hops"].items()
        if r["verdict"] != "PASS"
    ]
    lines += [f"  REGRESSION: {r}" for r in summary["regressions"]]
    return "\n".join(lines)


def earlier_summaries(run_keys: list[str]) -> list[dict]:
    """The summaries written for these earlier runs (newest first), skipping runs that have none."""
    out = []
    for key in run_keys:
        path = summary_file(key)
        if path.is_file():
            out.append(json.loads(path.read_text()))
    return out
