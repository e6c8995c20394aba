"""Site failover: `drp-campaign failover RUN --from SITE --to SITE`.

A data facility that goes down mid-campaign holds up the whole run: the global step waits for its
fan-in. Failover moves the tracts the down site has not finished to another site of the run:

1. The move is recorded in the ledger, tract by tract (`failovers`). Every operator plans its work
   groups from it (graph.plan_groups), so from then on a moved tract belongs to its new site: its
   inputs are placed there by that site's place hop (Rucio), it runs there in a group named after
   the one it left (`FRDF-g000` at UKDF_RAL, its own RUNs), and its outputs come home from there.
2. The new site's tasks after its software check are cleared (before anything of the down site is
   skipped, so that the global step keeps waiting for the new site): its place hop, input check and
   steps run again with the moved groups (Airflow maps each step over the longer group list; the site's
   own groups find their finished BPS runs and end at once: a retry is always safe).
3. The down site's unfinished task instances are marked skipped, with nothing waiting on a worker
   that may never come back. What it made stays at the site and never comes home, so never joins
   the hub's chain; should one of its tasks run again (a cleared task, a worker back), its step
   operator sees its group moved and does nothing (PipelineStepOperator._skip_if_moved).

Each change is safe to make twice, in this order, so a command stopped half-way (a crash, a lost
connection) is finished by running it again. Nothing changes when the input is wrong.

Not yet: moving a site whose outputs have started coming home (its first fan-in has begun). Its
tracts would then reach the hub twice; the command refuses and says so.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drp_campaign.command import EXIT_OK, Command
from drp_campaign.errors import DrpError
from drp_campaign.operate_commands import _reaching_airflow, _run_arguments, _run_name, as_user, connect

if TYPE_CHECKING:
    from drp_campaign.airflow_client import AirflowClient, TaskState
    from drp_campaign.config import CampaignConfig

FINISHED = ("success", "skipped", "removed")


class FailoverRefused(DrpError):
    """The failover asked for cannot be done; the message says why and what to do. Nothing changed."""


@dataclass(frozen=True)
class FailoverPlan:
    from_site: str
    to_site: str
    tracts: tuple[int, ...]  # moved now (none when finishing a failover stopped half-way)
    already_moved: tuple[int, ...]  # moved from FROM_SITE to TO_SITE by an earlier command
    to_clear: tuple[str, ...]  # the new site's tasks that run again with the moved groups
    to_skip: tuple[TaskState, ...]  # the down site's unfinished task instances


def first_fan_in(campaign: CampaignConfig) -> str | None:
    """The campaign's first hop that brings a site's outputs to the hub (in dependency order)."""
    from drp_campaign.graph import build_graph

    return next((s.name for s in build_graph(campaign).stages.values() if s.scope == "fan_in"), None)


def plan_failover(
    campaign: CampaignConfig,
    run: dict,
    conf: dict,
    tasks: list[TaskState],
    moved: dict[int, str],
    from_site: str,
    to_site: str,
) -> FailoverPlan:
    """What `failover` does to RUN (the campaign view's status of it), or FailoverRefused naming why
    not. MOVED: the run's tracts already moved (tract -> site, the ledger's)."""
    from drp_campaign.graph import plan_groups, run_selection

    sites = campaign.campaign_sites()
    for flag, site in (("--from", from_site), ("--to", to_site)):
        if site not in sites:
            raise FailoverRefused(
                f"{flag} {site}: not a site of campaign {campaign.name} (its sites: {', '.join(sites)}); nothing moved"
            )
    if from_site == to_site:
        raise FailoverRefused(f"--from and --to are both {from_site}: name another site to move its work to")
    if from_site == campaign.hub():
        raise FailoverRefused(
            f"--from {from_site}: the hub cannot be failed over (the global steps run there and every product comes "
            "home there); nothing changed. Wait for it and retry its tasks (runbook 4.2)"
        )
    name = _run_name(run)
    if run["state"] == "success":
        raise FailoverRefused(f"{name} has finished (success): nothing left to move; nothing changed")
    run_sites, selected = run_selection(campaign, conf)
    if to_site not in run_sites:
        raise FailoverRefused(
            f"--to {to_site}: not a site of {name} (its sites: {', '.join(run_sites)}); failover moves work to a "
            "site taking part in the run"
        )
    prefix = f"{from_site}."
    unfinished = tuple(t for t in tasks if t.task_id.startswith(prefix) and (t.state or "none") not in FINISHED)
    left = [t for g in plan_groups(campaign, from_site, selected, moved) for t in g.tracts if not g.overlap]
    earlier = tuple(sorted(t for t, site in moved.items() if site == to_site and campaign.tract_site(t) == from_site))
    if from_site not in run_sites or not (left or (earlier and unfinished)):
        gone = f" (its tracts {list(earlier)} were moved to {to_site} already)" if earlier else ""
        raise FailoverRefused(f"--from {from_site}: nothing left to do in {name}{gone}; nothing changed")
    fan_in = first_fan_in(campaign)
    started = [
        t
        for t in tasks
        if fan_in and t.task_id == f"{from_site}.{fan_in}.register" and (t.state or "none") not in ("none", "skipped")
    ]
    if left and started:
        raise FailoverRefused(
            f"--from {from_site}: its outputs have started coming home ({started[0].task_id} is {started[0].state}): "
            f"moving its tracts now would bring a second copy of them to {campaign.hub()}. Failover is possible "
            f"until a site's first fan-in ({fan_in}) begins; retry the site's tasks when it is back instead"
        )
    # All of the new site's tasks, whatever their state now: one not started may be skipped by the
    # scheduler a moment later (a site with no tracts of its own in the run skips them all), and a
    # fan-in left skipped would let the global step skip too once the down site's are. Its software
    # check stands if it passed.
    to_clear = sorted(
        {
            t.task_id
            for t in tasks
            if t.task_id.startswith(f"{to_site}.")
            and not (t.task_id == f"{to_site}.check_software" and t.state == "success")
        }
    )
    return FailoverPlan(from_site, to_site, tuple(left), earlier, tuple(to_clear), unfinished)


# --- the command -----------------------------------------------------------------------------------


def _failover_arguments(parser: argparse.ArgumentParser) -> None:
    _run_arguments(parser)
    parser.add_argument("--from", dest="from_site", required=True, metavar="SITE", help="the site that is down")
    parser.add_argument(
        "--to", dest="to_site", required=True, metavar="SITE", help="the site of the run that takes its work"
    )


@dataclass(frozen=True)
class FailoverDone:
    run_name: str
    plan: FailoverPlan
    by: str

    def lines(self) -> list[str]:
        """What was done, for a terminal or a page: a summary, then each task instance skipped."""
        p = self.plan
        tracts = sorted({*p.tracts, *p.already_moved})
        head = (
            f"{self.run_name}: tracts {tracts} of {p.from_site} now run at {p.to_site} (recorded in the ledger "
            f"by {self.by}); {len(p.to_clear)} tasks of {p.to_site} run again with them; "
            f"{len(p.to_skip)} unfinished task instances of {p.from_site} skipped:"
        )
        return [head, *(f"  {t.label:<45} was {t.state or 'not run'}" for t in p.to_skip)]


def fail_over(
    client: AirflowClient,
    run_ref: str,
    dag_id: str | None,
    from_site: str,
    to_site: str,
    campaign: CampaignConfig | None = None,
) -> FailoverDone:
    """Move FROM_SITE's unfinished tracts in the run RUN_REF (run id or key) to TO_SITE, acting as
    the client's user (the command line's, or the campaign view's logged-in user). CAMPAIGN: the
    run's campaign when the caller has it (else found from the run's DAG)."""
    from drp_campaign.config import campaign_of_dag
    from drp_campaign.graph import run_key
    from drp_campaign.ledger import Ledger

    run = client.campaign_status(run_ref, dag_id)
    dag_id, run_id = run["dag_id"], run["run_id"]
    key = run["run_key"] or run_key(run_id)  # a run with no ledger rows yet has its key all the same
    if campaign is None or campaign.dag_id() != dag_id:
        campaign = campaign_of_dag(dag_id)
    if campaign is None:
        raise FailoverRefused(f"{_run_name(run)}: no campaign file here makes DAG {dag_id}; nothing changed")
    ledger = Ledger()
    conf = client.dag_run(dag_id, run_id).get("conf") or {}
    tasks = client.task_states(dag_id, run_id)
    plan = plan_failover(campaign, run, conf, tasks, ledger.moved_tracts(key), from_site, to_site)
    what = f"fail {plan.from_site} over to {plan.to_site} in {_run_name(run)}"
    # A clear that changes nothing: Airflow checks this user may clear the run's tasks, before anything changes.
    as_user(
        client, what, lambda: client.clear(dag_id, run_id, list(plan.to_clear) or None, only_failed=False, dry_run=True)
    )
    if plan.tracts:
        ledger.record_failover(key, plan.from_site, plan.to_site, plan.tracts, by=client.username)
    if plan.to_clear:
        as_user(client, what, lambda: _clear_settled(client, dag_id, run_id, plan.to_clear))
    note = f"failed over to {plan.to_site} by {client.username} (drp-campaign failover)"
    for t in plan.to_skip:
        as_user(client, what, lambda t=t: _skip(client, dag_id, run_id, t, note))
    return FailoverDone(_run_name(run), plan, client.username)


@_reaching_airflow
def failover(args: argparse.Namespace) -> int:
    """Move the tracts SITE (--from) has not finished in RUN to another site of the run (--to)."""
    print("\n".join(fail_over(connect(args), args.run_id, args.dag, args.from_site, args.to_site).lines()))
    return EXIT_OK


# A scheduler loop that read the new site's tasks before the clear (skipping them one after the
# other, as for a site with no tracts of its own) may write a skip after it: look again this long
# after the clear, clear again what it re-skipped, up to SETTLE_TRIES times.
SETTLE_S = 5.0
SETTLE_TRIES = 5


def _clear_settled(client: AirflowClient, dag_id: str, run_id: str, task_ids: tuple[str, ...]) -> None:
    """Clear TASK_IDS, and make sure none is left skipped by the scheduler meanwhile: the down site's
    tasks are skipped only after this (a fan-in left skipped would let the global step skip)."""
    todo = list(task_ids)
    for _ in range(SETTLE_TRIES):
        client.clear(dag_id, run_id, todo, only_failed=False)
        time.sleep(SETTLE_S)
        wanted = set(task_ids)
        todo = sorted(
            {t.task_id for t in client.task_states(dag_id, run_id) if t.task_id in wanted and t.state == "skipped"}
        )
        if not todo:
            return
    raise FailoverRefused(
        f"the scheduler keeps skipping {', '.join(todo[:5])} after they were cleared; nothing of the down site was "
        "skipped: run the command again"
    )


def _skip(client: AirflowClient, dag_id: str, run_id: str, task: TaskState, note: str) -> None:
    """Mark TASK skipped, unless it has ended meanwhile: skipping the first tasks makes the
    scheduler skip those after them (Airflow then answers 409, "already in skipped state")."""
    from drp_campaign.airflow_client import AirflowApiError

    try:
        client.mark_task(dag_id, run_id, task.task_id, "skipped", task.map_index, note)
    except AirflowApiError as exc:
        if exc.status != 409:
            raise


COMMANDS = [
    Command(
        "failover",
        "move the tracts a down site (--from) has not finished in a run to another site of the run (--to)",
        _failover_arguments,
        failover,
    ),
]
