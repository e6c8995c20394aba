"""ctrl_bps_parsl: the local WMS, the embedded default.

`bps submit` executes the whole workflow in the calling process, so it runs detached in its own
session and writes its exit code to a file; a poll is two file checks in the run directory
(drp_campaign.bps.local_state). ctrl_bps_parsl's submit exits 0 even when quanta fail, and its
report, status and cancel are not all implemented: the outcome is read from the Butler, and a
cancel stops the detached process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import bps as bpsrec
from .. import settings
from .base import Wms, bps_defaults, bps_environment, stack_exe
from .states import RunState


class ParslWms(Wms):
    name = "parsl"
    service_class = "lsst.ctrl.bps.parsl.ParslService"

    def compute_site(self, site_cfg: Any) -> str:
        return "local"  # ctrl_bps_parsl picks its site block by computeSite

    def submit_settings(self, site_cfg: Any, submit_dir: Path) -> dict[str, Any]:
        # A thread pool: the local machine stands in for the site's batch system.
        threads = {"class": "drp_campaign.stackside.parsl_site.LocalThreads", "cores": 2, "retries": 0}
        return {"site": {"local": threads}}

    def poll_state(self, run_dir: Path, run_id: str | None, env: dict[str, str] | None) -> RunState:
        return bpsrec.local_state(run_dir)

    def inline_poll_s(self, poll_interval_s: float) -> float:
        return min(poll_interval_s, 0.5)  # a local run's state is two file checks

    def prepare(self, config: dict[str, Any], site: str) -> None:
        """The workflow's own commands (quantum graph, init job, jobs, final job) run through the
        site's warm stack server when there is one: the same commands, started forked from a
        process that has the stack imported (stackside/warm.py) instead of importing it again."""
        prefix = " ".join(settings.warm_prefix(site, sys.executable))
        if not prefix:
            return
        defaults = bps_defaults()
        config["createQuantumGraph"] = f"{prefix} {defaults['createQuantumGraph']}"
        config["runQuantumCommand"] = f"{prefix} {defaults['runQuantumCommand']}"
        init_command = defaults["pipetask"]["pipetaskInit"]["runQuantumCommand"]
        config["pipetask"] = {"pipetaskInit": {"runQuantumCommand": f"{prefix} {init_command}"}}
        config["finalJob"]["command1"] = f"{prefix} {config['finalJob']['command1']}"

    def submit(self, run_dir: Path, attempt: dict[str, Any], submit_yaml: Path, site: str) -> None:
        attempt["pid"] = _launch_detached(run_dir, attempt["n"], [stack_exe("bps"), "submit", str(submit_yaml)], site)
        attempt["run_id"] = attempt["submit_path"]  # ctrl_bps_parsl's run id is its submit path

    def has_workflow(self, attempt: dict[str, Any]) -> bool:
        return (Path(attempt["submit_path"]) / "parsl_workflow.pickle").exists()

    def state(self, run_dir: Path, record: dict[str, Any]) -> RunState:
        return bpsrec.local_state(run_dir)

    def restart(self, run_dir: Path, record: dict[str, Any], previous: dict[str, Any], attempt: dict[str, Any]) -> None:
        argv = [stack_exe("bps"), "restart", "--wms-service-class", self.service_class, "--id", previous["submit_path"]]
        attempt["pid"] = _launch_detached(run_dir, attempt["n"], argv, record["site"])

    def cancel(self, run_dir: Path, record: dict[str, Any], attempt: dict[str, Any]) -> None:
        # Recorded first: once the process is gone, nobody must see the run as LOST (and restart it).
        attempt["cancelled"] = True
        attempt["cancelled_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        bpsrec.write_record(run_dir, record)
        _kill_group(attempt.get("pid"))

    def ended(self, run_dir: Path, attempt: dict[str, Any]) -> float | None:
        done = bpsrec.exit_file(run_dir, attempt["n"])
        return done.stat().st_mtime if done.exists() else None


def _launch_detached(run_dir: Path, n: int, argv: list[str], site: str) -> int:
    """Start ARGV in its own session, outliving us; it writes its exit code when it ends.
    Through the site's warm stack server when there is one (the launcher waits for it)."""
    argv = [*settings.warm_prefix(site, sys.executable), *argv]
    log, done = run_dir / f"attempt-{n}.log", bpsrec.exit_file(run_dir, n)
    script = '"${@:3}" > "$1" 2>&1; echo $? > "$2.tmp" && mv "$2.tmp" "$2"'
    proc = subprocess.Popen(
        ["bash", "-c", script, bpsrec.LAUNCHER_NAME, str(log), str(done), *argv],
        cwd=run_dir,
        env=bps_environment(),
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc.pid


def _kill_group(pid: int | None, grace_s: float = 20.0) -> None:
    if not bpsrec.process_alive(pid):
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while bpsrec.process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if bpsrec.process_alive(pid):
        os.killpg(pid, signal.SIGKILL)
