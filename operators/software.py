"""Software in place: each site's stack reports the campaign's pinned version and the hub's pipeline.

Before any step, `<SITE>.check_software` runs the site's own setup command and `software-report`
there (drp_campaign/stackside/software.py). The hub's check runs first and is the reference for
the pipeline: every other site must expand the campaign's pipeline into exactly the same tasks and
configs (same sha256). Every site, the hub included, must report the campaign's `stack_version`.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from drp_campaign import settings
from drp_campaign.hooks.stack import StackHook
from drp_campaign.stack import StackCommandError

from .base import CampaignOperator

SHORT = 12  # characters of a pipeline hash shown in messages


class SoftwareMismatch(AirflowFailException):
    """The site's stack version or expanded pipeline differs from the campaign's: fix the site or the pin.

    Not retried: the same setup command would report the same software again.
    """


class NoSoftwareReference(AirflowFailException):
    """The hub's report (the pipeline reference) is missing: its check did not run in this DAG run."""


class StackSetupFailed(AirflowException):
    """The site's setup command (or the report under it) failed; retried, as a site's file system
    or module system may be briefly unavailable."""


def _shown(path: str | Path) -> str:
    """A path as people recognise it: relative to the project when inside it."""
    path = Path(path)
    try:
        return str(path.relative_to(settings.PROJECT_ROOT))
    except ValueError:
        return str(path)


def _version_text(report: dict) -> str:
    """`30.2026.4300`, or `mixed (lsst-daf-butler 30.2026.4300, lsst-pipe-base 29.2025.1000, ...)`."""
    version = report.get("stack_version")
    packages = report.get("packages") or {}
    if packages and len(set(packages.values())) > 1:
        details = ", ".join(f"{name} {v or 'not installed'}" for name, v in packages.items())
        return f"{version} ({details})"
    return str(version)


class CheckSoftwareOperator(CampaignOperator):
    """Run `software-report` at the site; fail unless it reports the pinned version and the hub's pipeline.

    `reference_task_id` is the task whose XCom (a report like ours) holds the pipeline reference:
    the hub's `check_software` for every other site, None at the hub itself. Returns the site's
    report (a small dict) as XCom.
    """

    template_fields = (*CampaignOperator.template_fields, "reference_task_id")
    ui_color = "#f3e8fd"

    def __init__(self, *, reference_task_id: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.reference_task_id = reference_task_id
        self._hook: StackHook | None = None

    def execute(self, context) -> dict:
        if self.site != self.campaign.hub():
            # The hub checks on every run: its global steps run whichever sites are selected.
            self.skip_unless_selected(context)
        reference = self._reference(context)  # first: without it there is nothing to compare with
        report = self._report()
        pinned = self.campaign.stack_version
        if report["stack_version"] != pinned:
            self._fail(
                SoftwareMismatch(
                    f"site {self.site}: stack version {_version_text(report)} does not match the campaign's pinned "
                    f"{pinned} ({_shown(self.campaign.file)}: stack_version); install {pinned} at {self.site} "
                    f"({self._setup_text()}) or change the pin, then clear this task"
                )
            )
        if reference is not None and reference["pipeline_sha"] != report["pipeline_sha"]:
            hub = reference.get("site") or self.campaign.hub()
            self._fail(
                SoftwareMismatch(
                    f"site {self.site}: pipeline {_shown(self.campaign.pipeline_spec.file)} expands to "
                    f"{report['pipeline_sha'][:SHORT]} ({report['pipeline_tasks']} tasks) here but to "
                    f"{reference['pipeline_sha'][:SHORT]} ({reference.get('pipeline_tasks')} tasks) at the hub {hub} "
                    f"({self.reference_task_id}): the sites would run different task configs; make {self.site}'s stack "
                    f"expand it as {hub}'s does ({self._setup_text()}; compare `software-report` at both), then clear "
                    f"this task"
                )
            )
        out = {
            "site": self.site,
            "stack_version": report["stack_version"],
            "packages": report["packages"],
            "python": report["python"],
            "pipeline_sha": report["pipeline_sha"],
            "pipeline_tasks": report["pipeline_tasks"],
            "reference": reference.get("site") if reference else None,
        }
        against = f"matches the hub {out['reference']}'s" if reference else "is the reference (hub)"
        self.log.info(
            "site %s: software in place: stack %s (pinned), python %s; pipeline %s (%d tasks, sha %s) %s",
            self.site,
            report["stack_version"],
            report["python"],
            _shown(self.campaign.pipeline_spec.file),
            report["pipeline_tasks"],
            report["pipeline_sha"][:SHORT],
            against,
        )
        return out

    def on_kill(self) -> None:
        if self._hook:
            self._hook.kill()

    # -- helpers ---------------------------------------------------------------------------------
    def _setup_text(self) -> str:
        return f"its stack_setup in {_shown(self.campaign.sites_config.file)}: {self.site_config().stack_setup}"

    def _fail(self, exc: Exception) -> None:
        self.log.error("%s", exc)  # in the task log as text, not only in the exception's detail
        raise exc from None  # the message says it all; no second traceback of the StackCommandError

    def _report(self) -> dict:
        args = ["--campaign", str(self.campaign.file), "--sites", str(self.campaign.sites_config.file)]
        self._hook = StackHook(self.site_config())
        try:
            return self._hook.run("software-report", args)
        except StackCommandError as exc:
            self._fail(
                StackSetupFailed(
                    f"site {self.site}: could not set up the stack or report its software ({self._setup_text()}): "
                    f"{str(exc).removeprefix(f'site {self.site}: ')}\n"
                    f"run that setup command in a shell at {self.site} and fix it, then clear this task"
                )
            )
        finally:
            self._hook = None

    def _reference(self, context) -> dict | None:
        if not self.reference_task_id:
            return None
        reference = context["ti"].xcom_pull(task_ids=self.reference_task_id)
        if not isinstance(reference, dict) or not reference.get("pipeline_sha"):
            self._fail(
                NoSoftwareReference(
                    f"site {self.site}: no software report from {self.reference_task_id} in this run (got "
                    f"{reference!r}), so the pipeline cannot be compared with the hub's; "
                    "run that task, then clear this one"
                )
            )
        return reference
