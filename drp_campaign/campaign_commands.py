"""Subcommands that act on a campaign: seed the sites, run it in Airflow, read its ledger/report.

Each is a `Command` (command.py) for the table in cli.py. They import Airflow-side and HTTP clients lazily so
`drp-campaign validate` stays light.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

from drp_campaign.command import EXIT_OK, Command
from drp_campaign.config import load_campaign

EXIT_FAILED = 1


def _campaign_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("campaign", type=Path, metavar="CAMPAIGN.yaml")
    parser.add_argument(
        "--sites-file", type=Path, default=None, metavar="FILE", help="sites file (default: configs/sites.yaml)"
    )


# --- seed ----------------------------------------------------------------------------------------


def seed(args: argparse.Namespace) -> int:
    """Create each campaign site's Butler repo (if missing). With a place hop the hub gets the whole
    synthetic sky's inputs and the other sites only its records (their inputs are placed by the
    campaign); without one each site gets the raws of its own tracts."""
    from drp_campaign.stack import run_stack

    campaign = load_campaign(args.campaign, args.sites_file)
    placed = campaign.place_hop() is not None
    for site in [campaign.hub(), *[s for s in campaign.campaign_sites() if s != campaign.hub()]]:
        cfg = campaign.sites_config.sites[site]
        mode = (["--all-tracts"] if site == campaign.hub() else ["--no-data"]) if placed else []
        result = run_stack(
            cfg,
            "seed-repo",
            ["--campaign", str(campaign.file), "--site", site, "--repo", str(cfg.butler_repo_path()), *mode],
            log=lambda line: None,
        )
        state = "created" if result.get("created") else "already there"
        held = ", ".join(f"{n} {c}" for n, c in (result.get("inputs_put") or {}).items())
        what = (
            f"inputs put now: {held or 'none'}"
            if "--no-data" not in mode
            else "no data: inputs are placed from the hub"
        )
        print(f"  {site:<11} {cfg.butler_repo_path()}  ({state}; {what})")
    return EXIT_OK


# --- run -----------------------------------------------------------------------------------------


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    _campaign_argument(parser)
    parser.add_argument("--sites", default="", help="comma-separated sites to process (default: all)")
    parser.add_argument("--tracts", default="", help="comma-separated tracts to process (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="build quantum graphs only")
    parser.add_argument(
        "--approve-gates",
        action="store_true",
        help="approve each review gate when it asks (as this user), instead of waiting for someone in the UI",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the run (default 3600)")


def run(args: argparse.Namespace) -> int:
    """Trigger the campaign's DAG over Airflow's REST API, follow it, print the summary."""
    from drp_campaign.airflow_client import AirflowClient
    from drp_campaign.graph import build_graph, run_key

    campaign = load_campaign(args.campaign, args.sites_file)
    dag_id = campaign.dag_id()
    conf: dict = {"dry_run": args.dry_run}
    if args.sites:
        conf["sites"] = [s.strip() for s in args.sites.split(",") if s.strip()]
    if args.tracts:
        conf["tracts"] = [int(t) for t in args.tracts.split(",") if t.strip()]
    client = AirflowClient()
    client.wait_for_dag(dag_id)
    client.unpause(dag_id)
    run_id = client.trigger(dag_id, conf)
    print(f"triggered {dag_id} run {run_id} (conf {json.dumps(conf)}); following it:")

    def gate_asks(task) -> None:
        if args.approve_gates:
            client.decide(dag_id, run_id, task.task_id, approve=True)
            print(f"  {task.label:<40} approved by {client.username} (--approve-gates)")
        else:
            print(
                f"  {task.label:<40} waits for a decision: approve or reject it in the UI (Browse > Required Actions)"
            )

    state = client.follow(dag_id, run_id, timeout_s=args.timeout, on_awaiting_input=gate_asks)
    print()
    print(
        task_summary(client.task_states(dag_id, run_id), campaign.campaign_sites(), list(build_graph(campaign).stages))
    )
    print()
    print_report(run_key(run_id))
    return EXIT_OK if state == "success" else EXIT_FAILED


def task_summary(states, sites: list[str], stage_order: list[str]) -> str:
    """A table: one row per stage (step or hop), one column per site; mapped groups and a hop's
    five tasks fold into one cell, e.g. `success x2` or `failed 1, success 1`."""
    cells: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for t in states:
        site, _, rest = t.task_id.partition(".")
        if site not in sites:
            site, rest = "", t.task_id
        cells[rest.split(".")[0]][site].append(t.state or "none")

    def fold(st: list[str]) -> str:
        if not st:
            return "-"
        if len(set(st)) == 1:
            return st[0] + (f" x{len(st)}" if len(st) > 1 else "")
        return ", ".join(f"{s} {st.count(s)}" for s in sorted(set(st)))

    width = max(len(s) for s in sites) + 12
    lines = [
        "Task states (rows: steps and hops; mapped groups and hop tasks folded):",
        f"  {'':<20}" + "".join(f"{s:<{width}}" for s in sites),
    ]
    order = ["check_inputs", *stage_order, "campaign_report"]
    for stage, by_site in sorted(cells.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        if "" in by_site:
            lines.append(f"  {stage:<20}{fold(by_site['']):<{width}}")
        else:
            lines.append(f"  {stage:<20}" + "".join(f"{fold(by_site.get(s, [])):<{width}}" for s in sites))
    return "\n".join(lines)


def print_report(key: str) -> None:
    from drp_campaign.report import format_report, report_file

    path = report_file(key)
    if path.exists():
        print(format_report(json.loads(path.read_text())))
        print(f"\nReport: {path}")
    else:
        print(f"(no campaign report yet for {key}: the run did not reach campaign_report)")
        _print_ledger(key)


# --- ledger --------------------------------------------------------------------------------------


def _ledger_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", help="the Airflow run id (as shown in the UI) or its run key")


def _print_ledger(run_id: str) -> bool:
    from drp_campaign.ledger import Ledger

    ledger = Ledger()
    known = ledger.campaign_run(run_id)
    key = known["run_key"] if known else run_id
    balances = ledger.hop_balances(key)
    if not balances:
        print(f"no ledger entries for run {run_id}")
        return known is not None
    print(f"Ledger for run {key}:")
    for b in balances:
        mark = "ok " if b.balanced else "BAD"
        print(
            f"  {mark} {b.hop:<20} {b.src_site:>10} -> {b.dst_site:<10} "
            f"sent {b.sent:>5} ({b.sent_bytes} B)  arrived intact {b.arrived:>5}"
        )
        for p in b.problems[:50]:
            print(f"        {p}")
    ok = all(b.balanced for b in balances)
    print(
        "Ledger BALANCED: every dataset sent arrived intact"
        if ok
        else "LEDGER UNBALANCED: datasets above were lost or damaged"
    )
    return ok


def ledger(args: argparse.Namespace) -> int:
    """Print every hop's sent/arrived counts and checksums; exit 1 when anything is not intact."""
    return EXIT_OK if _print_ledger(args.run_id) else EXIT_FAILED


