"""Operators that run pipeline work at a site: input checks and one group of one step."""

from __future__ import annotations

import datetime as dt

from airflow.sdk.exceptions import AirflowException

from drp_campaign import graph
from drp_campaign.faults import active_faults
from drp_campaign.hooks.stack import StackHook

from .base import CampaignOperator


class StepFailed(AirflowException):
    """Quanta failed: the message names the site, step, group, failing tasks and data IDs."""


class CheckInputsOperator(CampaignOperator):
    """Verify a site's inputs are in place, open its collection chain, return its work groups.

    The returned list is what the site's steps are mapped over (one mapped task per group).
    """

    ui_color = "#fff4e5"

    def execute(self, context) -> list[dict]:
        self.skip_unless_selected(context)
        key = self.run_key(context)
        groups = graph.plan_groups(self.campaign, self.site, self.selected_tracts(context))
        self.ledger.start_campaign_run(key, self.campaign.name, context["run_id"])
        tracts = [t for g in groups for t in g.tracts]
        result = StackHook(self.site_config()).run(
            "check-inputs",
            [
                "--campaign", str(self.campaign.file),
                "--site", self.site,
                "--repo", str(self.site_config().butler_repo_path()),
                "--tracts", ",".join(map(str, tracts)),
                "--chain", graph.site_chain(self.campaign, key),
            ],
        )  # fmt: skip
        if not result.get("ok"):
            raise AirflowException(
                f"site {self.site}: inputs missing for tracts {tracts}: {result.get('missing')}; "
                f"place them in {self.site_config().butler_repo_path()} (drp-campaign seed) and retry"
            )
        self.log.info("site %s: inputs verified: %s; %d work groups", self.site, result.get("raws_per_tract"), len(groups))
        return [g.as_xcom() for g in groups]


class PipelineStepOperator(CampaignOperator):
    """Run one group of one step at a site with the real stack, and fail on the real outcome.

    The output RUN is named from (campaign run, site, step, group), so a retry extends the same
    RUN: quanta that succeeded are skipped, failed ones are redone, nothing is duplicated.
    """

    template_fields = (*CampaignOperator.template_fields, "work_group")
    ui_color = "#e6f4ea"

    def __init__(self, *, step: str, work_group: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.step = step
        self.work_group = work_group or graph.GLOBAL_GROUP.as_xcom()
        self._hook: StackHook | None = None

    def execute(self, context) -> dict:
        stage = self.campaign.steps[self.step]
        if stage.scope == "site":
            self.skip_unless_selected(context)
        key = self.run_key(context)
        label = self.work_group["label"]
        out_run = graph.output_run(self.campaign, key, self.site, self.step, label)
        args = [
            "--campaign", str(self.campaign.file),
            "--site", self.site,
            "--repo", str(self.site_config().butler_repo_path()),
            "--step", self.step,
            "--chain", graph.site_chain(self.campaign, key),
            "--output-run", out_run,
        ]  # fmt: skip
        if self.work_group["tracts"]:
            args += ["--tracts", ",".join(map(str, self.work_group["tracts"]))]
        for fault in active_faults(self.site, self.step):
            self.log.warning("fault injected at %s %s: %s", self.site, self.step, fault)
            args += ["--fail", fault]
        if self.is_dry_run(context):
            args.append("--dry-run")

        self._hook = StackHook(self.site_config())
        result = self._hook.run("run-step", args)
        self._record(context, key, label, out_run, result)
        quanta = result.get("quanta", {})
        self.log.info(
            "site %s %s %s: %s; quanta %s; outputs %s; run %s",
            self.site, self.step, label, result["status"], quanta, result.get("outputs"), out_run,
        )  # fmt: skip
        if result["status"] == "failed":
            raise StepFailed(self._failure_message(label, out_run, result))
        return {"output_run": out_run, "status": result["status"], "quanta": quanta}

    def _record(self, context, key: str, label: str, out_run: str, result: dict) -> None:
        self.ledger.record_step(
            run_key=key,
            campaign=self.campaign.name,
            dag_run_id=context["run_id"],
            site=self.site,
            step=self.step,
            group_label=label,
            output_run=out_run,
            status=result["status"],
            quanta=result.get("quanta", {}),
            started=_parse_time(result.get("started")),
            finished=_parse_time(result.get("finished")),
            duration_s=float(result.get("duration_s") or 0.0),
        )

    def _failure_message(self, label: str, out_run: str, result: dict) -> str:
        quanta = result.get("quanta", {})
        failed = result.get("failed_quanta", [])
        lines = [
            f"site {self.site} step {self.step} group {label}: {quanta.get('failed', len(failed))} of "
            f"{quanta.get('total', '?')} quanta failed ({quanta.get('blocked', 0)} blocked downstream); "
            f"output run {out_run}; pipetask log {result.get('log')}",
        ]
        lines += [f"  {q.get('task')} {q.get('data_id')}: {q.get('error')}" for q in failed[:20]]
        if len(failed) > 20:
            lines.append(f"  ... and {len(failed) - 20} more")
        lines.append("Fix the cause, then clear this task: the retry redoes only the failed quanta.")
        return "\n".join(lines)

    def on_kill(self) -> None:
        if self._hook:
            self._hook.kill()


def _parse_time(value) -> dt.datetime:
    if not value:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
