"""Alerts for on-call: what needs a person, said once, where people look.

Five kinds (`KINDS`), each raised where Airflow already hands us the moment:

* `task_failed`: a campaign task failed for good (after its last try). `CampaignAlert` is every
  campaign task's `on_failure_callback`; a step that failed for review names its failure class.
* `transfer_stuck`, `transfer_slow`: a hop's replication rule is STUCK while the wait still gives
  Rucio time to recover it (`stuck_after_minutes`), or the wait takes longer than the hop's
  `expected_minutes`. `TransferWatch`, used by the hop sensor while it looks and by its trigger
  in the triggerer; each is sent once per run, site and hop (a marker file under alerts/sent/).
* `gate_waiting`: a review gate starts waiting for a decision (once per try): `GateWaitingAlert`
  is the gate's human-in-the-loop notifier, with the link to its Required Actions page.
* `run_late`: a run not finished `deadline_hours` after it was queued: `RunLateAlert`, the
  callback of the DAG's deadline alert (`run_deadline`), run by the triggerer.
* `nightly_summary`: a scheduled campaign's run ended, passed or not: its summary per site and hop,
  against earlier nights, with regressions (drp_campaign/nightly.py, operators/nightly.py).

Every alert names the campaign (DAG), the run, and where there is one the site, the task (step,
hop or gate), its group and failure class, with a link to the page to act on in the UI. One
function makes it (`make_alert`), one formats it (`message`) and one delivers it (`deliver`):
appended to `$DRP_WORK_DIR/alerts/alerts.jsonl` (0600: an error line may name paths), written to
the log, and sent to each channel whose Airflow Connection exists (alert_channels.py: the
`drp_alerts` webhook, `drp_alerts_smtp` e-mail). An alert that cannot be delivered is logged,
never raised: the task's own outcome is what matters.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from . import settings
from .airflow_client import default_base_url
from .alert_channels import CHANNELS
from .live_status import ui_link
from .transfer.base import STUCK_STATES

if TYPE_CHECKING:
    from airflow.sdk import DeadlineAlert

    from .config import CampaignConfig
    from .transfer.base import RuleStatus

log = logging.getLogger(__name__)

KINDS = ("task_failed", "transfer_stuck", "transfer_slow", "gate_waiting", "run_late", "nightly_summary")
# What each kind says after where it happened, and what its link is for ("task" if not here).
HEADLINES = {
    "task_failed": "failed",
    "transfer_stuck": "transfer stuck",
    "transfer_slow": "transfer slower than expected",
    "gate_waiting": "waits for a review decision",
    "run_late": "not finished by its deadline",
    "nightly_summary": "nightly summary",
}
LINK_LABELS = {"task_failed": "log", "gate_waiting": "decide", "run_late": "run", "nightly_summary": "view"}
DETAIL_CHARS = 500  # of the detail, on one line: enough to say what and where, short enough for a chat
FAILING_FILES_SHOWN = 3


def alerts_file():
    return settings.work_dir() / "alerts" / "alerts.jsonl"


def sent_dir():
    """Markers of the alerts sent once per run and task (transfer_stuck, transfer_slow)."""
    return settings.work_dir() / "alerts" / "sent"


@dataclass(frozen=True)
class Where:
    """The run, and the task in it if any, an alert is about, as Airflow names them."""

    dag_id: str
    run_id: str
    task_id: str = ""  # `site.step`, `site.hop.wait`; "" for the whole run
    map_index: int = -1
    try_number: int | None = None
    group: str = ""  # a step's work group label, where the task has one

    @classmethod
    def of(cls, ti: Any, run_id: str | None = None, task: Any = None) -> Where:
        """From a task instance (a context's `ti`, a trigger's `task_instance`) and its task."""
        work_group = getattr(task, "work_group", None)
        return cls(
            dag_id=ti.dag_id,
            run_id=run_id or ti.run_id,
            task_id=ti.task_id,
            map_index=getattr(ti, "map_index", -1),
            try_number=getattr(ti, "try_number", None),
            group=work_group.get("label", "") if isinstance(work_group, dict) else "",
        )

    def link(self, page: str = "") -> str:
        """The UI's page of the task (or of the run), or one of its tabs (`required_actions`)."""
        if self.task_id:
            path = ui_link(self.dag_id, self.run_id, self.task_id, self.map_index)
        else:
            path = f"/dags/{urllib.parse.quote(self.dag_id)}/runs/{urllib.parse.quote(self.run_id, safe='')}"
        url = default_base_url().rstrip("/") + path
        return f"{url}/{page}" if page else url


