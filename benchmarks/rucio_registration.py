"""Registration throughput against the local Rucio server: batched (the hop's way) vs one call per file.

    scripts/with-env.sh python benchmarks/rucio_registration.py [--files 10000] [--single 300] [--profile-batch 500]
                                                                [--analyze-every 0]

Needs the local Rucio up (`scripts/rucio-server.sh start`). Writes N small real files into a
scratch directory inside FRDF's repo (the RSE prefix), shaped like the hop's: ~500-byte files at
datastore-like paths, sidecars shaped like a serialized DatasetRef (~320 bytes). Then, in one run:

  1. batched: RucioTransferService.register, the library's own path (replicas in batches of 500
     with sidecar metadata, then attach); the client is wrapped to time each Rucio call, so the
     split between list_replicas / add_replicas / attach comes from the real run;
  2. the same registration again (idempotent re-run: must register 0);
  3. one call per file (add_replica + attach, as a naive client would) on a SAMPLE of `--single`
     other files: at 10-17 files/s a full 100k single-call run would take 2-3 h, and the cost of
     one call hardly depends on N, so the sample's rate stands for it (the table says so);
  4. a phase profile of one batch of `--profile-batch` fresh files: the library's calls one by one
     and the alternatives for the metadata (none; set in bulk after the replicas), plus what a
     list_replicas costs once the replicas exist (a re-run after a crash pays it).

Besides wall time, each figure has the CPU the Rucio server used (gunicorn workers + PostgreSQL
backends of its database, from /proc): the machine is shared, and CPU per file is what stays
comparable between runs. The header says whether Rucio's tables were ever ANALYZEd (autovacuum
is off in this PostgreSQL); `--analyze-every B` runs ANALYZE every B batches, as autovacuum would.

Prints one table. Files are deleted at the end; the DIDs stay, in names of their own run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from collections import defaultdict

from drp_campaign import settings
from drp_campaign.checksums import adler32
from drp_campaign.config import load_sites
from drp_campaign.transfer.base import Manifest, ManifestEntry
from drp_campaign.transfer.rucio import BATCH, SIDECAR_KEY, RucioTransferService, rucio_client

SCOPE = "test-3x3"
RSE = "FRDF_DISK"
RUN = "drp/test-3x3/bench/FRDF/step1/g000"


def make_files(root, tag: str, n: int) -> list[ManifestEntry]:
    """N real files with the shape of a hop's: relpath, ~500 bytes, sidecar like DatasetRef.to_json()."""
    entries = []
    payload = os.urandom(500)
    for i in range(n):
        visit, det = 3000 + i // 100, i % 100
        rel = f"bench/{tag}/{RUN}/single_visit_star/{visit}/single_visit_star_MockCam_{visit}_D{det:02d}_{i:06d}.json"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(i.to_bytes(4, "little") + payload)  # distinct content, distinct adler32
        did = str(uuid.uuid4())
        ref = {
            "id": did,
            "datasetType": {
                "name": "single_visit_star",
                "storageClass": "_mock_ArrowAstropy",
                "dimensions": ["instrument", "visit", "detector"],
            },
            "dataId": {
                "dataId": {
                    "instrument": "MockCam",
                    "detector": det,
                    "visit": visit,
                    "band": "g",
                    "day_obs": 20260101,
                    "physical_filter": "MockCam-g",
                }
            },
            "run": RUN,
        }
        entries.append(ManifestEntry(did, "single_visit_star", RUN, rel, path.stat().st_size, adler32(path), ref=ref))
    return entries


