"""`drp-campaign plan`: plan a campaign from a plan file, show what it costs, write the campaign.

Light at import (cli.py builds its parser from this row): numpy and matplotlib load in `run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from drp_campaign.command import EXIT_OK, Command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plan", type=Path, metavar="PLAN.yaml", help="the plan (configs/plans/*.yaml)")
    parser.add_argument("--out", type=Path, metavar="CAMPAIGN.yaml", help="write the planned campaign here")
    parser.add_argument("--sites", type=Path, default=None, metavar="FILE", help="sites file (default: the plan's)")
    parser.add_argument(
        "--shares", choices=["capacity", "fixed"], help="override the plan's shares (fixed: sites.yaml work_share)"
    )
    parser.add_argument("--simulate", action="store_true", help="print the simulated campaign per site")
    parser.add_argument(
        "--compare", action="store_true", help="the fixed shares and the capacity-aware plan side by side"
    )
    parser.add_argument("--pictures", type=Path, metavar="DIR", help="write the sky map, Gantt and storage PNGs here")
    parser.add_argument("--site-down", metavar="SITE", help="what-if: SITE down for --days from --from-day")
    parser.add_argument("--from-day", type=float, default=0.0, metavar="D", help="the outage's first day (default 0)")
    parser.add_argument("--days", type=float, default=7.0, metavar="N", help="how many days it lasts (default 7)")


def run(args: argparse.Namespace) -> int:
    from . import pictures
    from .assign import make_sky, plan_tracts, site_down
    from .campaign_file import dag_caveat, write_campaign
    from .fits import check_fits
    from .plan_config import load_plan
    from .report import compare, headline, outage_report, report

    plan = load_plan(args.plan, args.sites)
    if args.shares:
        plan = plan.with_shares(args.shares)
    sky = make_sky(plan)
    planned = plan_tracts(plan, sky)
    print(report(planned) if args.simulate else headline(planned))
    if args.compare:
        fixed = planned if plan.shares is not None else plan_tracts(plan.with_shares("fixed"), sky)
        capacity = planned if plan.shares is None else plan_tracts(plan.with_shares("capacity"), sky)
        print(compare(fixed, capacity, ("fixed shares", "capacity-aware")))
    if args.site_down:
        wait, replan = site_down(planned, args.site_down, args.from_day, args.days)
        print(outage_report(planned, args.site_down, args.from_day, args.days, wait, replan))
    if args.out:
        check_fits(planned)  # before anything is written
    if args.pictures:
        for path in pictures.draw_all(planned, args.pictures):
            print(f"wrote {path}")
    if args.out:
        campaign = write_campaign(planned, args.out)
        print(f"wrote {args.out}: campaign {campaign.name}, {len(campaign.tracts)} sites, loads and validates")
        if caveat := dag_caveat(plan):
            print(f"note: {caveat}")
    return EXIT_OK


COMMANDS = [
    Command(
        "plan",
        "assign tracts to sites (capacity-aware or fixed shares), simulate the campaign, write its YAML",
        _arguments,
        run,
    ),
]
