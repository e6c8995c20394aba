"""Where an alert goes besides alerts.jsonl and the log: the channels an Airflow Connection turns on.

As in transfer/: one interface (`AlertChannel`), one class per backend, all listed in one place
(`CHANNELS`). Each channel is configured by its Connection and is off while that Connection does
not exist; its `send` raises when the alert did not get through, and `alerts.deliver` logs that
and goes on (an alert must never fail the task, trigger or callback that raises it).

* `drp_alerts`, a webhook: the alert is POSTed as JSON `{"text": ..., "alert": {...}}` (`text` is
  what Slack and Mattermost incoming webhooks take) to the Connection's URL.
* `drp_alerts_smtp`, e-mail: sent with the SMTP provider's `SmtpHook`, so the Connection is the
  provider's `smtp` type (host, port, login and password if the relay wants them; extra
  `from_email`, `disable_ssl`, `disable_tls`, `timeout`, `retry_limit`), plus extra `to`: the
  recipients (a list, or one string separated by commas).
"""

from __future__ import annotations

import html
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from .alerts import Message

WEBHOOK_TIMEOUT_S = 10


class AlertChannel(ABC):
    """One way to reach on-call, configured by the Airflow Connection `conn_id`."""

    conn_id: ClassVar[str]

    def connection(self) -> Connection | None:
        """The channel's Connection, or None: the channel is off."""
        from airflow.sdk import BaseHook

        try:
            return BaseHook.get_connection(self.conn_id)
        except Exception:  # noqa: BLE001 - AirflowNotFoundException and friends: not configured
            return None

    @abstractmethod
    def send(self, conn: Connection, message: Message) -> None:
        """Deliver the message; raise, saying why, when it did not get through."""


class WebhookChannel(AlertChannel):
    conn_id = "drp_alerts"

    def send(self, conn: Connection, message: Message) -> None:
        import requests

        url = webhook_url(conn)
        if not url:
            raise ValueError(f"Connection {self.conn_id} has no host: set it to the webhook's URL")
        body = {"text": message.text, "alert": message.alert}
        requests.post(url, json=body, timeout=WEBHOOK_TIMEOUT_S).raise_for_status()


class EmailChannel(AlertChannel):
    conn_id = "drp_alerts_smtp"

    def send(self, conn: Connection, message: Message) -> None:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        to = conn.extra_dejson.get("to")
        if not to:
            raise ValueError(
                f'Connection {self.conn_id} names no recipients: add them to its extra as "to": ["oncall@..."]'
            )
        with SmtpHook(smtp_conn_id=self.conn_id) as hook:
            hook.send_email_smtp(to=to, subject=message.subject, html_content=email_body(message))


CHANNELS: tuple[AlertChannel, ...] = (WebhookChannel(), EmailChannel())


def webhook_url(conn: Connection) -> str:
    """The Connection's URL: its host, with scheme, port and path (schema) if given, or ''."""
    host = conn.host or ""
    if "://" in host:
        return host
    scheme = conn.conn_type if conn.conn_type in ("http", "https") else "https"
    port = f":{conn.port}" if conn.port else ""
    path = f"/{conn.schema.lstrip('/')}" if conn.schema else ""
    return f"{scheme}://{host}{port}{path}" if host else ""


def email_body(message: Message) -> str:
    """The alert as HTML (what SmtpHook sends): the one-line text, the link, then every field."""
    alert: dict[str, Any] = message.alert
    rows = "".join(
        f"<tr><th align='left'>{html.escape(key)}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in alert.items()
        if value not in ("", None, -1)
    )
    link = html.escape(alert["link"], quote=True)
    return f"<p>{html.escape(message.text)}</p><p><a href='{link}'>{link}</a></p><table>{rows}</table>"
