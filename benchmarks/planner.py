"""What the planner costs and what its plans cost (issue #16).

    make bench-plan     # scripts/with-env.sh python benchmarks/planner.py [--pictures docs/plan]

1. Planner wall time and memory for DR1 (8,000 tracts) and DR2 (10,000 tracts) at the four sites:
   the capacity-aware plan end to end (sky map, assignment rounds, each round's simulation),
   median of 5; peak memory of one plan with tracemalloc, and the process's peak RSS.
2. Makespan against the lower bound (total core-hours / total cores), the fixed shares
   (sites.yaml work_share) and the capacity-aware plan side by side, DR1 and DR2; each site's
   busy time and storage peak against its quota; link volumes.
3. What-ifs: products held at the sites until their last step (what the DAG's return hop does
   today); UKDF_LANCS on a 10 Gbps link (its storage caps its share); a site down for 10 or 60 days.
With --pictures DIR: the sky map, Gantt chart and storage PNGs of DR1 (both plans) and DR2.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

from drp_campaign.planner.assign import plan_tracts, site_down
from drp_campaign.planner.fits import check_fits
from drp_campaign.planner.plan_config import Plan, load_plan
from drp_campaign.planner.report import compare, gap, outage_report
from drp_campaign.settings import CONFIGS_DIR

PLANS = CONFIGS_DIR / "plans"
REPEATS = 5


def timed(plan: Plan) -> tuple[float, object]:
    times, planned = [], None
    for _ in range(REPEATS):
        started = time.perf_counter()
        planned = plan_tracts(plan)
        times.append(time.perf_counter() - started)
    return statistics.median(times), planned


def peak_memory_mb(plan: Plan) -> float:
    tracemalloc.start()
    plan_tracts(plan)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def fits(planned) -> str:
    try:
        check_fits(planned)
        return "fits"
    except Exception as exc:  # noqa: BLE001 - the refusal is the figure
        return f"refused: {exc.key_path}: {exc.problem.split(';')[0]}"


def with_doc(plan: Plan, **changes) -> Plan:
    return replace(plan, doc=plan.doc.model_copy(update=changes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=Path, metavar="DIR", help="write the PNGs here (e.g. docs/plan)")
    args = parser.parse_args()
    print("1. planner cost (capacity-aware plan: sky map, assignment rounds with their simulations)")
    planned = {}
    for name in ("dr1", "dr2"):
        plan = load_plan(PLANS / f"{name}.yaml")
        wall, planned[name] = timed(plan)
        print(
            f"  {name}: {len(planned[name].assignment.sky.map):,} tracts, {len(plan.sites)} sites: "
            f"{wall:.3f} s (median of {REPEATS}), tracemalloc peak {peak_memory_mb(plan):.1f} MB"
        )
    print(f"  process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

    print("\n2. makespan against the lower bound, fixed shares vs capacity-aware")
    fixed = {}
    for name in ("dr1", "dr2"):
        fixed[name] = plan_tracts(planned[name].plan.with_shares("fixed"))
        print(f"\n{name.upper()}")
        print(compare(fixed[name], planned[name], ("fixed shares", "capacity-aware")))
        print(f"fixed shares: {fits(fixed[name])}")
        print(f"capacity-aware: {fits(planned[name])}; {gap(planned[name])}")

    print("\n3. what-ifs")
    for name in ("dr1", "dr2"):
        today = plan_tracts(with_doc(planned[name].plan, products_home="after_site"))
        hub = today.simulation.sites[today.plan.hub]
        print(
            f"  {name}, products home after each site's step5 (the DAG's return hop today): "
            f"{hub.peak_tb:,.0f} TB at {today.plan.hub} (quota {hub.quota_tb:,.0f}); {fits(today)}"
        )
    plan = planned["dr1"].plan
    slow = plan_tracts(with_doc(plan, links_gbps={**plan.doc.links_gbps, "USDF-UKDF_LANCS": 10.0}))
    lancs = slow.simulation.sites["UKDF_LANCS"]
    print(
        f"  dr1, UKDF_LANCS on 10 Gbps: held to {slow.assignment.fraction('UKDF_LANCS'):.3f} of the work by its "
        f"storage (peak {lancs.peak_tb:,.0f} of {lancs.quota_tb:,.0f} TB); makespan / bound {slow.simulation.ratio:.3f}"
    )
    for site, day, days in (("UKDF_RAL", 40, 10), ("UKDF_RAL", 40, 60), ("FRDF", 100, 10)):
        wait, replan = site_down(planned["dr1"], site, day, days)
        print("  dr1, " + outage_report(planned["dr1"], site, day, days, wait, replan).replace("\n", "\n  "))

    if args.pictures:
        from drp_campaign.planner.pictures import draw_all

        for p in (planned["dr1"], fixed["dr1"], planned["dr2"]):
            for path in draw_all(p, args.pictures):
                print(f"wrote {path}")


if __name__ == "__main__":
    main()
