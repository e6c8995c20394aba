"""RuleStateTrigger: the poll loop a hop's wait hands to the triggerer (no worker slot held)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from drp_campaign.alerts import TransferWatch
from drp_campaign.transfer import TransferService, transfer_service
from drp_campaign.transfer.base import STUCK_STATES, StuckBoost


class RuleStateTrigger(BaseTrigger):
    """Poll a replication rule until it is OK, or STUCK/SUSPENDED for longer than `stuck_after_s`.

    Rucio retries stuck transfers itself, so a STUCK rule is given time before the task fails.
    Meanwhile on-call hears once of the rule STUCK, and of a wait past `expected_s` counted from
    `waiting_since` (when the sensor began): alerts.TransferWatch, sent from a thread, naming the
    task the triggerer runs this for (`task_instance`).
    """

    def __init__(
        self,
        rule_id: str,
        service_kind: str | None = None,
        rucio_conn_id: str = "rucio_default",
        poll_interval_s: float = 2.0,
        stuck_after_s: float = 0.0,
        first_poll_delay_s: float = 0.0,
        expected_s: float = 0.0,
        waiting_since: float | None = None,
    ):
        super().__init__()
        self.expected_s = expected_s
        self.waiting_since = waiting_since
        self.first_poll_delay_s = first_poll_delay_s
        self.rule_id = rule_id
        self.service_kind = service_kind
        self.rucio_conn_id = rucio_conn_id
        self.poll_interval_s = poll_interval_s
        self.stuck_after_s = stuck_after_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "drp_campaign.triggers.rule_state.RuleStateTrigger",
            {
                "rule_id": self.rule_id,
                "service_kind": self.service_kind,
                "rucio_conn_id": self.rucio_conn_id,
                "poll_interval_s": self.poll_interval_s,
                "stuck_after_s": self.stuck_after_s,
                "first_poll_delay_s": self.first_poll_delay_s,
                "expected_s": self.expected_s,
                "waiting_since": self.waiting_since,
            },
        )

    async def _service(self) -> TransferService:
        if self.service_kind != "rucio":
            return transfer_service(self.service_kind)
        from airflow.sdk import BaseHook

        from drp_campaign.hooks.rucio import connection_fields
        from drp_campaign.transfer.rucio import rucio_client

        conn = await BaseHook.aget_connection(self.rucio_conn_id)
        client = await asyncio.to_thread(rucio_client, connection_fields(conn))
        return transfer_service("rucio", client)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        service = await self._service()
        watch = TransferWatch(self.stuck_after_s, self.expected_s, since=self.waiting_since or time.time())
        await asyncio.sleep(self.first_poll_delay_s)  # the sensor has just looked (see sensors/hops.py)
        stuck_since: float | None = None
        boost = StuckBoost(self.stuck_after_s > 0)  # (again after a triggerer restart: harmless)
        while True:
            status = await asyncio.to_thread(service.rule_status, self.rule_id)
            if status.state == "OK":
                yield TriggerEvent(status.to_dict())
                return
            if boosted := await asyncio.to_thread(boost.check, service, status):
                self.log.warning("%s", boosted)
            if status.state in STUCK_STATES:
                stuck_since = stuck_since or time.monotonic()
                if time.monotonic() - stuck_since >= self.stuck_after_s:
                    yield TriggerEvent(status.to_dict())
                    return
            else:
                stuck_since = None
            for kind in watch.due(status):
                if self.task_instance is not None:
                    await asyncio.to_thread(watch.alert, kind, self.task_instance, status)
            self.log.info("rule %s: %s, %d/%d files", self.rule_id, status.state, status.files_ok, status.files_total)
            await asyncio.sleep(self.poll_interval_s)
