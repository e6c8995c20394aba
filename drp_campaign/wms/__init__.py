"""The workflow management systems a step group's BPS run goes through, behind one interface.

`states` holds a run's lifecycle (RunState and its transitions); `base.Wms` is what every backend
answers (submit YAML keys, the controller's poll, submit, state, restart, cancel); `parsl` (local,
the embedded default) and `panda` (PanDA/iDDS) are the backends. `backend(name)` is the one place
a WMS name (`bps.wms` in the campaign, `wms` in run.json) becomes a backend.
"""

from __future__ import annotations

from importlib import import_module

from .base import Wms
from .states import ENDED, TRANSITIONS, RunState, RunStateError, check_transition, may_become

# name -> module and class; imported on first use, so the controller never loads the stack side's.
BACKENDS = {"parsl": ("drp_campaign.wms.parsl", "ParslWms"), "panda": ("drp_campaign.wms.panda", "PandaWms")}
_INSTANCES: dict[str, Wms] = {}


def backend(name: str) -> Wms:
    if name not in _INSTANCES:
        if name not in BACKENDS:
            raise ValueError(f"unknown WMS {name!r}: the choices are: {', '.join(BACKENDS)}")
        module, cls = BACKENDS[name]
        _INSTANCES[name] = getattr(import_module(module), cls)()
    return _INSTANCES[name]


__all__ = [
    "BACKENDS",
    "ENDED",
    "TRANSITIONS",
    "RunState",
    "RunStateError",
    "Wms",
    "backend",
    "check_transition",
    "may_become",
]
