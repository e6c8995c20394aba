"""Render a campaign's stage graph as one Airflow DAG.

Per-site work sits in one task group per site (`FRDF.step2b`); each per-site step is mapped over
the site's work groups, which `FRDF.check_inputs` returns at run time (so the trigger form's
site and tract choices shape the run without re-parsing). Global steps sit in the hub's group.
Each site starts with `check_software` (its stack version and pipeline hash; the hub's is the
reference). A hop between the hub and a site is a small group in that site's group:
register -> replicate -> wait (deferred) -> ingest -> verify. The place hop (the campaign's
inputs, hub -> each other site) is one such group, ahead of the site's check_inputs. The tape hop
is a group in the hub's: register -> replicate -> wait -> confirm_tape, then each site's
`release_site_copies`.

Parsing does no network or database I/O: only the campaign YAML files are read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from airflow.sdk import DAG, Param, TaskGroup, TriggerRule

from drp_campaign.operators.archive import (
    ConfirmIdacOperator,
    ConfirmTapeOperator,
    CopyToIdacOperator,
    ReleaseSiteCopiesOperator,
)
from drp_campaign.operators.hops import IngestHopOperator, RegisterHopOperator, ReplicateHopOperator, VerifyHopOperator
from drp_campaign.operators.nightly import NightlySummaryOperator
from drp_campaign.operators.report import CampaignReportOperator
from drp_campaign.operators.review import GATES_PARAM, ReviewGateOperator
from drp_campaign.operators.site_qa import SiteQaOperator
from drp_campaign.operators.software import CheckSoftwareOperator
from drp_campaign.operators.steps import CheckInputsOperator, PipelineStepOperator
from drp_campaign.sensors.hops import HopReplicationSensor

from .alerts import CampaignAlert, run_deadline
from .config import CampaignConfig, ConfigError, find_campaign_files, load_campaign
from .graph import CampaignGraph, Stage, build_graph
from .hops import hop_ends
from .workers import task_placement

log = logging.getLogger(__name__)

START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# Reading, checking and rendering one campaign file takes well under a second; one that takes
# longer than this is left out, so that Airflow's timeout for the whole DAG file
# (dagbag_import_timeout, 30 s) does not take every other campaign's DAG with it.
FILE_BUDGET_S = 10.0


def campaign_params(campaign: CampaignConfig) -> dict[str, Param]:
    """The trigger form: sites picked from the campaign's (all by default), tracts picked from its
    tracts (none picked: all), dry run, and the review gates on or off. A value outside the
    campaign's (e.g. a tract it does not have, sent through the API) is refused by Airflow at
    trigger time, naming the field: nothing starts."""
    sites = campaign.campaign_sites()
    own_site = {tract: site for site in sites for tract in campaign.site_tracts(site)}
    tracts = sorted(own_site)
    facilities = {site: campaign.sites_config.sites[site].facility for site in sites}
    params = {
        "sites": Param(
            sites,
            type="array",
            items={"type": "string", "enum": sites},
            examples=sites,  # a multi-select of the campaign's sites
            values_display={
                site: f"{site} ({facilities[site]}): tracts {', '.join(map(str, campaign.site_tracts(site)))}"
                for site in sites
            },
            title="Sites",
            description="The sites that process this run (all by default). A site left out skips its tasks, "
            "and its tracts are not processed in this run.",
        ),
        "tracts": _tracts_param(tracts, own_site),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Build each step's quantum graph and report its size; execute, move and write nothing.",
        ),
    }
    if campaign.review_gates:
        params[GATES_PARAM] = Param(
            True,
            type="boolean",
            title="Review gates",
            description=(
                f"Wait for a human approval before {', '.join(campaign.review_gates)} (the campaign's review_gates; "
                "answer in Browse > Required Actions). Off: run straight through, as the nightly does."
            ),
        )
    return params


# Up to this many tracts the form offers them as a pick list (and Airflow refuses others); a
# DR-sized campaign's 10,000 would be copied into every task's params (seconds per DAG parse) and
# make an unusable list: there the field takes tract numbers, and check_inputs names unknown ones.
PICK_LIST_TRACTS = 200


def _tracts_param(tracts: list[int], own_site: dict[int, str]) -> Param:
    help_text = (
        "Process only these tracts, each at its own site. Leave empty for every tract of the campaign (the default)."
    )
    if len(tracts) > PICK_LIST_TRACTS:
        return Param(
            None,
            type=["null", "array"],
            items={"type": "integer", "minimum": min(tracts), "maximum": max(tracts)},
            title="Tracts",
            description=f"{help_text} Tract numbers, {min(tracts)}-{max(tracts)} ({len(tracts)} in the campaign).",
        )
    return Param(
        None,
        # The form's multi-select sends strings; a script may send numbers. Either, of this campaign only.
        type=["null", "array"],
        items={"type": ["integer", "string"], "enum": [*tracts, *map(str, tracts)]},
        examples=[str(t) for t in tracts],
        values_display={str(t): f"tract {t} ({own_site[t]})" for t in tracts},
        title="Tracts",
        description=help_text,
    )


class _Renderer:
    """Builds tasks stage by stage, remembering which tasks mean 'stage done' for each site."""

    def __init__(self, graph: CampaignGraph, common: dict):
        self.graph = graph
        self.campaign = graph.campaign
        self.common = common
        self.sites = self.campaign.campaign_sites()
        self.hub = graph.hub
        self.groups = {site: TaskGroup(site, tooltip=self._tooltip(site)) for site in {*self.sites, self.hub}}
        self.done: dict[tuple[str, str | None], list] = {}  # (stage, site or None for global) -> tasks
        self.check_inputs = {}
        self.check_software = {}
        self.gates: dict[str, ReviewGateOperator] = {}
        # Each site's latest task in data-path order: a task whose only upstream is outside the
        # site's group (a fan-out after the global step, the release after tape) also follows it,
        # a redundant edge that makes the grid (topological order within a group) list the site's
        # tasks as the data flows, not those first.
        self.latest: dict[str, object] = {}

    def _tooltip(self, site: str) -> str:
        cfg = self.campaign.sites_config.sites[site]
        return (
            f"{site} ({cfg.facility}): tracts {self.campaign.site_tracts(site) if site in self.campaign.tracts else []}"
        )

    def _on(self, site: str) -> dict:
        """Where a task of this site runs: its site's queue (and executor, for an Edge site)."""
        return task_placement(self.campaign.sites_config.sites[site])

    # -- which tasks a stage's consumers wait for -------------------------------------------------
    def after_at_site(self, names: tuple[str, ...], site: str) -> list:
        tasks = []
        for name in names:
            tasks += self.done.get((name, site)) or self.done[(name, None)]
        return tasks

    def after_everywhere(self, names: tuple[str, ...]) -> list:
        tasks = []
        for name in names:
            if (name, None) in self.done:
                tasks += self.done[(name, None)]
            else:
                tasks += [t for site in self.sites for t in self.done[(name, site)]]
        return tasks

    # -- stages ------------------------------------------------------------------------------------
    def render(self) -> None:
        # The hub's stack is the reference the others' pipeline hash is compared with.
        for site in [self.hub, *[s for s in self.sites if s != self.hub]]:
            with self.groups[site]:
                self.check_software[site] = CheckSoftwareOperator(
                    task_id="check_software",
                    site=site,
                    **self._on(site),
                    reference_task_id=None if site == self.hub else f"{self.hub}.check_software",
                    **self.common,
                )
            if site != self.hub:
                self.check_software[self.hub] >> self.check_software[site]
        for site in self.sites:
            with self.groups[site]:
                self.check_inputs[site] = CheckInputsOperator(
                    task_id="check_inputs", site=site, **self._on(site), **self.common
                )
            self.check_software[site] >> self.check_inputs[site]
            self.latest[site] = self.check_inputs[site]
        for stage in self.graph.stages.values():
            if stage.is_site_step:
                self._site_step(stage)
            elif stage.is_global_step:
                self._global_step(stage)
            elif stage.scope == "to_tape":
                self._archive(stage)
            else:
                self._hop(stage)
        consumed = {dep for s in self.graph.stages.values() for dep in s.after}
        # The place hop feeds each site's check_inputs, not an `after` list: not a final stage.
        finals = tuple(name for name, s in self.graph.stages.items() if name not in consumed and s.scope != "place")
        report = CampaignReportOperator(
            task_id="campaign_report",
            **self._on(self.hub),
            # Sites left out of a run skip their last tasks; the report covers the rest.
            trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
            **self.common,
        )
        self.after_everywhere(finals) >> report
        if self.campaign.qa.overlap:
            self._site_qa() >> report

    def _site_qa(self) -> SiteQaOperator:
        """The site-independence QA at the hub, once every fan-in that brings a compared type home
        (with the second sites' copies of the overlap tracts) has been verified."""
        compared = set(self.campaign.qa.compare)
        returns = tuple(
            stage.name
            for stage in self.graph.stages.values()
            if stage.scope == "fan_in" and compared & set(stage.dataset_types)
        )
        with self.groups[self.hub]:
            qa = SiteQaOperator(
                task_id="site_qa",
                site=self.hub,
                **self._on(self.hub),
                # Sites left out of a run skip their hops; the QA compares what the others made.
                trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
                **self.common,
            )
        self.after_everywhere(returns) >> qa
        return qa

    def _site_step(self, stage: Stage) -> None:
        for site in self.sites:
            with self.groups[site]:
                task = PipelineStepOperator.partial(
                    task_id=stage.name,
                    site=site,
                    step=stage.name,
                    **self._on(site),
                    map_index_template="{{ task.work_group['label'] }}",
                    **self.common,
                ).expand(work_group=self.check_inputs[site].output)
            upstream = self.after_at_site(stage.after, site)
            if stage.name in self.campaign.review_gates:
                self._gate(stage) >> task
            elif upstream:
                upstream >> task
            self.done[(stage.name, site)] = [task]
            self.latest[site] = task

    def _global_step(self, stage: Stage) -> None:
        with self.groups[stage.site]:
            task = PipelineStepOperator(
                task_id=stage.name,
                site=stage.site,
                step=stage.name,
                **self._on(stage.site),
                # Sites left out of a run are skipped; the global step runs on the rest.
                trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
                **self.common,
            )
        if stage.name in self.campaign.review_gates:
            self._gate(stage) >> task
        else:
            self.after_everywhere(stage.after) >> task
        if self.hub not in self.sites:  # no check_inputs at the hub: its software check comes first here
            self.check_software[self.hub] >> task
        self.done[(stage.name, None)] = [task]

    def _gate(self, stage: Stage) -> ReviewGateOperator:
        """The step's review gate at the hub (made once): after what the step waits for at every
        site, before the step anywhere."""
        if stage.name not in self.gates:
            with self.groups[self.hub]:
                self.gates[stage.name] = gate = ReviewGateOperator(
                    task_id=f"review_{stage.name}",
                    step=stage.name,
                    site=self.hub,
                    **self._on(self.hub),
                    # Sites left out of a run skip their tasks; the reviewer looks at the rest.
                    trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
                    retries=0,
                    **self.common,
                )
            self.after_everywhere(stage.after) >> gate
        return self.gates[stage.name]

    def _hop(self, stage: Stage) -> None:
        for site in self.graph.remote_sites():
            ends = hop_ends(self.campaign, stage.name, site)
            source, dest = ends.source, ends.destination
            hop_args = dict(hop=stage.name, site=site, **self.common)
            with (
                self.groups[site],
                TaskGroup(stage.name, tooltip=f"{stage.name}: {source} -> {dest}: {', '.join(stage.dataset_types)}"),
            ):
                register = RegisterHopOperator(task_id="register", **self._on(source), **hop_args)
                replicate = ReplicateHopOperator(task_id="replicate", **self._on(source), **hop_args)
                wait = self._wait(stage, replicate, dest)
                ingest = IngestHopOperator(task_id="ingest", **self._on(dest), **hop_args)
                verify = VerifyHopOperator(task_id="verify", **self._on(dest), **hop_args)
                register >> replicate >> wait >> ingest >> verify
            self.after_at_site(stage.after, site) >> register
            if stage.scope != "place" and all(self.graph.stages[a].is_global_step for a in stage.after):
                self._follows_latest(site, register)
            if stage.scope == "place":  # nothing is placed at a site whose software is wrong, and
                self.check_software[site] >> register  # nothing runs there before its inputs are verified
                verify >> self.check_inputs[site]
            self.done[(stage.name, site)] = [verify]
            if stage.scope != "place":
                self.latest[site] = verify
        if self.hub in self.sites:  # the hub already holds its own data: nothing to move
            self.done[(stage.name, self.hub)] = self.after_at_site(stage.after, self.hub)

    def _follows_latest(self, site: str, task) -> None:
        """TASK also follows the site's latest task (an edge for the grid's order, see `latest`),
        without taking its skip: a site running only an overlap tract skips its first fan-in but
        needs the fan-out; so TASK runs unless something upstream failed, once one succeeded."""
        self.latest[site] >> task
        task.trigger_rule = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS

    def _wait(self, stage: Stage, replicate, dest: str) -> HopReplicationSensor:
        return HopReplicationSensor(
            task_id="wait",
            rule_id=replicate.output,
            stuck_after_s=self.campaign.hops[stage.name].stuck_after_minutes * 60,
            expected_s=self.campaign.hops[stage.name].expected_minutes * 60,
            **self._on(dest),
        )

    def _archive(self, stage: Stage) -> None:
        """Hub disk -> hub tape; once the tape copy is confirmed, each site's copies released and
        a copy sent to each IDAC the hop names (to_<IDAC> -> wait_<IDAC> -> confirm_<IDAC>)."""
        hub_args = dict(hop=stage.name, site=self.hub, **self._on(self.hub), **self.common)
        hop = self.campaign.hops[stage.name]
        tape = hop_ends(self.campaign, stage.name, self.hub).destination_rse
        to = ", ".join([tape, *hop.idacs])
        with (
            self.groups[self.hub],
            TaskGroup(stage.name, tooltip=f"{stage.name}: {self.hub} -> {to}: {', '.join(stage.dataset_types)}"),
        ):
            register = RegisterHopOperator(task_id="register", **hub_args)
            replicate = ReplicateHopOperator(task_id="replicate", **hub_args)
            confirm = ConfirmTapeOperator(task_id="confirm_tape", **hub_args)
            register >> replicate >> self._wait(stage, replicate, self.hub) >> confirm
            at_idacs = []
            for idac in hop.idacs:  # after tape only; the releases below do not wait for them
                copy = CopyToIdacOperator(task_id=f"to_{idac}", idac=idac, **hub_args)
                wait = HopReplicationSensor(
                    task_id=f"wait_{idac}",
                    rule_id=copy.output,
                    stuck_after_s=hop.stuck_after_minutes * 60,
                    expected_s=hop.expected_minutes * 60,
                    **self._on(self.hub),
                )
                at_idac = ConfirmIdacOperator(task_id=f"confirm_{idac}", idac=idac, **hub_args)
                confirm >> copy >> wait >> at_idac
                at_idacs.append(at_idac)
        self.after_everywhere(stage.after) >> register
        done = [confirm, *at_idacs]
        if self.campaign.hops[stage.name].release_site_copies_of:
            for site in self.graph.remote_sites():
                with self.groups[site]:
                    release = ReleaseSiteCopiesOperator(
                        task_id="release_site_copies", hop=stage.name, site=site, **self._on(site), **self.common
                    )
                confirm >> release
                self._follows_latest(site, release)
                done.append(release)
        self.done[(stage.name, None)] = done


