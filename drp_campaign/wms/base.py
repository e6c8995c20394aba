"""The interface every WMS backend implements, after ctrl_bps's own BaseWmsService.

A backend answers for one WMS everywhere a run meets it: the keys it adds to the BPS submit YAML
(drp_campaign/bps.py), the cheap poll the trigger and the operator make (controller side, no LSST
stack), and submit, state, restart and cancel on the stack side (stackside/bps_run.py, through the
real `bps` CLI). What a run *is* (its record, run.json, and the per-quantum report from the Butler)
is the same for every WMS and stays in bps.py and stackside/bps_run.py.
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from ..stackside._errors import StacksideError
from .states import RunState


class Wms(ABC):
    name: ClassVar[str]
    service_class: ClassVar[str]  # ctrl_bps's wmsServiceClass

    # --- the submit YAML (drp_campaign/bps.py) --------------------------------------------------
    @abstractmethod
    def compute_site(self, site_cfg: Any) -> str:
        """The submit YAML's computeSite for a site of sites.yaml."""

    @abstractmethod
    def submit_settings(self, site_cfg: Any, submit_dir: Path) -> dict[str, Any]:
        """The submit YAML keys this WMS needs besides the common ones."""

    # --- controller side: waiting for a run (triggers/bps_run.py, operators/steps.py) ----------
    def connection_id(self, site: str) -> str | None:
        """The site's Airflow Connection this WMS's client reads its environment from, if any."""
        return None

    @abstractmethod
    def poll_state(self, run_dir: Path, run_id: str | None, env: dict[str, str] | None) -> RunState:
        """The run's state, cheaply enough for a trigger's every poll (no LSST stack import)."""

    async def apoll_state(self, run_dir: Path, run_id: str | None, env: dict[str, str] | None) -> RunState:
        return self.poll_state(run_dir, run_id, env)

    def inline_poll_s(self, poll_interval_s: float) -> float:
        """How often the operator polls while it waits in the task, before deferring."""
        return poll_interval_s

    # --- stack side: the run itself (stackside/bps_run.py) -------------------------------------
    def prepare(self, config: dict[str, Any], site: str) -> None:
        """Last changes to a submit YAML the stack side is about to write."""

    @abstractmethod
    def submit(self, run_dir: Path, attempt: dict[str, Any], submit_yaml: Path, site: str) -> None:
        """Submit ATTEMPT's workflow; sets the attempt's run_id (and pid, if it runs here)."""

    @abstractmethod
    def has_workflow(self, attempt: dict[str, Any]) -> bool:
        """Did this submission get as far as a workflow the WMS can restart?"""

    @abstractmethod
    def state(self, run_dir: Path, record: dict[str, Any]) -> RunState:
        """The state of the record's last attempt, as the stack side sees it (may call `bps`)."""

    @abstractmethod
    def restart(self, run_dir: Path, record: dict[str, Any], previous: dict[str, Any], attempt: dict[str, Any]) -> None:
        """Restart PREVIOUS's workflow as ATTEMPT (already in the record); raise if the WMS did not."""

    @abstractmethod
    def cancel(self, run_dir: Path, record: dict[str, Any], attempt: dict[str, Any]) -> None:
        """Stop ATTEMPT's workflow; raise if the WMS did not. The caller records the cancel."""

    def ended(self, run_dir: Path, attempt: dict[str, Any]) -> float | None:
        """When the attempt's workflow itself ended (a POSIX time), if this WMS knows it here."""
        return None


# --- running ctrl_bps's CLI in the science stack: what the backends' stack side shares ---------


def stack_exe(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if not exe.exists():
        raise StacksideError(f"{name} not found next to {sys.executable}: install lsst-ctrl-bps in the site's stack")
    return str(exe)


def bps_environment() -> dict[str, str]:
    env = dict(os.environ)
    # BPS jobs call `pipetask` and `python` from PATH: this stack's, whatever the caller had.
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def bps_defaults() -> dict:
    """ctrl_bps's own default commands (bps_defaults.yaml), to wrap rather than copy."""
    from importlib.resources import files

    import yaml

    return yaml.safe_load((files("lsst.ctrl.bps") / "etc" / "bps_defaults.yaml").read_text())


__all__ = ["StacksideError", "Wms", "bps_defaults", "bps_environment", "stack_exe"]
