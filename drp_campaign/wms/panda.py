"""ctrl_bps_panda: PanDA and iDDS, as at a data facility.

`bps submit` returns a request id at once; status, restart and cancel go through `bps` to PanDA
and iDDS. ctrl_bps_panda reports success for a restart or a cancel even when iDDS refused, so both
are confirmed by reading iDDS's own status back. The controller's poll is one request-status call
through pandaclient (drp_campaign/panda_connection.py), with the site's Airflow Connection as its
environment.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from ..panda_connection import PANDA_SERVICE_CLASS, connection_id, request_state, request_status
from .base import StacksideError, Wms, bps_environment, stack_exe
from .states import RunState

PANDA_RUN_ID = re.compile(r"^Run Id:\s*(\S+)", re.M)
# iDDS request states that confirm a cancel, and those a restart must have left.
IDDS_CANCELLED = {"Cancelling", "ToCancel", "Cancelled"}
IDDS_NOT_RESTARTED = {"Failed", "SubFinished", "Expired", "Cancelled", "Cancelling", "ToCancel", "Suspended"}
# ctrl_bps WmsStates as `bps status --id` exit codes (FIELD-NOTES): anything else is in flight.
WMS_EXIT_STATES = {0: RunState.SUCCEEDED, 19: RunState.FAILED, 15: RunState.RUNNING, 1: RunState.UNKNOWN}


class PandaWms(Wms):
    name = "panda"
    service_class = PANDA_SERVICE_CLASS

    def compute_site(self, site_cfg: Any) -> str:
        return site_cfg.panda.compute_site  # PanDA sends jobs to the site's queue

    def submit_settings(self, site_cfg: Any, submit_dir: Path) -> dict[str, Any]:
        return {
            "fileDistributionEndPoint": site_cfg.panda.file_distribution
            or f"file://{Path(submit_dir).parent}/distribution/"
        }

    def connection_id(self, site: str) -> str | None:
        return connection_id(site)

    def poll_state(self, run_dir: Path, run_id: str | None, env: dict[str, str] | None) -> RunState:
        return request_state(env, int(run_id))

    async def apoll_state(self, run_dir: Path, run_id: str | None, env: dict[str, str] | None) -> RunState:
        return await asyncio.to_thread(self.poll_state, run_dir, run_id, env)  # a call to the site's server

    def submit(self, run_dir: Path, attempt: dict[str, Any], submit_yaml: Path, site: str) -> None:
        n = attempt["n"]
        proc = _bps(["submit", str(submit_yaml)], run_dir, n, "submit")
        found = PANDA_RUN_ID.search(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not found or found.group(1) == "None":
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise StacksideError(
                f"bps submit to PanDA failed (exit {proc.returncode}): {' | '.join(tail)}; "
                f"see {run_dir}/attempt-{n}.submit.log"
            )
        attempt["run_id"] = found.group(1)

    def has_workflow(self, attempt: dict[str, Any]) -> bool:
        return bool(attempt.get("run_id"))

    def state(self, run_dir: Path, record: dict[str, Any]) -> RunState:
        last = record["attempts"][-1]
        if last.get("cancelled"):
            return RunState.CANCELLED  # iDDS says Cancelling (bps: RUNNING) until its agents finish the job
        proc = _bps(["status", "--id", str(last["run_id"])], run_dir, last["n"], "status")
        return WMS_EXIT_STATES.get(proc.returncode, RunState.RUNNING)

    def restart(self, run_dir: Path, record: dict[str, Any], previous: dict[str, Any], attempt: dict[str, Any]) -> None:
        n, request = attempt["n"], previous["run_id"]
        proc = _bps(["restart", "--id", str(request)], run_dir, n, "restart")
        status = _wait_for_idds_status(request, lambda s: s not in IDDS_NOT_RESTARTED)
        if proc.returncode != 0 or status in IDDS_NOT_RESTARTED:
            raise StacksideError(
                f"PanDA did not restart request {request} (iDDS still {status}; bps exit "
                f"{proc.returncode}); see {run_dir}/attempt-{n}.restart.log"
            )

    def cancel(self, run_dir: Path, record: dict[str, Any], attempt: dict[str, Any]) -> None:
        proc = _bps(["cancel", "--id", str(attempt["run_id"])], run_dir, attempt["n"], "cancel")
        status = _wait_for_idds_status(attempt["run_id"], lambda s: s in IDDS_CANCELLED)
        if status not in IDDS_CANCELLED:
            raise StacksideError(
                f"PanDA did not cancel request {attempt['run_id']} (iDDS still {status}; bps exit "
                f"{proc.returncode}); see {run_dir}/attempt-{attempt['n']}.cancel.log"
            )


def _bps(args: list[str], run_dir: Path, n: int, what: str) -> subprocess.CompletedProcess:
    log = run_dir / f"attempt-{n}.{what}.log"
    proc = subprocess.run(
        [stack_exe("bps"), *args], capture_output=True, text=True, env=bps_environment(), cwd=run_dir, timeout=600
    )
    log.write_text(f"$ bps {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _wait_for_idds_status(request_id, accept, timeout_s: float = 60.0) -> str:
    """iDDS's own status name (bps maps Cancelling and Resuming to RUNNING, so it cannot confirm)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = request_status(dict(os.environ), int(request_id))
        if accept(status) or time.monotonic() > deadline:
            return status
        time.sleep(1.0)