def build_dag(campaign: CampaignConfig) -> DAG:
    graph = build_graph(campaign)
    with DAG(
        dag_id=campaign.dag_id(),
        description=campaign.description,
        schedule=campaign.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        params=campaign_params(campaign),
        deadline=run_deadline(campaign),  # on-call hears of a run not finished in deadline_hours
        tags=["drp", "multisite", campaign.name],
        default_args={
            "retries": campaign.retries,
            "retry_delay": dt.timedelta(seconds=10),
            "on_failure_callback": [CampaignAlert()],  # on-call hears of every task that fails for good
        },
        doc_md=(
            f"**{campaign.description}**\n\nCampaign file `{campaign.file}`; sites "
            f"{', '.join(campaign.campaign_sites())}; hub {campaign.hub()}.\n\n"
            "Retry a failed task with *Clear*: steps redo only failed quanta, hops skip what arrived."
        ),
    ) as dag:
        common = {"campaign_file": str(campaign.file), "sites_file": str(campaign.sites_config.file)}
        _Renderer(graph, common).render()
        if campaign.schedule:
            _nightly_summary(dag, campaign, common)
    return dag


def _nightly_summary(dag: DAG, campaign: CampaignConfig, common: dict) -> None:
    """A scheduled campaign's last task: after every other task has ended, however it ended, the
    night's summary (operators/nightly.py); it fails when the night failed, so the run does too."""
    everything = list(dag.tasks)
    summary = NightlySummaryOperator(
        task_id="nightly_summary",
        site=campaign.hub(),
        **task_placement(campaign.sites_config.sites[campaign.hub()]),
        trigger_rule=TriggerRule.ALL_DONE,
        retries=0,
        **common,
    )
    everything >> summary


