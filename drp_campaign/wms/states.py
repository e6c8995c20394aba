"""The states of one step group's BPS run, and the moves between them.

Airflow-free and stack-free: the stack side (stackside/bps_run.py), the trigger and the operator
all read states from here. The values are ctrl_bps's `WmsStates` names (plus our own MISSING,
FINISHED, CANCELLED and LOST), as `str`, so run.json, the stack-side JSON and XCom payloads carry
the same strings they always did.

The lifecycle: a run is *submitted* (MISSING -> RUNNING), *attached to* while it goes, and ends
*finished clean* or *failed* (FINISHED for parsl, whose report reads the outcome; SUCCEEDED or
FAILED for PanDA), *cancelled* by us, *lost* (parsl: its process died without an exit code) or
put aside by the WMS (DELETED, HELD). Any ended run is *restarted* (same RUN) or *rescued* (a new
RUN) back to RUNNING; only a run still going, or lost, can be cancelled.
"""

from __future__ import annotations

from enum import StrEnum

from ..errors import DrpError


class RunState(StrEnum):
    MISSING = "MISSING"  # no run recorded in the run directory
    RUNNING = "RUNNING"  # submitted, restarted or rescued, and not ended yet
    FINISHED = "FINISHED"  # parsl: `bps submit` wrote its exit code; the report reads the outcome
    SUCCEEDED = "SUCCEEDED"  # PanDA: iDDS Finished
    FAILED = "FAILED"  # PanDA: iDDS Failed, SubFinished or Expired
    CANCELLED = "CANCELLED"  # cancelled by us (recorded in run.json before the WMS confirms)
    DELETED = "DELETED"  # PanDA: iDDS Cancelled by someone else
    HELD = "HELD"  # PanDA: iDDS Suspended
    LOST = "LOST"  # parsl: the detached `bps` is gone without an exit code (its host died)
    UNKNOWN = "UNKNOWN"  # `bps status` could not tell (exit 1)


# After these nothing more happens without someone acting: the wait for a run stops.
ENDED = frozenset(
    {
        RunState.FINISHED,
        RunState.CANCELLED,
        RunState.LOST,
        RunState.MISSING,
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.DELETED,
        RunState.HELD,
    }
)
# What the WMS may report of a run that is going (or that it could not tell about).
_OBSERVED = frozenset(RunState) - {RunState.MISSING, RunState.CANCELLED}
# Restart or rescue: an ended run (or one the WMS cannot tell about) goes again.
_RESTARTABLE = (ENDED | {RunState.UNKNOWN}) - {RunState.MISSING}

# state -> the states it may move to (by a WMS report, or by our submit, restart, rescue, cancel).
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.MISSING: frozenset({RunState.RUNNING}),  # submit
    RunState.RUNNING: _OBSERVED | {RunState.CANCELLED},  # attach (stays RUNNING), ends, or cancel
    RunState.LOST: frozenset({RunState.RUNNING, RunState.CANCELLED}),  # restart, or cancel
    RunState.UNKNOWN: _OBSERVED,  # the next `bps status` tells, or restart
    **{s: frozenset({RunState.RUNNING}) for s in _RESTARTABLE - {RunState.LOST, RunState.UNKNOWN}},  # restart or rescue
}


class RunStateError(DrpError):
    """A move the lifecycle does not allow (e.g. cancelling a run that has finished)."""


def may_become(before: str, after: str) -> bool:
    return RunState(after) in TRANSITIONS[RunState(before)]


def check_transition(before: str, after: str) -> RunState:
    """AFTER as a RunState if a run in state BEFORE may move there; else RunStateError."""
    if not may_become(before, after):
        allowed = ", ".join(sorted(TRANSITIONS[RunState(before)])) or "nothing"
        raise RunStateError(f"a BPS run in state {before} cannot become {after} (it may become: {allowed})")
    return RunState(after)
