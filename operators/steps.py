"""Operators that run pipeline work at a site: input checks and one group of one step (via BPS)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from drp_campaign import bps, graph
from drp_campaign.drills import active_config_overrides, active_faults, active_job_fault
from drp_campaign.failures import load_rules
from drp_campaign.hooks.stack import StackHook
from drp_campaign.stack import StackCommandError
from drp_campaign.triggers.bps_run import BpsRunTrigger
from drp_campaign.wms import ENDED, backend

from .base import CampaignOperator

# Long enough for the scheduler to see the deferring worker exit (apache/airflow#72716).
FIRST_POLL_DELAY_S = 10.0
# A run that ends within this long is waited for in the task itself: a deferral costs more than
# that (a new task process to resume in, and the first-poll delay above). Longer runs defer.
INLINE_WAIT_S = 30.0


class StepFailed(AirflowFailException):
    """Quanta failed for review: the message names site, step, group, data IDs and failure classes.

    Not retried by Airflow on its own (a rerun of the same definition would fail the same way);
    transient failures were already restarted by the operator, as the failure rules allow.
    `failure_class` is the class that failed it (failures.py), for the alert (alerts.py).
    """

    def __init__(self, message: str, failure_class: str = "review"):
        super().__init__(message)
        self.failure_class = failure_class


class StepRefused(AirflowFailException):
    """Refused before submission (bad request, missing Connection, empty data query): nothing ran."""


class CheckInputsOperator(CampaignOperator):
    """Verify a site's inputs are in place, open its collection chain, return its work groups.

    The returned list is what the site's steps are mapped over (one mapped task per group).
    """

    ui_color = "#fff4e5"

    def execute(self, context) -> list[dict]:
        # The hub holds the run's chain whatever the selection: its global steps read it and the
        # fan-ins bring their outputs into it. Without tracts of its own it makes the chain and
        # returns no groups (its own steps are then skipped).
        if self.site != self.campaign.hub():
            self.skip_unless_selected(context)
        key = self.run_key(context)
        selected = self.site in self.selected_sites(context)
        groups = self.work_groups(context) if selected else []
        tracts = [t for g in groups for t in g.tracts]
        args = [
            *self.site_args(),
            "--tracts",
            ",".join(map(str, tracts)),
            "--chain",
            graph.site_chain(self.campaign, key),
        ]
        if any(g.overlap for g in groups):
            args += ["--overlap-chain", graph.overlap_chain(self.campaign, key, self.site)]
        if not groups:
            args += ["--chain-only"]
        result = StackHook(self.site_config()).run("check-inputs", args)
        if not result.get("ok"):
            raise AirflowException(
                f"site {self.site}: inputs missing for tracts {tracts}: {result.get('missing')}; "
                f"place them in {self.site_config().butler_repo_path()} (the campaign's place hop, or "
                "drp-campaign seed at the hub) and clear this task"
            )
        self.log.info(
            "site %s: inputs verified: %s; %d work groups", self.site, result.get("raws_per_tract"), len(groups)
        )
        return [g.as_xcom() for g in groups]


class PipelineStepOperator(CampaignOperator):
    """Run one group of one step at a site through BPS, wait deferred, finish on the real outcome.

    Submits with `bps submit` (ctrl_bps_parsl here, ctrl_bps_panda at a data facility), then hands
    the wait to BpsRunTrigger, holding no worker slot. The run lives in a retry-stable directory,
    so a retried task, a cleared task or a restarted scheduler finds the same run (the stack side's
    bps-submit is idempotent: attach, restart, or rescue after a fix; never a second run). When the
    run ends, failed quanta are classified by configs/failure-rules.yaml: transient ones restart the
    run (up to the rule's max_retries), accepted ones are counted and let the campaign go on, and
    anything else fails the task for review with the data IDs in the message.
    """

    template_fields = (*CampaignOperator.template_fields, "work_group")
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        step: str,
        work_group: dict | None = None,
        poll_interval_s: float = 2.0,
        inline_wait_s: float = INLINE_WAIT_S,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.step = step
        self.work_group = work_group or graph.GLOBAL_GROUP.as_xcom()
        self.poll_interval_s = poll_interval_s
        self.inline_wait_s = inline_wait_s
        self._hook: StackHook | None = None
        self._panda_env_cache: dict[str, str] | None = None
        self._waiting_on: str | None = None  # the run dir of the BPS run waited on in the task

    # -- where things are -----------------------------------------------------------------------
    def _label(self) -> str:
        return self.work_group["label"]

    def _run_dir(self, key: str) -> Path:
        return bps.run_dir(self.campaign, key, self.site, self.step, self._label())

    def _panda_env(self) -> dict[str, str]:
        """The site's PanDA Connection as pandaclient's environment, looked up once per task run."""
        if backend(self.campaign.bps.wms).connection_id(self.site) is None:
            return {}
        if self._panda_env_cache is None:
            self._panda_env_cache = self._lookup_panda_env()
        return self._panda_env_cache

    def _lookup_panda_env(self) -> dict[str, str]:
        from airflow.sdk import BaseHook

        from drp_campaign.panda_connection import PandaConfigError, connection_id, panda_environment

        conn_id = connection_id(self.site)
        try:
            conn = BaseHook.get_connection(conn_id)
        except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException and friends
            raise StepRefused(
                f"site {self.site}: no Airflow Connection {conn_id!r} for PanDA ({type(exc).__name__}); "
                f'add it (host = the PanDA server URL, password = the token, extra = {{"vo": ...}}; see '
                f"drp_campaign/panda_connection.py) and clear this task"
            ) from None
        try:
            return panda_environment(conn)
        except PandaConfigError as exc:  # a field missing or wrong: fixing the Connection is the cure
            raise StepRefused(f"site {self.site}: {exc}") from None

    def _stack(self, subcommand: str, args: list[str]) -> dict:
        self._hook = StackHook(self.site_config())
        try:
            return self._hook.run(subcommand, args, extra_env=self._panda_env())
        finally:
            self._hook = None

    def _skip_if_moved(self, context) -> None:
        """A group planned here before a failover moved its tracts away runs at their new site
        only: this instance (cleared by someone, or run by a worker that came back) does nothing."""
        planned = {g.label: set(g.tracts) for g in self.work_groups(context)}
        away = sorted(set(self.work_group["tracts"]) - planned.get(self._label(), set()))
        if away:
            moved = self.moved_tracts(context)
            raise AirflowSkipException(
                f"site {self.site} {self.step} {self._label()}: tracts {away} were failed over to "
                f"{', '.join(sorted({moved.get(t, '?') for t in away}))}; they run there, not here"
            )

    # -- submit and wait ------------------------------------------------------------------------
    def execute(self, context) -> dict:
        stage = self.campaign.steps[self.step]
        if stage.scope == "site":
            self.skip_unless_selected(context)
            self._skip_if_moved(context)
        key = self.run_key(context)
        if self.is_dry_run(context):
            return self._dry_run(context, key)
        args = [
            *self.site_args(),
            "--step",
            self.step,
            "--group",
            self._label(),
            "--key",
            key,
            "--chain",
            graph.group_chain(self.campaign, key, self.site, self._label()),
            "--run-dir",
            str(self._run_dir(key)),
        ]
        if self.work_group["tracts"]:
            args += ["--tracts", ",".join(map(str, self.work_group["tracts"]))]
        for fault in active_faults(self.site, self.step):
            self.log.warning("fault injected at %s %s: %s", self.site, self.step, fault)
            args += ["--fail", fault]
        for override in active_config_overrides(self.site, self.step):
            self.log.warning("config override injected at %s %s: %s", self.site, self.step, override)
            args += ["--config", override]
        if job_fault := active_job_fault(self.site, self.step):
            self.log.warning("job fault injected at %s %s: %s", self.site, self.step, job_fault)
            args += ["--job-fault", job_fault]
        try:
            run = self._stack("bps-submit", args)
        except StackCommandError as exc:
            raise StepRefused(str(exc)) from None
        self.log.info(
            "site %s %s %s: BPS run %s (%s, attempt %d): %s; output run %s",
            self.site,
            self.step,
            self._label(),
            run["run_id"],
            run["wms"],
            run["attempt"],
            run["action"],
            run["output_run"],
        )
        return self._wait(context, run)

    def _wait(self, context, run: dict) -> dict:
        # Look before deferring, for up to inline_wait_s: a run that ends by then needs no trigger
        # (and this keeps clear of apache/airflow#72716, as in sensors/hops.py: the trigger's
        # first poll waits).
        wms = backend(run["wms"])
        trigger = BpsRunTrigger(
            run_dir=run["run_dir"],
            wms=run["wms"],
            run_id=str(run["run_id"]),
            site=self.site,
            campaign_file=str(self.campaign.file),
            sites_file=self.sites_file,
            panda_conn_id=wms.connection_id(self.site),
            poll_interval_s=self.poll_interval_s,
            first_poll_delay_s=FIRST_POLL_DELAY_S,
        )
        self._waiting_on = run["run_dir"]  # on_kill cancels it, as the trigger's on_kill does once deferred
        try:
            poll_s = wms.inline_poll_s(self.poll_interval_s)
            state = asyncio.run(trigger.wait(self._panda_env() or None, self.inline_wait_s, poll_s))
        finally:
            self._waiting_on = None
        if state in ENDED:
            return self.execute_complete(context, {"run_dir": run["run_dir"], "state": str(state), "polls": 1})
        self.log.info("BPS run %s: %s; waiting in the triggerer", run["run_id"], state)
        self.defer(trigger=trigger, method_name="execute_complete")

    def execute_complete(self, context, event: dict) -> dict:
        key = self.run_key(context)
        label = self._label()
        args = ["--campaign", str(self.campaign.file), "--run-dir", event["run_dir"]]
        result = self._stack("bps-report", args)
        if result["status"] == "running":  # held, or restarted by someone meanwhile
            return self._wait(context, {**result, "run_dir": event["run_dir"]})
        classification = load_rules().classify(result["failed_quanta"])
        verdict = "succeeded" if result["status"] == "succeeded" else classification.verdict(result["restarts"])
        quanta = {**result["quanta"], "accepted": len(classification.accepted) if verdict == "accept" else 0}
        self.log.info(
            "site %s %s %s: BPS run %s %s after %d poll(s); quanta %s; per task %s; outputs %s",
            self.site,
            self.step,
            label,
            result["run_id"],
            result["status"],
            event.get("polls", 0),
            quanta,
            result["quanta_per_task"],
            result["outputs"],
        )
        if verdict == "retry":
            self.log.warning(
                "transient failures, restarting the run:\n%s",
                classification.message(self.site, self.step, label, result["output_run"]),
            )
            run = self._stack("bps-restart", args)
            return self._wait(context, run)
        if verdict == "accept":
            self._stack("bps-report", [*args, "--accept-failures"])  # the RUNs join the chain
            self.log.warning(
                "accepted failures (counted in the campaign report):\n%s",
                classification.message(self.site, self.step, label, result["output_run"]),
            )
        self._record(context, key, label, result, quanta, verdict)
        if verdict == "fail":
            message = self._failure_message(result, classification)
            self.log.error("%s", message)  # in the task log as text, not only in the exception's detail
            raise StepFailed(message, classification.failing_class())
        return {
            "output_run": result["output_run"],
            "output_runs": result["output_runs"],
            "status": verdict,
            "run_id": result["run_id"],
            "quanta": quanta,
            "per_task": result["quanta_per_task"],
            "failures": classification.as_xcom() if result["failed_quanta"] else {},
        }

    def _dry_run(self, context, key: str) -> dict:
        out_run = graph.output_run(self.campaign, key, self.site, self.step, self._label())
        args = [
            *self.site_args(),
            "--step",
            self.step,
            "--chain",
            graph.group_chain(self.campaign, key, self.site, self._label()),
            "--output-run",
            out_run,
            "--dry-run",
        ]
        if self.work_group["tracts"]:
            args += ["--tracts", ",".join(map(str, self.work_group["tracts"]))]
        result = self._stack("run-step", args)
        self.log.info(
            "dry run %s %s %s: %s quanta per task", self.site, self.step, self._label(), result.get("quanta_per_task")
        )
        self.ledger.record_step(
            run_key=key,
            campaign=self.campaign.name,
            dag_run_id=context["run_id"],
            site=self.site,
            step=self.step,
            group_label=self._label(),
            output_run=out_run,
            status=result["status"],
            quanta=result.get("quanta", {}),
            started=_parse_time(result.get("started")),
            finished=_parse_time(result.get("finished")),
            duration_s=float(result.get("duration_s") or 0.0),
        )
        return {"output_run": out_run, "status": result["status"], "quanta": result.get("quanta", {})}

    def _record(self, context, key: str, label: str, result: dict, quanta: dict, verdict: str) -> None:
        self.ledger.record_step(
            run_key=key,
            campaign=self.campaign.name,
            dag_run_id=context["run_id"],
            site=self.site,
            step=self.step,
            group_label=label,
            output_run=result["output_run"],
            status={"succeeded": "succeeded", "accept": "accepted", "fail": "failed"}[verdict],
            quanta=quanta,
            started=_parse_time(result.get("started")),
            finished=_parse_time(result.get("finished")),
            duration_s=(_parse_time(result.get("finished")) - _parse_time(result.get("started"))).total_seconds(),
            wms_run_id=str(result["run_id"]),
        )

    def _failure_message(self, result: dict, classification) -> str:
        quanta = result["quanta"]
        head = (
            f"{quanta['failed']} of {quanta['total']} quanta failed ({quanta['blocked']} blocked downstream); "
            f"BPS run {result['run_id']} ({result['wms']}), log {result['log']}"
        )
        return "\n".join(
            [
                head,
                classification.message(self.site, self.step, self._label(), result["output_run"]),
                "Clearing this task restarts the same run (only what failed reruns); if you changed the step's "
                "pipeline or config, it submits a rescue run that skips what already succeeded.",
            ]
        )

    def on_kill(self) -> None:
        """Marked failed or cleared in the UI: stop the stack command running now, and cancel the
        BPS run this task is waiting on in the task itself (once deferred, the trigger does it)."""
        if self._hook:
            self._hook.kill()
        if run_dir := self._waiting_on:
            self._waiting_on = None
            self.log.warning("task killed while waiting on BPS run %s: cancelling it", run_dir)
            result = StackHook(self.site_config()).run(
                "bps-cancel", ["--run-dir", run_dir], extra_env=self._panda_env()
            )
            self.log.info("BPS run %s: %s", run_dir, result.get("action"))


def _parse_time(value) -> dt.datetime:
    if not value:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
