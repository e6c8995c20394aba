"""The campaign report: what ran where, what moved, whether the ledger balances, where outputs are.

Products out: what is at tape, at which IDACs, and which site copies were released where. The
ledger keys a tape or IDAC copy by its RSE (`dst_site`); the campaign config says which RSE is
which, so the report is given it when it has it (the campaign view shows the ledger alone).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import settings
from .hops import hop_ends, idac_rse, way
from .ledger import Ledger

if TYPE_CHECKING:
    from .config import CampaignConfig


def report_file(run_key: str) -> Path:
    return settings.work_dir() / "reports" / f"{run_key}.json"


def site_qa_dir(run_key: str) -> Path:
    """Where the site-independence QA of a run writes its JSON report and one PNG per tract."""
    return settings.work_dir() / "reports" / f"{run_key}-site-qa"


def build_report(
    ledger: Ledger,
    campaign: str,
    run_key: str,
    hub_products: dict | None = None,
    hub_repo: str = "",
    config: CampaignConfig | None = None,
) -> dict:
    steps = ledger.step_records(run_key)
    balances = ledger.hop_balances(run_key)
    rules = {(r["hop"], r["src_site"], r["dst_site"]): r for r in ledger.rules(run_key)}
    at_tape, at_idacs = _products_out(config, balances, rules) if config else ([], [])
    return {
        "campaign": campaign,
        "run_key": run_key,
        "steps": [
            {
                k: (str(v) if k in ("started", "finished") else v)
                for k, v in s.items()
                if k not in ("campaign", "run_key")
            }
            for s in steps
        ],
        "hops": [
            {
                "hop": b.hop,
                "from": b.src_site,
                "to": b.dst_site,
                "sent": b.sent,
                "arrived": b.arrived,
                "bytes": b.arrived_bytes,
                "problems": b.problems,
                "rule_id": rules.get((b.hop, b.src_site, b.dst_site), {}).get("rule_id", ""),
                "rule_state": rules.get((b.hop, b.src_site, b.dst_site), {}).get("state", ""),
            }
            for b in balances
        ],
        "ledger_balanced": all(b.balanced for b in balances),
        "released": [
            {
                "site": r["site"],
                "hop": r["hop"],
                "rse": r["rse"],
                "files": r["files"],
                "bytes": r["bytes"],
                "rules": r["rule_ids"],
                "at": str(r["released"]),
            }
            for r in ledger.releases(run_key)
        ],
        "at_tape": at_tape,
        "at_idacs": at_idacs,
        "hub_repo": hub_repo,
        "hub_products": hub_products or {},
        "site_qa": site_qa_summary(ledger.site_qa(run_key), run_key),
        "reviews": [
            {"step": r["step"], "decision": r["decision"], "by": r["decided_by"], "at": str(r["decided"])}
            for r in ledger.reviews(run_key)
        ],
        # Tracts moved from a down site to another (drp-campaign failover): processed there instead.
        "failovers": [
            {
                "tract": f["tract"],
                "from": f["from_site"],
                "to": f["to_site"],
                "by": f["moved_by"],
                "at": str(f["moved"]),
            }
            for f in ledger.failovers(run_key)
        ],
    }


def site_qa_summary(checks: list[dict], run_key: str) -> dict:
    """Per overlap tract: which two sites, how many quantities compared, which differ beyond their
    tolerance (the ledger's rows, written by the site_qa task); empty when nothing was compared."""
    tracts: dict[int, dict] = {}
    for c in checks:
        entry = tracts.setdefault(
            c["tract"], {"tract": c["tract"], "site_a": c["site_a"], "site_b": c["site_b"], "compared": 0, "failed": []}
        )
        entry["compared"] += 1
        if not c["ok"]:
            entry["failed"].append(
                {k: c[k] for k in ("dataset_type", "quantity", "value_a", "value_b", "tolerance", "note")}
            )
    if not tracts:
        return {}
    return {
        "verdict": "pass" if not any(t["failed"] for t in tracts.values()) else "fail",
        "tracts": list(tracts.values()),
        "report_dir": str(site_qa_dir(run_key)),
    }


def _products_out(config: CampaignConfig, balances, rules: dict) -> tuple[list[dict], list[dict]]:
    """Per to_tape hop: its tape copy, and each IDAC it names (listed even before, or without, a
    rule: an IDAC whose copy failed shows as such)."""
    hub = config.hub()
    by_pair = {(b.hop, b.dst_site): b for b in balances if b.src_site == hub}

    def copy(hop: str, rse: str) -> dict:
        bal, rule = by_pair.get((hop, rse)), rules.get((hop, hub, rse), {})
        return {
            "hop": hop,
            "rse": rse,
            "files": bal.arrived if bal else 0,
            "sent": bal.sent if bal else 0,
            "bytes": bal.arrived_bytes if bal else 0,
            "rule_id": rule.get("rule_id", ""),
            "rule_state": rule.get("state", ""),
        }

    tape_hops = [name for name, hop in config.hops.items() if way(hop.direction).to_tape]
    at_tape = [copy(name, hop_ends(config, name, hub).destination_rse) for name in tape_hops]
    at_idacs = [
        {"idac": idac, **copy(name, idac_rse(config, idac))} for name in tape_hops for idac in config.hops[name].idacs
    ]
    return at_tape, at_idacs


def write_report(report: dict) -> Path:
    path = report_file(report["run_key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return path


def format_report(report: dict) -> str:
    lines = [
        f"Campaign {report['campaign']}  run {report['run_key']}",
        "",
        "Steps (site, step, group: state, quanta ok/total, seconds):",
    ]
    for s in report["steps"]:
        accepted = f"  accepted failures {s['quanta_accepted']}" if s.get("quanta_accepted") else ""
        lines.append(
            f"  {s['site']:<11} {s['step']:<9} {s['group_label']:<5} {s['status']:<10} "
            f"{s['quanta_succeeded']:>4}/{s['quanta_total']:<4} {s['duration_s']:7.1f}s  "
            f"attempts {s['attempts']}{accepted}"
        )
    total_accepted = sum(s.get("quanta_accepted", 0) for s in report["steps"])
    if total_accepted:
        lines.append(f"  {total_accepted} failed quanta accepted by the failure rules (configs/failure-rules.yaml)")
    lines += ["", "Datasets moved per hop:"]
    for h in report["hops"]:
        rule = f"  rule {h['rule_id']} {h['rule_state']}" if h.get("rule_id") else ""
        lines.append(
            f"  {h['hop']:<20} {h['from']:>10} -> {h['to']:<12} "
            f"{h['arrived']:>5}/{h['sent']:<5} intact  {h['bytes']:>9} B{rule}"
        )
        lines += [f"      {p}" for p in h["problems"][:10]]
    verdict = (
        "BALANCED: every dataset sent arrived intact" if report["ledger_balanced"] else "UNBALANCED: see problems above"
    )
    lines += ["", f"Ledger: {verdict}"]
    if report.get("at_tape"):
        lines += ["", "At tape (hop, RSE: files intact/registered, bytes, rule):"]
        lines += [
            f"  {t['hop']:<20} {t['rse']:<16} {t['files']:>5}/{t['sent']:<5} files {t['bytes']:>9} B  "
            f"rule {t['rule_id'] or '(none)'} {t['rule_state']}"
            for t in report["at_tape"]
        ]
    if report.get("at_idacs"):
        lines += ["", "At IDACs (IDAC, hop, RSE: files intact/registered, bytes, rule):"]
        lines += [
            f"  {i['idac']:<11} {i['hop']:<20} {i['rse']:<16} {i['files']:>5}/{i['sent']:<5} files {i['bytes']:>9} B  "
            f"rule {i['rule_id'] or '(none: see the to_' + i['idac'] + ' task)'} {i['rule_state']}"
            for i in report["at_idacs"]
        ]
    if report.get("released"):
        lines += ["", "Site copies released (site, copy of hop, RSE, files, bytes; safe at the hub's disk and tape):"]
        lines += [
            f"  {r['site']:<11} {r['hop']:<20} {r['rse']:<16} {r['files']:>5} files {r['bytes']:>9} B"
            for r in report["released"]
        ]
    if report.get("reviews"):
        lines += ["", "Review gates (step: decision, by whom, when):"]
        lines += [f"  {r['step']:<9} {r['decision']:<9} {r['by']}  {r['at']}" for r in report["reviews"]]
    if qa := report.get("site_qa"):
        lines += ["", f"Site-independence QA: {qa['verdict'].upper()} (report and plots in {qa['report_dir']}):"]
        for t in qa["tracts"]:
            lines.append(
                f"  tract {t['tract']:<5} {t['site_a']} (product) vs {t['site_b']}: "
                f"{t['compared'] - len(t['failed'])}/{t['compared']} quantities within tolerance"
            )
            lines += [
                f"      {f['dataset_type']} {f['quantity']}: {f['value_a']} vs {f['value_b']} "
                f"({f['tolerance']}) {f['note']}"
                for f in t["failed"][:10]
            ]
    if report.get("hub_products"):
        lines += ["", f"Products at the hub ({report['hub_repo']}):"]
        lines += [f"  {t:<26} {n}" for t, n in sorted(report["hub_products"].items())]
    return "\n".join(lines)
