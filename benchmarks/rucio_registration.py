"""Registration throughput against the local Rucio server: batched (the hop's way) vs one call per file.

    scripts/with-env.sh python benchmarks/rucio_registration.py [--files 10000] [--single 500]

Needs the local Rucio up (`scripts/rucio-server.sh start`). Writes N small real files into a
scratch directory inside FRDF's repo (the RSE prefix), registers them with
RucioTransferService.register (replicas in batches of 500 with sidecar metadata, then attach),
and, in the same run, registers `--single` other files one call per file (add_replica +
attach, as a naive client would). Prints files/s for each and the ratio. The files and DIDs stay
in a scope of their own run so repeated runs do not collide.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import uuid

from drp_campaign import settings
from drp_campaign.checksums import adler32
from drp_campaign.config import load_sites
from drp_campaign.transfer.base import Manifest, ManifestEntry
from drp_campaign.transfer.rucio import RucioTransferService, rucio_client

SCOPE = "test-3x3"


def make_files(root, tag: str, n: int) -> list[ManifestEntry]:
    entries = []
    for i in range(n):
        rel = f"bench/{tag}/f{i // 1000:03d}/file{i:06d}.json"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(64))
        entries.append(ManifestEntry(str(uuid.uuid4()), "bench", f"bench/{tag}", rel, 64, adler32(path), ref={"i": i}))
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="files registered in batches (default 10000)")
    parser.add_argument("--single", type=int, default=500, help="files registered one call each (default 500)")
    args = parser.parse_args()
    conn = json.loads((settings.work_dir() / "rucio" / "connection.json").read_text())
    client = rucio_client(conn)
    service = RucioTransferService(client)
    root = load_sites().sites["FRDF"].butler_repo_path()
    tag = uuid.uuid4().hex[:8]
    try:
        batched = make_files(root, f"{tag}-b", args.files)
        t0 = time.perf_counter()
        service.register(f"{SCOPE}:bench/{tag}/batched", "FRDF_DISK", Manifest("bench", batched))
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert service.register(f"{SCOPE}:bench/{tag}/batched", "FRDF_DISK", Manifest("bench", batched)) == 0
        t_rerun = time.perf_counter() - t0

        single = make_files(root, f"{tag}-s", args.single)
        client.add_dataset(SCOPE, f"bench/{tag}/single")
        t0 = time.perf_counter()
        for e in single:
            client.add_replica("FRDF_DISK", SCOPE, e.relpath, e.bytes, e.adler32, meta={"rubin_sidecar": json.dumps(e.ref)})
            client.add_files_to_dataset(SCOPE, f"bench/{tag}/single", [{"scope": SCOPE, "name": e.relpath}])
        t_single = time.perf_counter() - t0
    finally:
        shutil.rmtree(root / "bench", ignore_errors=True)
    rate_b, rate_s = args.files / t_batched, args.single / t_single
    print(f"batched (500/call, replicas + sidecar + attach): {args.files} files in {t_batched:.1f} s = {rate_b:,.0f} files/s ({1000 / rate_b:.2f} ms/file)")
    print(f"re-run of the same registration (finds all attached):  {t_rerun:.2f} s, registers 0")
    print(f"one call per file (add_replica + attach):        {args.single} files in {t_single:.1f} s = {rate_s:,.0f} files/s ({1000 / rate_s:.2f} ms/file)")
    print(f"batched / single throughput ratio: {rate_b / rate_s:.1f}x")


if __name__ == "__main__":
    main()
