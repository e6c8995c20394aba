"""Controller overhead of a campaign run in real Airflow.

    make benchmark                       # or: scripts/with-env.sh python benchmarks/controller_overhead.py CAMPAIGN [RUN_ID]

Runs the campaign (or reads an existing run), then prints

    overhead = campaign wall time / sum, along the critical path, of the time the steps ran

where a step's time is the wall time of its pipetask process (from the ledger) and, for a step
split into groups at a site, the longest group (groups run side by side). The critical path is the
longest such path through the campaign graph; hops count as zero step time, so the time spent
moving data, scheduling, starting workers and waiting is all in the overhead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time

from drp_campaign.airflow_client import AirflowClient
from drp_campaign.config import load_campaign
from drp_campaign.graph import build_graph, run_key
from drp_campaign.ledger import Ledger


def critical_path(campaign, step_records: list[dict]) -> tuple[float, list[str]]:
    """Longest path (seconds of step time) through the graph, and the nodes on it."""
    graph = build_graph(campaign)
    longest_group: dict[tuple[str, str], float] = {}
    for r in step_records:
        k = (r["step"], r["site"])
        longest_group[k] = max(longest_group.get(k, 0.0), r["duration_s"])
    sites = campaign.campaign_sites()
    best: dict[tuple[str, str | None], tuple[float, list[str]]] = {}

    def finish(name: str, site: str | None) -> tuple[float, list[str]]:
        key = (name, site) if (name, site) in best else (name, None)
        return best[key]

    for stage in graph.stages.values():
        if stage.is_global_step:
            deps = [finish(d, s) for d in stage.after for s in sites]
            start = max(deps, default=(0.0, []))
            t = longest_group.get((stage.name, stage.site), 0.0)
            best[(stage.name, None)] = (start[0] + t, [*start[1], f"{stage.site}.{stage.name} {t:.1f}s"])
            continue
        for site in sites:
            deps = [finish(d, site) for d in stage.after]
            start = max(deps, default=(0.0, []))
            t = longest_group.get((stage.name, site), 0.0) if stage.is_site_step else 0.0
            label = f"{site}.{stage.name} {t:.1f}s" if stage.is_site_step else f"{site}.{stage.name} (hop)"
            best[(stage.name, site)] = (start[0] + t, [*start[1], label])
    return max(best.values())


def run_campaign(client: AirflowClient, campaign) -> str:
    dag_id = campaign.dag_id()
    client.wait_for_dag(dag_id)
    client.unpause(dag_id)
    run_id = client.trigger(dag_id)
    print(f"running {dag_id} ({run_id}) ...", flush=True)
    state = client.follow(dag_id, run_id, on_progress=None)
    if state != "success":
        sys.exit(f"run {run_id} ended {state}: no overhead figure for a failed run")
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("campaign")
    parser.add_argument("run_id", nargs="?", help="measure an existing run instead of starting one")
    args = parser.parse_args()
    campaign = load_campaign(args.campaign)
    client = AirflowClient()
    if args.run_id:
        run_id = args.run_id
    else:
        subprocess.run(["drp-campaign", "seed", args.campaign], check=True, stdout=subprocess.DEVNULL)
        t0 = time.perf_counter()
        run_id = run_campaign(client, campaign)
        print(f"measured from the client: {time.perf_counter() - t0:.1f} s trigger-to-done")
    run = client.dag_run(campaign.dag_id(), run_id)
    wall = (dt.datetime.fromisoformat(run["end_date"]) - dt.datetime.fromisoformat(run["start_date"])).total_seconds()
    records = Ledger().step_records(run_key(run_id))
    step_seconds, path = critical_path(campaign, records)
    all_steps = sum(r["duration_s"] for r in records)
    print(f"campaign {campaign.name}, run {run_id}")
    print(f"  step runs recorded:            {len(records)} (sum of all step time {all_steps:.1f} s)")
    print(f"  critical path:                 {' -> '.join(path)}")
    print(f"  step time on critical path:    {step_seconds:.1f} s")
    print(f"  campaign wall time (Airflow):  {wall:.1f} s")
    print(f"  controller overhead ratio:     {wall / step_seconds:.2f}  (wall / critical-path step time)")


if __name__ == "__main__":
    main()
