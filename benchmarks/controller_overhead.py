"""Controller overhead of a campaign run in real Airflow.

    make benchmark
    # or: scripts/with-env.sh python benchmarks/controller_overhead.py CAMPAIGN [RUN_ID]

Runs the campaign (or reads an existing run), then prints

    overhead = campaign wall time / sum, along the critical path, of the time the steps ran

where a step's time is the wall time of its BPS workflow (from the ledger) and, for a step
split into groups at a site, the longest group (groups run side by side). The critical path is the
longest such path through the campaign graph; hops count as zero step time, so the time spent
moving data, scheduling, starting workers and waiting is all in the overhead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time

from drp_campaign.airflow_client import AirflowClient
from drp_campaign.config import load_campaign
from drp_campaign.graph import build_graph, run_key
from drp_campaign.ledger import Ledger


def critical_path(campaign, step_records: list[dict]) -> tuple[float, list[tuple[str, str, float | None]]]:
    """Longest path (seconds of step time) through the graph.

    Returns (total, [(site, stage, step seconds or None for a hop)]).
    """
    graph = build_graph(campaign)
    longest_group: dict[tuple[str, str], float] = {}
    for r in step_records:
        k = (r["step"], r["site"])
        longest_group[k] = max(longest_group.get(k, 0.0), r["duration_s"])
    sites = campaign.campaign_sites()
    best: dict[tuple[str, str | None], tuple[float, list]] = {}

    def finish(name: str, site: str | None) -> tuple[float, list]:
        return best[(name, site)] if (name, site) in best else best[(name, None)]

    for stage in graph.stages.values():
        if stage.is_global_step:
            start = max((finish(d, s) for d in stage.after for s in sites), default=(0.0, []))
            t = longest_group.get((stage.name, stage.site), 0.0)
            best[(stage.name, None)] = (start[0] + t, [*start[1], (stage.site, stage.name, t)])
            continue
        for site in sites:
            start = max((finish(d, site) for d in stage.after), default=(0.0, []))
            if stage.is_site_step:
                t = longest_group.get((stage.name, site), 0.0)
                best[(stage.name, site)] = (start[0] + t, [*start[1], (site, stage.name, t)])
            elif site == graph.hub:  # the hub moves nothing to itself
                best[(stage.name, site)] = start
            else:
                best[(stage.name, site)] = (start[0], [*start[1], (site, stage.name, None)])
    return max(best.values(), key=lambda v: v[0])


def airflow_time_on_path(path, task_states) -> tuple[float, float]:
    """Along the path: Airflow task seconds of the steps (longest group) and of the hops' five tasks."""
    durations: dict[str, list[float]] = {}
    for t in task_states:
        durations.setdefault(t.task_id, []).append(t.duration or 0.0)
    steps = hops = 0.0
    for site, stage, step_seconds in path:
        if step_seconds is None:
            hops += sum(max(v) for k, v in durations.items() if k.startswith(f"{site}.{stage}."))
        else:
            steps += max(durations.get(f"{site}.{stage}", [0.0]))
    return steps, hops


def run_campaign(client: AirflowClient, campaign) -> str:
    dag_id = campaign.dag_id()
    client.wait_for_dag(dag_id)
    client.unpause(dag_id)
    # No human in a benchmark: review gates off for the run (by_hand.py has none either).
    run_id = client.trigger(dag_id, {"review_gates": False} if campaign.review_gates else None)
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
    step_tasks, hop_tasks = airflow_time_on_path(path, client.task_states(campaign.dag_id(), run_id))
    all_steps = sum(r["duration_s"] for r in records)
    cores = os.cpu_count() or 1
    floor = max(step_seconds, all_steps / cores)
    labels = [f"{site}.{stage} {'(hop)' if t is None else f'{t:.1f}s'}" for site, stage, t in path]
    print(f"campaign {campaign.name}, run {run_id}")
    print(f"  critical path: {' -> '.join(labels)}")
    print(f"  {'step time on the critical path (BPS workflow wall time)':<64} {step_seconds:7.1f} s")
    print(
        f"  {"+ step tasks' own time around BPS (submit, wait, report, ledger)":<64} {step_tasks - step_seconds:7.1f} s"
    )
    print(f"  {'+ hop tasks on the path (register .. verify)':<64} {hop_tasks:7.1f} s")
    print(f"  {'+ scheduling and queueing between tasks':<64} {wall - step_tasks - hop_tasks:7.1f} s")
    print(f"  {'= campaign wall time (Airflow run start to end)':<64} {wall:7.1f} s")
    print(f"  all step time, every site and group: {all_steps:.1f} s over {len(records)} step runs on {cores} cores")
    print(f"controller overhead = wall / critical-path step time:  {wall / step_seconds:.2f}")
    print(f"against the machine's floor max(critical path, all step time / cores) = {floor:.1f} s: {wall / floor:.2f}")


if __name__ == "__main__":
    main()
