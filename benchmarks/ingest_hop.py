"""Ingest at the destination: our ingest_hop against raw daf_butler ingest of the same files.

    .venvs/stack/bin/python benchmarks/ingest_hop.py [--visits 50] [--detectors 30]

Runs in the science-stack environment (the hop's stack side does; Airflow never imports Butler).
Work directory: $DRP_WORK_DIR/bench/ingest_hop (wiped first). What it does, reusing the stack-side
code rather than re-implementing it:

  - source repo: seed_repo() of a copy of test-3x3.yaml whose synthetic sky is larger, so the
    site's two tracts hold visits x detectors x 2 real mock datasets (butler.put, ~500-byte JSON
    files in the datastore) in one RUN, as a step's outputs are;
  - manifest: export_hop() of that RUN (what the source registers in Rucio);
  - two destination repos, made equal: the same sky records (insert_sky), no datasets; the files
    are copied into each repo root at their relpaths, as Rucio delivers them (not timed);
  - (a) ingest_hop() into the first: size + adler32 check, DatasetRefs rebuilt from the manifest,
    same-UUID ingest in place; its time is split by wrapping the functions it calls;
  - (b) raw daf_butler into the second: DatasetRef.from_json for each entry, register the RUN,
    butler.ingest(*FileDataset(...), transfer=None) - no checks;
  - re-runs: (a) again (everything present), and (b) again with skip_existing=True.

Prints datasets/s for each and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import yaml

from drp_campaign import settings
from drp_campaign.config import load_campaign
from drp_campaign.stackside import hop
from drp_campaign.stackside.repo import ensure_chain, insert_sky, open_butler, seed_repo
from drp_campaign.stackside.sky import SyntheticSky

SITE = "FRDF"
RUN = "drp/bench/FRDF/step1/g000"
CHAIN = "drp/bench/USDF/input"


def bench_campaign(work: Path, visits: int, detectors: int) -> Path:
    """test-3x3.yaml with a bigger synthetic sky and its raws in a step-like RUN."""
    data = yaml.safe_load((settings.CAMPAIGNS_DIR / "test-3x3.yaml").read_text())
    data["pipeline"] = str((settings.CAMPAIGNS_DIR / data["pipeline"]).resolve())
    data["data"]["synthetic"].update(visits_per_tract=visits, detectors_per_visit=detectors)
    data["data"]["input_collections"] = [RUN]
    path = work / "campaign.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Spent:
    """Wall time spent inside the functions ingest_hop calls, by label, while patched (restored after).
    Calls made inside ingest_hop's do_ingest (the with_lock_retry around butler.ingest) are
    labelled apart, so the verify loop and the ingest transaction each get their own rows."""

    def __init__(self):
        self.s, self.n, self.inside = defaultdict(float), defaultdict(int), ""

    @contextmanager
    def patch(self, owner, name: str, label: str):
        # A module function (hop imported adler32, with_lock_retry by name) or a class's method.
        module = not isinstance(owner, type)
        orig = getattr(owner, name) if module else owner.__dict__[name]
        func = orig.__func__ if isinstance(orig, classmethod) else orig

        def timed(*args, **kwargs):
            what = self.inside + label
            if name == "with_lock_retry":
                what = kwargs["what"].split(" ")[0]  # registering / ingesting / prepending
                if what != "ingesting":
                    return func(*args, **kwargs)
                what, self.inside = "do_ingest, inclusive", "  in do_ingest: "
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.s[what] += time.perf_counter() - t0
                self.n[what] += 1
                if name == "with_lock_retry":
                    self.inside = ""

        setattr(owner, name, classmethod(timed) if isinstance(orig, classmethod) else timed)
        try:
            yield
        finally:
            setattr(owner, name, orig)


@contextmanager
def profiled(spent: Spent):
    from lsst.daf.butler import DatasetRef
    from lsst.daf.butler._registry_shim import RegistryShim
    from lsst.daf.butler.direct_butler import DirectButler

    with (
        spent.patch(hop, "adler32", "adler32 of each file"),
        spent.patch(DatasetRef, "from_json", "DatasetRef.from_json"),
        spent.patch(DirectButler, "get_dataset", "butler.get_dataset"),
        spent.patch(RegistryShim, "expandDataId", "registry.expandDataId"),
        spent.patch(hop, "with_lock_retry", ""),
        spent.patch(DirectButler, "ingest", "butler.ingest"),
    ):
        yield


def raw_ingest(repo: Path, entries: list[dict], skip_existing: bool = False) -> dict[str, float]:
    """Plain daf_butler: the manifest's refs, the files in place, nothing checked."""
    from lsst.daf.butler import DatasetRef, FileDataset

    t = {}
    t0 = time.perf_counter()
    butler, _ = open_butler(repo)
    with butler:
        t["open butler"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        datasets = [
            FileDataset(
                path=str(repo / e["relpath"]),
                refs=[DatasetRef.from_json(json.dumps(e["ref"]), universe=butler.dimensions)],
            )
            for e in entries
        ]
        t["DatasetRef.from_json"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for run in sorted({e["run"] for e in entries}):
            butler.collections.register(run)  # ingest does not make RUNs
        butler.ingest(
            *datasets, transfer=None, skip_existing=skip_existing
        )  # registers dataset types, expands data IDs
        t["register RUN + butler.ingest"] = time.perf_counter() - t0
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=50, help="visits per tract (default 50; < 1000)")
    parser.add_argument("--detectors", type=int, default=30, help="detectors per visit (default 30)")
    args = parser.parse_args()
    work = settings.work_dir() / "bench" / "ingest_hop"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    campaign = load_campaign(bench_campaign(work, args.visits, args.detectors))
    src, dst_a, dst_b, manifest = work / "src", work / "dst_ours", work / "dst_raw", work / "manifest.json"

    t0 = time.perf_counter()
    seeded = seed_repo(campaign, SITE, src)
    t_seed = time.perf_counter() - t0
    t0 = time.perf_counter()
    exported = hop.export_hop(src, RUN, "raw", manifest)
    t_export = time.perf_counter() - t0
    entries = json.loads(manifest.read_text())["entries"]
    n = len(entries)
    assert n == seeded["raws"]["total"] == exported["entries"]

    # Equal destinations: one made, then copied (sky records, an empty input chain, no datasets).
    butler, _ = open_butler(dst_a, create=True)
    with butler:
        insert_sky(butler, SyntheticSky(campaign))
        ensure_chain(butler, CHAIN, [])
    shutil.copytree(dst_a, dst_b)
    for dst in (dst_a, dst_b):  # what Rucio delivers: each file at its relpath under the repo root
        for e in entries:
            target = dst / e["relpath"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(e["path"], target)

    spent = Spent()
    with profiled(spent):
        t0 = time.perf_counter()
        res_a = hop.ingest_hop(dst_a, manifest, dst_a, CHAIN)
        t_a = time.perf_counter() - t0
    assert res_a["ingested"] == n and not res_a["rejected"], res_a["rejected"][:3]

    t0 = time.perf_counter()
    split_b = raw_ingest(dst_b, entries)
    t_b = time.perf_counter() - t0

    t0 = time.perf_counter()
    res_a2 = hop.ingest_hop(dst_a, manifest, dst_a, CHAIN)
    t_a2 = time.perf_counter() - t0
    assert res_a2["ingested"] == 0 and res_a2["already_present"] == n

    t0 = time.perf_counter()
    raw_ingest(dst_b, entries, skip_existing=True)
    t_b2 = time.perf_counter() - t0

    # Same UUIDs at both destinations as at the source.
    for dst in (dst_a, dst_b):
        b, _ = open_butler(dst, writeable=False)
        with b:
            ids = {str(r.id) for r in b.query_datasets("raw", collections=RUN, explain=False, limit=None)}
        assert ids == {e["dataset_id"] for e in entries}, dst

    checksum = spent.s["adler32 of each file"]
    mb = sum(e["bytes"] for e in entries) / 1e6
    print(
        f"\nIngest at the destination: {n:,} datasets ({mb:.1f} MB, {mb * 1e6 / n:.0f} B/file), "
        "one RUN, SQLite registry; "
        f"load average {os.getloadavg()[0]:.1f} (2 cores)"
    )
    print(f"source: seed_repo (butler.put) {t_seed:.1f} s; export_hop (manifest, adler32 at source) {t_export:.1f} s")
    print(f"{'case':62s} {'seconds':>8s} {'datasets/s':>11s} {'ms/dataset':>11s}")
    row = lambda label, s: print(f"{label:62s} {s:8.2f} {n / s:11,.0f} {1000 * s / n:11.2f}")  # noqa: E731
    row("(a) ingest_hop: verify size+adler32, same-UUID ingest in place", t_a)
    sub = lambda label, s: print(  # noqa: E731
        f"    {label:58s} {s:8.2f} {'':11s} {1000 * s / n:11.2f}  {100 * s / t_a:4.0f}%"
    )
    loop = {k: v for k, v in spent.s.items() if not k.startswith(" ") and k != "do_ingest, inclusive"}
    for label, s in sorted(loop.items(), key=lambda kv: -kv[1]):
        sub(f"{label} ({spent.n[label]:,} calls)", s)
    sub("the rest: open butler, stat, register RUN, chain", t_a - sum(loop.values()) - spent.s["do_ingest, inclusive"])
    sub("do_ingest (with_lock_retry around butler.ingest), of which:", spent.s["do_ingest, inclusive"])
    inner = {k: v for k, v in spent.s.items() if k.startswith(" ")}
    for label, s in sorted(inner.items(), key=lambda kv: -kv[1]):
        sub(f"{label} ({spent.n[label]:,} calls)", s)
    sub("  in do_ingest, the rest: the in_place/elsewhere split", spent.s["do_ingest, inclusive"] - sum(inner.values()))
    row("(b) raw daf_butler: from_json + butler.ingest(transfer=None)", t_b)
    for label, s in split_b.items():
        print(f"    {label:58s} {s:8.2f} {'':11s} {1000 * s / n:11.2f}")
    print(f"(a) / (b) time: {t_a / t_b:.1f}x; of (a), checksumming is {checksum:.2f} s = {100 * checksum / t_a:.0f}%")
    row("re-run of (a), everything already present (ingests 0)", t_a2)
    row("re-run of (b) with skip_existing=True (reference)", t_b2)


if __name__ == "__main__":
    main()
