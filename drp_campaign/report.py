"""The campaign report: what ran where, what moved, whether the ledger balances, where outputs are."""

from __future__ import annotations

import json
from pathlib import Path

from . import settings
from .ledger import Ledger


def report_file(run_key: str) -> Path:
    return settings.work_dir() / "reports" / f"{run_key}.json"


def build_report(ledger: Ledger, campaign: str, run_key: str, hub_products: dict | None = None, hub_repo: str = "") -> dict:
    steps = ledger.step_records(run_key)
    balances = ledger.hop_balances(run_key)
    rules = {(r["hop"], r["src_site"], r["dst_site"]): r for r in ledger.rules(run_key)}
    return {
        "campaign": campaign,
        "run_key": run_key,
        "steps": [
            {k: (str(v) if k in ("started", "finished") else v) for k, v in s.items() if k not in ("campaign", "run_key")}
            for s in steps
        ],
        "hops": [
            {"hop": b.hop, "from": b.src_site, "to": b.dst_site, "sent": b.sent, "arrived": b.arrived,
             "bytes": b.arrived_bytes, "problems": b.problems,
             "rule_id": rules.get((b.hop, b.src_site, b.dst_site), {}).get("rule_id", ""),
             "rule_state": rules.get((b.hop, b.src_site, b.dst_site), {}).get("state", "")}
            for b in balances
        ],  # fmt: skip
        "ledger_balanced": all(b.balanced for b in balances),
        "released": [
            {"site": r["site"], "hop": r["hop"], "rse": r["rse"], "files": r["files"], "bytes": r["bytes"],
             "rules": r["rule_ids"], "at": str(r["released"])}
            for r in ledger.releases(run_key)
        ],  # fmt: skip
        "hub_repo": hub_repo,
        "hub_products": hub_products or {},
    }


def write_report(report: dict) -> Path:
    path = report_file(report["run_key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return path


def format_report(report: dict) -> str:
    lines = [f"Campaign {report['campaign']}  run {report['run_key']}", "", "Steps (site, step, group: state, quanta ok/total, seconds):"]
    for s in report["steps"]:
        accepted = f"  accepted failures {s['quanta_accepted']}" if s.get("quanta_accepted") else ""
        lines.append(
            f"  {s['site']:<11} {s['step']:<9} {s['group_label']:<5} {s['status']:<10} "
            f"{s['quanta_succeeded']:>4}/{s['quanta_total']:<4} {s['duration_s']:7.1f}s  attempts {s['attempts']}{accepted}"
        )
    total_accepted = sum(s.get("quanta_accepted", 0) for s in report["steps"])
    if total_accepted:
        lines.append(f"  {total_accepted} failed quanta accepted by the failure rules (configs/failure-rules.yaml)")
    lines += ["", "Datasets moved per hop:"]
    for h in report["hops"]:
        rule = f"  rule {h['rule_id']} {h['rule_state']}" if h.get("rule_id") else ""
        lines.append(f"  {h['hop']:<20} {h['from']:>10} -> {h['to']:<10} {h['arrived']:>5}/{h['sent']:<5} intact  {h['bytes']:>9} B{rule}")
        lines += [f"      {p}" for p in h["problems"][:10]]
    verdict = "BALANCED: every dataset sent arrived intact" if report["ledger_balanced"] else "UNBALANCED: see problems above"
    lines += ["", f"Ledger: {verdict}"]
    if report.get("released"):
        lines += ["", "Site copies released (safe at the hub's disk and tape):"]
        lines += [f"  {r['site']:<11} {r['hop']:<20} {r['rse']:<16} {r['files']:>5} files {r['bytes']:>9} B" for r in report["released"]]
    if report.get("hub_products"):
        lines += ["", f"Products at the hub ({report['hub_repo']}):"]
        lines += [f"  {t:<26} {n}" for t, n in sorted(report["hub_products"].items())]
    return "\n".join(lines)
