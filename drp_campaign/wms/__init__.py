"""The workflow management systems a step group's BPS run goes through (parsl, PanDA).

`states` holds a run's lifecycle: RunState and its transitions.
"""

from .states import ENDED, TRANSITIONS, RunState, RunStateError, check_transition, may_become

__all__ = ["ENDED", "TRANSITIONS", "RunState", "RunStateError", "check_transition", "may_become"]