# --- inventory -----------------------------------------------------------------------------------

EXIT_BAD_INPUT = 2


def _inventory_arguments(parser: argparse.ArgumentParser) -> None:
    _campaign_argument(parser)
    parser.add_argument(
        "--run",
        dest="run_id",
        default=None,
        metavar="RUN",  # not `run`: that is the command's function
        help="Airflow run id or run key (default: the newest run Rucio knows for the campaign)",
    )
    parser.add_argument("--json", action="store_true", help="print the inventory (its rows, run key, verdict) as JSON")
    parser.add_argument(
        "--rucio-connection",
        type=Path,
        default=None,
        metavar="FILE",
        help="Rucio connection JSON (default: $DRP_WORK_DIR/rucio/connection.json of the local Rucio)",
    )


def inventory(args: argparse.Namespace) -> int:
    """Per destination and dataset type: expected / present / verified, from Rucio and the Butlers
    (not the ledger). Exit 0 when everything balances, 1 when not, 2 for a run Rucio does not know
    or a connection file that cannot be read."""
    import sys

    from drp_campaign.inventory import BadConnectionFile, UnknownRun, format_inventory, inventory_from

    campaign = load_campaign(args.campaign, args.sites_file)
    try:
        inv = inventory_from(campaign, args.rucio_connection, args.run_id)
    except (UnknownRun, BadConnectionFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(inv.to_dict(), indent=1) if args.json else format_inventory(inv))
    return EXIT_OK if inv.balanced else EXIT_FAILED


# --- review ----------------------------------------------------------------------------------


def _review_arguments(parser: argparse.ArgumentParser) -> None:
    _campaign_argument(parser)
    parser.add_argument("run_id", metavar="RUN", help="the Airflow run id (as in the UI)")
    parser.add_argument("--step", required=True, help="the gated step (one of the campaign's review_gates)")
    decision = parser.add_mutually_exclusive_group(required=True)
    decision.add_argument("--approve", action="store_true", help="the step runs")
    decision.add_argument("--reject", action="store_true", help="the step and what follows do not run")
    parser.add_argument(
        "--user", default=None, help="the Airflow user deciding (default: $DRP_AIRFLOW_USER or operator)"
    )


def review(args: argparse.Namespace) -> int:
    """Answer a review gate from the command line, as the UI's Required Actions page does."""
    import sys

    from drp_campaign.airflow_client import DEFAULT_USER, AirflowApiError, AirflowClient

    campaign = load_campaign(args.campaign, args.sites_file)
    if args.step not in campaign.review_gates:
        gates = ", ".join(campaign.review_gates) or "none"
        print(
            f"error: {args.step!r} has no review gate in campaign {campaign.name} (its gates: {gates})", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    client = AirflowClient(username=args.user or os.environ.get("DRP_AIRFLOW_USER") or DEFAULT_USER)
    task_id = f"{campaign.hub()}.review_{args.step}"
    try:
        client.decide(campaign.dag_id(), args.run_id, task_id, approve=args.approve)
    except AirflowApiError as exc:
        print(f"error: {task_id} of run {args.run_id}: {exc} (is it waiting for a decision?)", file=sys.stderr)
        return EXIT_FAILED
    print(f"{task_id} of run {args.run_id}: {'approved' if args.approve else 'rejected'} by {client.username}")
    return EXIT_OK


COMMANDS = [
    Command("seed", "create each site's Butler repo with synthetic raws for its tracts", _campaign_argument, seed),
    Command("run", "trigger a campaign in Airflow, follow it and print the summary", _run_arguments, run),
    Command(
        "ledger",
        "print a campaign run's ledger; exit 1 if anything sent did not arrive intact",
        _ledger_arguments,
        ledger,
    ),
    Command(
        "review",
        "approve or reject a review gate of a campaign run (a step waiting for a human decision)",
        _review_arguments,
        review,
    ),
    Command(
        "inventory",
        "per site and dataset type, what Rucio and the Butlers hold of a run; exit 1 unless it balances",
        _inventory_arguments,
        inventory,
    ),
]
