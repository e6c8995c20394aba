"""A PostgreSQL server of one e2e stack's own (initdb'd fresh, on its own port), so a fault drill
can really restart the database under Airflow and the ledger without touching the machine's
server, which every other test shares. The machine's PostgreSQL binaries; run as the postgres user
when the tests run as root (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from pathlib import Path


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or name]
    return found[-1]


class PrivatePostgres:
    def __init__(self, port: int):
        self.port = port
        self.data = Path(f"/tmp/drp-postgres-{port}")  # the postgres user must reach it: not under root's 0700 dirs

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*as_postgres, *args], check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        """A new, empty server (what an earlier run left is removed first)."""
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self._pg_ctl("start")

    def _pg_ctl(self, action: str) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        self._run(
            _bin("pg_ctl"), "-D", str(self.data), "-l", str(self.data / "server.log"), "-w", "-o", options, action
        )

    def down_for(self, seconds: float) -> float:
        """A restart that takes SECONDS: every client's connection goes with the server, and none
        is taken meanwhile. How long the server was down, measured."""
        t0 = time.monotonic()
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        time.sleep(seconds)
        self._pg_ctl("start")
        return time.monotonic() - t0

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
