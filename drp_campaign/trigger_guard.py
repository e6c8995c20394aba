"""The same campaign triggered twice at once: the second trigger is refused, naming the first run.

A double click on Trigger, two people on call answering the same alarm, a script retrying a POST
whose answer it lost: each would make a second run of the same work, queued behind the first
(max_active_runs=1) and run after it - every step, hop and product again. So a trigger of a
campaign DAG whose choices (sites, tracts, dry run, review gates: the trigger form's, its defaults
filled in) are those of a run of the DAG that is queued or running is refused with 409, naming
that run; no run is made. Other sites or tracts are other work: accepted (queued behind). A run
that has ended holds nothing: triggering again after it is a re-run, accepted.

The check runs in the api-server ahead of Airflow's trigger route (plugins/trigger_guard.py), so the
UI's Trigger button, the REST API and `drp-campaign run` all meet it; two triggers at the same
instant are checked one after the other. This module is the rule, without Airflow's server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .config import CampaignConfig


@dataclass(frozen=True)
class ActiveRun:
    run_id: str
    state: str  # queued or running
    conf: dict[str, Any] | None
    triggered_by: str | None  # the user who triggered it, when Airflow knows


def run_choices(campaign: CampaignConfig, conf: dict[str, Any] | None, defaults: dict[str, Any] | None = None) -> str:
    """What a run with CONF will do, in one canonical form: the trigger form's defaults (DEFAULTS,
    else read from the campaign) with CONF over them; sites and tracts as sorted sets (no tracts =
    all of them)."""
    from .graph import run_selection

    choices = {**(form_defaults(campaign) if defaults is None else defaults), **(conf or {})}
    sites, tracts = run_selection(campaign, choices)
    choices.update(sites=sorted(set(sites)), tracts=sorted(set(tracts)))
    return json.dumps(choices, sort_keys=True, default=str)


def form_defaults(campaign: CampaignConfig) -> dict[str, Any]:
    from .dag_factory import campaign_params

    return {name: param.value for name, param in campaign_params(campaign).items()}


def twin_run(campaign: CampaignConfig, conf: dict[str, Any] | None, active: Iterable[ActiveRun]) -> ActiveRun | None:
    """The queued or running run that would do what a run with CONF would do, if there is one."""
    defaults = form_defaults(campaign)  # once, not per run
    wanted = run_choices(campaign, conf, defaults)
    for run in active:
        try:
            if run_choices(campaign, run.conf, defaults) == wanted:
                return run
        except (TypeError, ValueError):  # a conf this campaign cannot read now: not the same choices
            continue
    return None


def refusal(dag_id: str, twin: ActiveRun) -> str:
    who = f" (triggered by {twin.triggered_by})" if twin.triggered_by else ""
    return (
        f"not triggered: run {twin.run_id!r} of {dag_id}{who} is {twin.state} with the same choices (sites, "
        "tracts, dry run, review gates), and a second run would do all its work again. Follow that run "
        "(drp-campaign status, or the campaign view); to start over, mark it failed first, then trigger again."
    )