def one_line(text: str) -> str:
    # A stack command's error puts its reason on the lines after "failed (exit 2):".
    return " ".join(str(text).split())[:DETAIL_CHARS]


def make_alert(
    kind: str, where: Where, detail: str, *, link: str = "", failure_class: str | None = None, **extra: Any
) -> dict[str, Any]:
    """An alert's fields: the same for every kind, then what the kind adds."""
    if kind not in KINDS:
        raise ValueError(f"unknown alert kind {kind!r}: the kinds are {', '.join(KINDS)}")
    site, _, task = where.task_id.partition(".")
    return {
        "kind": kind,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dag_id": where.dag_id,
        "run_id": where.run_id,
        "site": site if task else "",
        "task": task or where.task_id,
        "map_index": where.map_index,
        "group": where.group,
        "try": where.try_number,
        "failure_class": failure_class,
        "detail": one_line(detail),
        "link": link or where.link(),
        **extra,
    }


@dataclass(frozen=True)
class Message:
    """An alert as people read it: a subject (e-mail) and one line of text (log, chat, e-mail)."""

    alert: dict[str, Any]
    subject: str
    text: str


def message(alert: dict[str, Any]) -> Message:
    group = alert["group"] or (str(alert["map_index"]) if alert["map_index"] >= 0 else "")
    task = alert["task"] + (f"[{group}]" if group else "")
    where = " ".join(part for part in (alert["site"], task) if part)
    headline = HEADLINES[alert["kind"]]
    if alert["kind"] == "task_failed":
        failure_class = f", class {alert['failure_class']}" if alert["failure_class"] else ""
        headline += f" (try {alert['try']}{failure_class})"
    what = f"{where} {headline}" if where else headline
    link = f"{LINK_LABELS.get(alert['kind'], 'task')}: {alert['link']}"
    return Message(
        alert=alert,
        subject=f"DRP campaign {alert['dag_id']}: {what}",
        text=f"DRP campaign {alert['dag_id']} run {alert['run_id']}: {what}: {alert['detail']} - {link}",
    )


def deliver(alert: dict[str, Any]) -> Message:
    """Record the alert, log it and send it to every channel that is configured; never raises."""
    msg = message(alert)
    path = alerts_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as out:  # one line per write: alerts from parallel tasks do not mix
            out.write(json.dumps(alert, default=str) + "\n")
    except OSError as exc:
        log.warning("alert not recorded in %s: %s", path, exc)
    (log.error if alert["kind"] == "task_failed" else log.warning)("ALERT %s", msg.text)
    for channel in CHANNELS:
        conn = channel.connection()
        if conn is None:
            continue
        try:
            channel.send(conn, msg)
        except Exception as exc:  # noqa: BLE001 - an alert that cannot be sent must not hide what it says
            log.warning("alert not delivered through Connection %s: %s: %s", channel.conn_id, type(exc).__name__, exc)
    return msg


def deliver_once(alert: dict[str, Any]) -> bool:
    """Deliver unless an alert of this kind was already sent for this task of this run (by any
    process: a sensor, its trigger, a triggerer restarted); True if it was sent now."""
    key = json.dumps([alert[k] for k in ("kind", "dag_id", "run_id", "site", "task", "map_index")])
    marker = sent_dir() / f"{alert['kind']}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"
    try:
        marker.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    except OSError as exc:  # cannot tell: better twice than never
        log.warning("alert marker %s not written: %s", marker, exc)
    deliver(alert)
    return True


# --- the kinds ---------------------------------------------------------------------------------


class CampaignAlert(BaseNotifier):
    """task_failed: every campaign task's `on_failure_callback` (runs after the last try)."""

    def notify(self, context) -> None:
        error = context.get("exception")
        summary = (str(error).strip() or type(error).__name__) if error is not None else ""
        where = Where.of(context["ti"], context["run_id"], context.get("task"))
        alert = make_alert(
            "task_failed",
            where,
            summary,
            failure_class=getattr(error, "failure_class", None),  # operators/steps.py StepFailed
            error=one_line(summary),
            error_type=type(error).__name__ if error is not None else "",
        )
        deliver(alert)


