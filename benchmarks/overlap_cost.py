"""What the site-independence QA's overlap costs: core time and bytes moved per overlap tract, and
for a campaign with 5% and 10% of its tracts processed twice (issue #14).

    make bench-overlap        # scripts/with-env.sh python benchmarks/overlap_cost.py CAMPAIGN [RUN_ID]

Measured on a finished run of a campaign with overlap tracts (by default it triggers one of
configs/campaigns/test-3x3.yaml in the running Airflow and waits for it):
- core time: each step group's BPS run wall time x the cores each quantum asks for, from the
  ledger; an overlap tract's (its `overlap-t<T>` groups) against the mean per own tract;
- bytes: what the second site needs placed for the tract beyond what its own tracts already
  brought (the place hop's own selection, `export-inputs`, with and without the tract: shared
  calibrations and reference shards are not counted twice), plus the compared outputs it sends
  home (the ledger's rows under the run's overlap root); against the bytes the campaign moves
  between sites per own tract (place, fan-in and fan-out hops).
An overlap tract whose second site is the hub moves nothing (the hub holds every input, and its
copy is home). The fractions scale those per-tract figures (bytes: as if every second site were
another site than the hub); DR1 and DR2 core-hours follow from the technote's
totals (40M core-h over 8,000 tracts, 80M over 10,000), assuming an overlap tract costs there
what it costs here relative to an own tract.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from controller_overhead import run_campaign

from drp_campaign import graph
from drp_campaign.airflow_client import AirflowClient
from drp_campaign.config import CampaignConfig, load_campaign
from drp_campaign.hops import way
from drp_campaign.ledger import Ledger, hop_files
from drp_campaign.stack import run_stack

FRACTIONS = (0.05, 0.10)
RELEASES = {"DR1": (8_000, 40e6), "DR2": (10_000, 80e6)}  # tracts, core-hours (DESIGN.md)


def core_seconds_per_tract(campaign: CampaignConfig, records: list[dict]) -> tuple[float, dict[int, float]]:
    """Mean core-seconds of an own tract (all site steps), and each overlap tract's."""
    own: dict[tuple[str, str], float] = {}  # (site, group) -> core-seconds of all its steps
    tracts_of: dict[tuple[str, str], int] = {}
    for r in records:
        if campaign.steps[r["step"]].scope != "site":
            continue
        cores = campaign.bps.for_step(r["step"]).request_cpus
        key = (r["site"], r["group_label"])
        own[key] = own.get(key, 0.0) + r["duration_s"] * cores
    overlap = {}
    for (site, label), seconds in own.items():
        if graph.is_overlap_label(label):
            overlap[int(label.removeprefix(graph.OVERLAP_PREFIX))] = seconds
        else:
            groups = graph.plan_groups(campaign, site)
            tracts_of[(site, label)] = len(next(g.tracts for g in groups if g.label == label))
    per_tract = [own[k] / n for k, n in tracts_of.items()]
    return statistics.fmean(per_tract), overlap


def placed_bytes(campaign: CampaignConfig, site: str, tracts: list[int]) -> int:
    """Bytes of the inputs the place hop selects at the hub for SITE's TRACTS (each dataset once)."""
    hub = campaign.sites_config.sites[campaign.hub()]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "inputs.json"
        args = ["--campaign", str(campaign.file), "--site", site, "--tracts", ",".join(map(str, tracts))]
        args += ["--repo", str(hub.butler_repo_path()), "--manifest", str(manifest)]
        run_stack(hub, "export-inputs", args, log=lambda line: None)
        entries = json.loads(manifest.read_text())["entries"]
    return sum({e["dataset_id"]: e["bytes"] for e in entries}.values())


def moved_bytes(campaign: CampaignConfig, key: str) -> tuple[int, dict[int, int]]:
    """Bytes the run moved between sites (place, fan-in, fan-out) for its own tracts, and the bytes
    of each overlap tract's outputs sent home (their RUNs end in the tract's group label)."""
    between_sites = [name for name, hop in campaign.hops.items() if not way(hop.direction).to_tape]
    root = graph.overlap_root(campaign, key) + "/"
    with Ledger().engine.connect() as conn:
        rows = conn.execute(
            sa.select(hop_files.c.collection, hop_files.c.bytes).where(
                hop_files.c.run_key == key, hop_files.c.hop.in_(between_sites)
            )
        ).all()
    overlap = {
        tract: sum(b for c, b in rows if c.startswith(root) and c.endswith("/" + graph.overlap_group(tract).label))
        for tract in campaign.qa.overlap
    }
    return sum(b for c, b in rows if not c.startswith(root)), overlap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("campaign", nargs="?", default="configs/campaigns/test-3x3.yaml")
    parser.add_argument("run_id", nargs="?", help="measure an existing run instead of starting one")
    args = parser.parse_args()
    campaign = load_campaign(args.campaign)
    if not campaign.qa.overlap:
        sys.exit(f"{campaign.file}: qa.overlap is empty: nothing to measure")
    run_id = args.run_id
    if not run_id:
        subprocess.run(["drp-campaign", "seed", args.campaign], check=True, stdout=subprocess.DEVNULL)
        t0 = time.perf_counter()
        run_id = run_campaign(AirflowClient(), campaign)
        print(f"campaign run {run_id}: {time.perf_counter() - t0:.0f} s trigger-to-done")
    key = graph.run_key(run_id)
    own_core, overlap_core = core_seconds_per_tract(campaign, Ledger().step_records(key))
    own_tracts = sum(len(t) for t in campaign.tracts.values())
    moved, overlap_returned = moved_bytes(campaign, key)
    own_bytes = moved / own_tracts
    print(f"campaign {campaign.name}, run {run_id}: {own_tracts} own tracts, overlap {campaign.qa.overlap}")
    print(f"  own tract: {own_core:8.1f} core-s of site steps, {own_bytes / 1e6:8.3f} MB moved between sites")
    core_ratios, byte_ratios = [], []
    for tract, second in sorted(campaign.qa.overlap.items()):
        core = overlap_core.get(tract)
        if core is None:
            sys.exit(f"run {run_id} has no overlap groups for tract {tract}: was it selected?")
        returned = overlap_returned[tract]
        if second == campaign.hub():  # the hub holds every input, and its copy is home already
            placed = 0
        else:
            own_at_second = campaign.site_tracts(second)
            placed = placed_bytes(campaign, second, [*own_at_second, tract]) - placed_bytes(
                campaign, second, own_at_second
            )
            byte_ratios.append((placed + returned) / own_bytes)
        total = placed + returned
        core_ratios.append(core / own_core)
        print(
            f"  overlap tract {tract} at {second}: {core:8.1f} core-s ({core / own_core:.2f} x an own tract); "
            f"{placed / 1e6:.3f} MB placed + {returned / 1e6:.3f} MB returned = {total / 1e6:.3f} MB "
            f"({total / own_bytes:.2f} x an own tract's bytes moved)"
        )
    # Bytes: as if every overlap tract's second site were another site than the hub (the costlier case).
    core_ratio, byte_ratio = statistics.fmean(core_ratios), statistics.fmean(byte_ratios or [0.0])
    for fraction in FRACTIONS:
        extra = ", ".join(
            f"{name} +{fraction * tracts * (core_h / tracts) * core_ratio / 1e6:.2f}M core-h"
            for name, (tracts, core_h) in RELEASES.items()
        )
        print(
            f"  {fraction:.0%} of tracts processed twice: +{fraction * core_ratio:.1%} core time, "
            f"+{fraction * byte_ratio:.1%} bytes moved between sites; {extra}"
        )


if __name__ == "__main__":
    main()
