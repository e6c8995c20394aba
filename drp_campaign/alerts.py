"""Alerts for on-call: every task of a campaign that fails for good says so, once, where people look.

`CampaignAlert` is the campaign DAGs' `on_failure_callback` (an Airflow notifier; it runs in the
failed task's process, after its last try). Each alert names the campaign, the run, the site and
the task (step, hop or gate, with its group), the try, and the error on one line (clipped), with the
task's log address in the UI. It is always appended to `$DRP_WORK_DIR/alerts/alerts.jsonl` (0600:
an error line may name paths), and, when the Airflow Connection `drp_alerts` exists, POSTed to its
host as JSON with a `text` field (what a Slack or Mattermost incoming webhook takes). An alert that
cannot be delivered is logged, never raised: the task's own failure is what matters.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseNotifier

from . import settings
from .airflow_client import default_base_url

log = logging.getLogger(__name__)

ALERTS_CONNECTION = "drp_alerts"
WEBHOOK_TIMEOUT_S = 10
ERROR_CHARS = 500  # of the error, on one line: enough to say what and where, short enough for a chat


def alerts_file():
    return settings.work_dir() / "alerts" / "alerts.jsonl"


def describe(context: dict[str, Any]) -> dict[str, Any]:
    """The alert's fields, from the failed task's context."""
    ti = context["ti"]
    site, _, task = ti.task_id.partition(".")
    error = context.get("exception")
    # One line: a stack command's error puts its reason on the lines after "failed (exit 2):".
    summary = " ".join(str(error).split()) or type(error).__name__ if error is not None else ""
    map_index = getattr(ti, "map_index", -1)
    base = default_base_url().rstrip("/")
    run = urllib.parse.quote(context["run_id"], safe="")
    log_url = f"{base}/dags/{ti.dag_id}/runs/{run}/tasks/{ti.task_id}" + (
        f"/mapped/{map_index}" if map_index >= 0 else ""
    )
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dag_id": ti.dag_id,
        "run_id": context["run_id"],
        "site": site if task else "",
        "task": task or ti.task_id,
        "map_index": map_index,
        "try": getattr(ti, "try_number", None),
        "error": summary[:ERROR_CHARS],
        "log": log_url,
    }


def text(alert: dict[str, Any]) -> str:
    group = f"[{alert['map_index']}]" if alert["map_index"] >= 0 else ""
    where = f"{alert['site']} {alert['task']}{group}" if alert["site"] else f"{alert['task']}{group}"
    return (
        f"DRP campaign {alert['dag_id']} run {alert['run_id']}: {where} failed (try {alert['try']}): "
        f"{alert['error']} - log: {alert['log']}"
    )


class CampaignAlert(BaseNotifier):
    """Record a failed task's alert, and send it to the `drp_alerts` webhook if there is one."""

    def notify(self, context) -> None:
        alert = describe(context)
        path = alerts_file()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as out:  # one line per write: alerts from parallel tasks do not mix
            out.write(json.dumps(alert) + "\n")
        log.error("ALERT %s", text(alert))
        self.send(alert)

    def send(self, alert: dict[str, Any]) -> None:
        url = webhook_url()
        if not url:
            return
        import requests

        try:
            requests.post(url, json={"text": text(alert), "alert": alert}, timeout=WEBHOOK_TIMEOUT_S).raise_for_status()
        except Exception as exc:  # noqa: BLE001 - an alert that cannot be sent must not hide the failure
            log.warning("alert not delivered to the %s webhook: %s", ALERTS_CONNECTION, exc)


def webhook_url() -> str:
    """The `drp_alerts` Connection's URL (its host, with schema and port if given), or ''."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(ALERTS_CONNECTION)
    except Exception:  # noqa: BLE001 - not configured: alerts go to the file and the log only
        return ""
    host = conn.host or ""
    if "://" in host:
        return host
    scheme = conn.conn_type if conn.conn_type in ("http", "https") else "https"
    port = f":{conn.port}" if conn.port else ""
    path = f"/{conn.schema.lstrip('/')}" if conn.schema else ""
    return f"{scheme}://{host}{port}{path}" if host else ""