class GateWaitingAlert(BaseNotifier):
    """gate_waiting: a review gate's human-in-the-loop notifier (called when it starts waiting)."""

    def notify(self, context) -> None:
        gate = context["task"]
        where = Where.of(context["ti"], context.get("run_id"), gate)
        deliver(make_alert("gate_waiting", where, gate.subject, link=where.link("required_actions")))


class RunLateAlert(BaseNotifier):
    """run_late: the callback of the campaign DAG's deadline alert (`run_deadline`).

    The triggerer calls it as Airflow's deadline callbacks are called, with a small context:
    `dag_run` (the REST API's DAG run fields) and `deadline` (`deadline_time`).
    """

    def __init__(self, deadline_hours: float = 0.0, context=None):
        super().__init__(context)
        self.deadline_hours = deadline_hours

    def alert(self, context) -> dict[str, Any]:
        run = context["dag_run"]
        deadline = (context.get("deadline") or {}).get("deadline_time")
        detail = (
            f"{self.deadline_hours:g} h after it was queued ({run.get('queued_at')}), deadline {deadline}, "
            f"it is still {run.get('state')}"
        )
        return make_alert("run_late", Where(run["dag_id"], run["dag_run_id"]), detail)

    def notify(self, context) -> None:
        deliver(self.alert(context))

    async def async_notify(self, context) -> None:
        await asyncio.to_thread(deliver, self.alert(context))  # file, HTTP and SMTP: not on the loop


def run_deadline(campaign: CampaignConfig) -> DeadlineAlert | None:
    """The campaign DAG's `deadline`: a run not finished `deadline_hours` after it was queued
    raises run_late once (Airflow checks it in the scheduler, calls back in the triggerer)."""
    if not campaign.deadline_hours:
        return None
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=campaign.deadline_hours),
        callback=AsyncCallback(RunLateAlert, kwargs={"deadline_hours": campaign.deadline_hours}),
    )


@dataclass
class TransferWatch:
    """transfer_stuck and transfer_slow: what on-call hears of a hop's wait while it goes on.

    A rule STUCK while the wait still gives Rucio time to recover it (`stuck_after_s` > 0; with 0
    the wait fails at once and task_failed says so), and a wait longer than the hop's expected
    time. The hop sensor asks `due` on each look at the rule, and so does its trigger.
    """

    stuck_after_s: float = 0.0
    expected_s: float = 0.0
    since: float = field(default_factory=time.time)  # when the wait began (epoch seconds)
    sent: set[str] = field(default_factory=set)  # by this watch; across processes: deliver_once

    def waited_s(self) -> float:
        return max(0.0, time.time() - self.since)

    def due(self, status: RuleStatus) -> list[str]:
        """The alerts a rule that is not done, and not given up on, calls for, not yet sent here."""
        kinds = []
        if status.state in STUCK_STATES and self.stuck_after_s > 0:
            kinds.append("transfer_stuck")
        if self.expected_s > 0 and self.waited_s() >= self.expected_s:
            kinds.append("transfer_slow")
        return [kind for kind in kinds if kind not in self.sent]

    def alert(self, kind: str, ti: Any, status: RuleStatus) -> None:
        """Send it once per task of a run. Blocking (file, HTTP, SMTP): a trigger runs it in a thread."""
        self.sent.add(kind)
        waited_min, files = self.waited_s() / 60, f"{status.files_ok}/{status.files_total} files"
        if kind == "transfer_stuck":
            failing = "; ".join(status.errors[:FAILING_FILES_SHOWN]) or "no file named"
            detail = (
                f"rule {status.rule_id} is {status.state}: {files} replicated; the wait gives it up to "
                f"{self.stuck_after_s / 60:g} min to recover; failing: {failing}"
            )
        else:
            detail = (
                f"rule {status.rule_id} is {status.state} after {waited_min:.0f} min (the hop expects at most "
                f"{self.expected_s / 60:g} min): {files} replicated"
            )
        extra = {"rule_id": status.rule_id, "state": status.state, "waited_min": round(waited_min, 1)}
        deliver_once(make_alert(kind, Where.of(ti), detail, **extra))