class CampaignFileTimeout(Exception):
    """A campaign file took longer than its budget to load and render."""


@contextlib.contextmanager
def _time_budget(seconds: float, path: Path) -> Iterator[None]:
    """Raise CampaignFileTimeout in the block once SECONDS have passed.

    By SIGALRM, as Airflow's own DAG file timeout (so only in the main thread; elsewhere there is
    no budget). That outer alarm is kept: when it would ring first it is left to ring, else it is
    set again afterwards with what is left of it."""
    outer, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    if threading.current_thread() is not threading.main_thread() or (outer and outer <= seconds):
        yield
        return

    def expired(signum, frame):
        raise CampaignFileTimeout(
            f"{path}: not loaded within {seconds:g} s; the file makes loading "
            "or rendering its DAG too slow: check it with `drp-campaign validate`"
        )

    previous = signal.signal(signal.SIGALRM, expired)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 1e-3), outer_interval)


def build_all_dags(directory=None, budget_s: float = FILE_BUDGET_S) -> dict[str, DAG]:
    """One DAG per campaign file; nothing starts from a bad file, and it loses only its own DAG.

    Each file is loaded and rendered on its own, within BUDGET_S seconds: any error (a refused
    config, a bug its content triggers, the budget running out) is logged with the file named,
    in the dag-processor's log for that DAG file, and the other campaigns' DAGs still appear."""
    dags: dict[str, DAG] = {}
    files: dict[str, Path] = {}
    for path in find_campaign_files(directory):
        try:
            with _time_budget(budget_s, path):
                dag = build_dag(load_campaign(path))
        except ConfigError as exc:
            log.error("campaign not loaded: %s", exc)
            continue
        except CampaignFileTimeout as exc:
            log.error("campaign not loaded: %s", exc)
            continue
        except Exception:  # noqa: BLE001 - whatever one file does, the others' DAGs still load
            log.exception("campaign not loaded: %s: its DAG could not be built; the error follows", path)
            continue
        if dag.dag_id in dags:
            log.error(
                "campaign not loaded: %s: DAG id %s is already the DAG of %s; give the campaign another name",
                path,
                dag.dag_id,
                files[dag.dag_id],
            )
            continue
        dags[dag.dag_id] = dag
        files[dag.dag_id] = path
    return dags
