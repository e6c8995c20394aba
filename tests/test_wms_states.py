"""The BPS run lifecycle (drp_campaign/wms/states.py): the strings run.json and XCom carry, and
the moves a run may make. Airflow-free, stack-free."""

from __future__ import annotations

import json

import pytest

from drp_campaign.errors import DrpError
from drp_campaign.wms import ENDED, TRANSITIONS, RunState, RunStateError, check_transition, may_become


def test_states_are_the_strings_run_json_and_xcom_always_carried():
    assert {s.value for s in RunState} == {
        "MISSING",
        "RUNNING",
        "FINISHED",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "DELETED",
        "HELD",
        "LOST",
        "UNKNOWN",
    }
    assert json.dumps({"state": RunState.LOST}) == '{"state": "LOST"}'
    assert RunState("FINISHED") == "FINISHED" and "FINISHED" in ENDED and "RUNNING" not in ENDED


def test_every_state_has_its_moves_written_down():
    assert set(TRANSITIONS) == set(RunState)
    assert all(RunState.RUNNING in TRANSITIONS[s] for s in RunState)  # submit, attach, restart or rescue


def test_only_a_run_still_going_or_lost_can_be_cancelled():
    assert [s for s in RunState if may_become(s, RunState.CANCELLED)] == [RunState.RUNNING, RunState.LOST]


def test_a_move_the_lifecycle_does_not_allow_is_refused_naming_both_states():
    assert check_transition("LOST", "RUNNING") is RunState.RUNNING
    with pytest.raises(RunStateError, match="in state FINISHED cannot become CANCELLED") as err:
        check_transition(RunState.FINISHED, RunState.CANCELLED)
    assert isinstance(err.value, DrpError)


def test_one_registry_turns_a_wms_name_into_its_backend():
    from typing import get_args

    from drp_campaign.config.models import BpsConfig
    from drp_campaign.wms import BACKENDS, backend

    assert set(BACKENDS) == set(get_args(BpsConfig.model_fields["wms"].annotation))  # every name the config accepts
    assert backend("parsl").connection_id("FRDF") is None and backend("parsl").inline_poll_s(2.0) == 0.5
    assert backend("panda").connection_id("FRDF") == "drp_panda_frdf" and backend("panda").inline_poll_s(2.0) == 2.0
    with pytest.raises(ValueError, match="unknown WMS 'condor': the choices are: parsl, panda"):
        backend("condor")