class ServerCPU:
    """CPU seconds used so far by the local Rucio server: its gunicorn workers and the PostgreSQL
    backends of its database. Unlike wall time this hardly moves when other jobs share the 2
    cores, so ms of server CPU per file is the figure to compare across runs."""

    def __init__(self):
        import psycopg2

        self.master = int((settings.work_dir() / "rucio" / "pids" / "server.pid").read_text())
        db = os.environ.get("DRP_RUCIO_DB", "drp_rucio")
        self.pg = psycopg2.connect(
            host=os.environ.get("DRP_PG_HOST", "127.0.0.1"), user=os.environ.get("DRP_PG_USER", "postgres"), dbname=db
        )
        self.pg.autocommit = True
        self.tick = os.sysconf("SC_CLK_TCK")

    def sql(self, query: str) -> list[tuple]:
        with self.pg.cursor() as cur:
            cur.execute(query)
            return cur.fetchall() if cur.description else []

    def planner_state(self) -> str:
        # autovacuum is off in this machine's postgresql.conf: nothing ANALYZEs Rucio's tables, the
        # planner keeps its empty-table estimates, and the batched lookups of 500 (scope, name)
        # pairs scan every DID of the scope (see the report): say which state a run measured.
        [(av,)] = self.sql("SHOW autovacuum")
        [(live, mod, last)] = self.sql(
            "SELECT n_live_tup, n_mod_since_analyze, greatest(last_analyze, last_autoanalyze) "
            "FROM pg_stat_user_tables WHERE relname = 'dids'"
        )
        return (
            f"PostgreSQL autovacuum {av}; dids table {live:,} rows, "
            f"{mod:,} changed since its last ANALYZE ({last or 'never'})"
        )

    def _cpu(self, pid: int) -> float:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime
        except (FileNotFoundError, ProcessLookupError):
            return 0.0

    def __call__(self) -> float:
        workers = open(f"/proc/{self.master}/task/{self.master}/children").read().split()
        backends = [
            r[0]
            for r in self.sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
        return sum(self._cpu(int(p)) for p in workers) + sum(self._cpu(p) for p in backends)


class TimedClient:
    """The Rucio client with each call timed (generators until exhausted): where register's time goes."""

    def __init__(self, client, cpu: ServerCPU, progress_total: int = 0, analyze_every: int = 0):
        self._client, self.cpu, self.batches, self.analyze_every, self.analyzed = client, cpu, [], analyze_every, []
        self.spent, self.cpu_spent, self.calls = defaultdict(float), defaultdict(float), defaultdict(int)
        self._total, self._done, self._t0 = progress_total, 0, time.perf_counter()

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def timed(*args, **kwargs):
            c0, t0 = self.cpu(), time.perf_counter()
            try:
                out = attr(*args, **kwargs)
                if hasattr(out, "__next__"):  # list_files / list_replicas stream: time the whole stream
                    out = list(out)
            finally:  # list_files of a new dataset raises DataIdentifierNotFound: count it too
                dt = time.perf_counter() - t0
                self.spent[name] += dt
                self.cpu_spent[name] += self.cpu() - c0
                self.calls[name] += 1
            if name == "add_replicas":
                self.batches.append(self.cpu() - c0)
            if name == "add_files_to_dataset" and self.analyze_every and self.calls[name] % self.analyze_every == 0:
                t0 = time.perf_counter()  # what a periodic ANALYZE (the proposed fix) costs, counted apart
                self.cpu.sql("ANALYZE")
                self.analyzed.append(time.perf_counter() - t0)
            if name == "add_files_to_dataset" and self._total:
                self._done += len(args[2])
                if self._done % max(BATCH, self._total // 10 // BATCH * BATCH) == 0 or self._done == self._total:
                    el = time.perf_counter() - self._t0
                    print(f"  ... {self._done:,}/{self._total:,} registered, {el:.0f} s", file=sys.stderr, flush=True)
            return out

        return timed


def sidecar_meta(e: ManifestEntry) -> dict:
    # The same four keys RucioTransferService._add_missing_replicas sets.
    return {
        SIDECAR_KEY: json.dumps(e.ref),
        "rubin_dataset_id": e.dataset_id,
        "rubin_dataset_type": e.dataset_type,
        "rubin_run": e.run,
    }


def profile_batch(client, cpu: ServerCPU, root, tag: str, n: int) -> list[tuple[str, float, float]]:
    """Each call of one batch of N files timed on its own, for the library's way and the alternatives."""
    rows = []

    def t(label, fn):
        c0, t0 = cpu(), time.perf_counter()
        out = fn()
        if hasattr(out, "__next__"):
            out = list(out)
        rows.append((label, time.perf_counter() - t0, cpu() - c0))
        return out

    client.add_dataset(SCOPE, f"bench/{tag}/profile")
    for variant in ("library", "no-meta", "meta-after"):
        entries = make_files(root, f"{tag}-p-{variant}", n)
        dids = [{"scope": SCOPE, "name": e.relpath} for e in entries]
        files = [{"scope": SCOPE, "name": e.relpath, "bytes": e.bytes, "adler32": e.adler32} for e in entries]
        if variant == "library":
            t(
                "list_replicas (none known yet)",
                lambda: client.list_replicas(dids, rse_expression=RSE, all_states=True, ignore_availability=True),
            )
            t(
                "add_replicas with sidecar meta (library)",
                lambda: client.add_replicas(
                    rse=RSE, files=[{**f, "meta": sidecar_meta(e)} for f, e in zip(files, entries)]
                ),
            )
        else:
            t(f"add_replicas, no meta ({variant})", lambda: client.add_replicas(rse=RSE, files=files))
            if variant == "meta-after":
                t(
                    "set_dids_metadata_bulk after (meta-after)",
                    lambda: client.set_dids_metadata_bulk(
                        [{**d, "meta": sidecar_meta(e)} for d, e in zip(dids, entries)]
                    ),
                )
        t(f"attach ({variant})", lambda: client.add_files_to_dataset(SCOPE, f"bench/{tag}/profile", dids, rse=RSE))
        if variant == "library":
            t(
                "list_replicas (all known: a re-run after a crash)",
                lambda: client.list_replicas(dids, rse_expression=RSE, all_states=True, ignore_availability=True),
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="files registered in batches (default 10000)")
    parser.add_argument("--single", type=int, default=300, help="sample registered one call per file (default 300)")
    parser.add_argument(
        "--analyze-every",
        type=int,
        default=0,
        metavar="BATCHES",
        help="run ANALYZE on the Rucio database every BATCHES batches, as autovacuum would (default 0: never, as now)",
    )
    parser.add_argument(
        "--profile-batch",
        type=int,
        default=BATCH,
        help=f"files in the one-batch phase profile (default {BATCH}; 0: skip)",
    )
    args = parser.parse_args()
    conn = json.loads((settings.work_dir() / "rucio" / "connection.json").read_text())
    client, cpu = rucio_client(conn), ServerCPU()
    root = load_sites().sites["FRDF"].butler_repo_path()
    tag = uuid.uuid4().hex[:8]
    did = f"{SCOPE}:bench/{tag}/batched"
    loads = []  # 1-minute load average after each phase: other jobs on the 2 cores inflate wall times

    def measure(fn):
        c0, t0 = cpu(), time.perf_counter()
        fn()
        wall, used = time.perf_counter() - t0, cpu() - c0
        loads.append(os.getloadavg()[0])
        return wall, used

    try:
        t0 = time.perf_counter()
        batched = make_files(root, f"{tag}-b", args.files)
        print(
            f"wrote {args.files:,} files in {time.perf_counter() - t0:.1f} s; registering ...",
            file=sys.stderr,
            flush=True,
        )
        loads.append(os.getloadavg()[0])

        planner_before = cpu.planner_state()
        timed = TimedClient(client, cpu, progress_total=args.files, analyze_every=args.analyze_every)
        registered = []
        t_b, c_b = measure(
            lambda: registered.append(RucioTransferService(timed).register(did, RSE, Manifest("bench", batched)))
        )
        t_b -= sum(timed.analyzed)
        t_r, c_r = measure(
            lambda: registered.append(RucioTransferService(client).register(did, RSE, Manifest("bench", batched)))
        )
        assert registered == [args.files, 0], registered  # all new the first time, nothing the second

        single = make_files(root, f"{tag}-s", args.single)
        client.add_dataset(SCOPE, f"bench/{tag}/single")

        def one_by_one():
            for e in single:
                client.add_replica(RSE, SCOPE, e.relpath, e.bytes, e.adler32, meta=sidecar_meta(e))
                client.add_files_to_dataset(SCOPE, f"bench/{tag}/single", [{"scope": SCOPE, "name": e.relpath}])

        t_s, c_s = measure(one_by_one)
        prof = profile_batch(client, cpu, root, tag, args.profile_batch) if args.profile_batch else []
    finally:
        shutil.rmtree(root / "bench", ignore_errors=True)

    def row(label, n, wall, used, rate=True):
        r = f"{n / wall:9,.0f} {1000 * wall / n:8.2f}" if rate else f"{'':9s} {'':8s}"
        print(f"{label:56s} {n:8,d} {wall:9.1f} {r} {1000 * used / n:10.2f}")

    print(
        f"\nRucio registration, {RSE} on {conn['rucio_host']} (daemons running), 2 cores; "
        "load average after each phase: " + ", ".join(f"{x:.1f}" for x in loads)
    )
    print(f"before: {planner_before}\nafter:  {cpu.planner_state()}")
    if timed.analyzed:
        print(
            f"ANALYZE every {args.analyze_every} batches: {len(timed.analyzed)} runs, "
            f"{sum(timed.analyzed):.1f} s in all (not in the figures below)"
        )
    print(f"{'case':56s} {'files':>8s} {'seconds':>9s} {'files/s':>9s} {'ms/file':>8s} {'server CPU':>10s}")
    print(f"{'':56s} {'':8s} {'(wall)':>9s} {'(wall)':>9s} {'(wall)':>8s} {'ms/file':>10s}")
    row("batched: RucioTransferService.register (500/call)", args.files, t_b, c_b)
    for name in ("list_files", "list_replicas", "add_replicas", "add_files_to_dataset"):
        row(
            f"  {name} ({timed.calls.get(name, 0)} calls)",
            args.files,
            timed.spent.get(name, 0.0),
            timed.cpu_spent.get(name, 0.0),
            rate=False,
        )
    tenth = max(1, len(timed.batches) // 10)
    first, last = sum(timed.batches[:tenth]) / tenth, sum(timed.batches[-tenth:]) / tenth
    print(
        f"  server CPU per add_replicas batch: first {tenth} batches {first:.2f} s, "
        f"last {tenth} {last:.2f} s (growth with the tables)"
    )
    row("re-run of the same registration (registers 0)", args.files, t_r, c_r, rate=False)
    row("one call per file (add_replica + attach): a SAMPLE", args.single, t_s, c_s)
    print(
        f"batched / single: {t_s / args.single / (t_b / args.files):.1f}x in wall time, "
        f"{c_s / args.single / (c_b / args.files):.1f}x in server CPU per file. "
        f"The single-call figures are from a {args.single}-file sample (the cost of one call hardly depends on N); "
        f"{args.files:,} files one call each would take ~{t_s / args.single * args.files / 60:.0f} min."
    )
    if prof:
        print(
            f"\nphase profile: one batch of {args.profile_batch} fresh files, each call alone   "
            "wall ms/file   server CPU ms/file"
        )
        for label, wall, used in prof:
            print(f"  {label:60s} {1000 * wall / args.profile_batch:10.2f} {1000 * used / args.profile_batch:14.2f}")


if __name__ == "__main__":
    main()
