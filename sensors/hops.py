"""HopReplicationSensor: is the hop's replication rule satisfied? Waits deferred, in the triggerer."""

from __future__ import annotations

import time

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException

from drp_campaign.alerts import TransferWatch
from drp_campaign.hooks.transfer import TransferHook
from drp_campaign.transfer import service_kind
from drp_campaign.transfer.base import STUCK_STATES, StuckBoost
from drp_campaign.triggers.rule_state import RuleStateTrigger

# Long enough for the scheduler to see the deferring worker exit, even on a loaded machine.
FIRST_POLL_DELAY_S = 10.0
# A rule that settles within this long is waited for in the task (most hops of a small campaign):
# resuming from a deferral costs more than that. Longer transfers defer to the triggerer.
INLINE_WAIT_S = 20.0
INLINE_POLL_S = 0.5


class HopReplicationSensor(BaseSensorOperator):
    """Wait for a rule (id from the replicate task's XCom) to reach OK; fail naming stuck files.

    While it waits, on-call hears once of a rule STUCK that is given time to recover, and of a
    wait longer than `expected_s` (alerts.TransferWatch; the trigger goes on with the same watch).
    """

    template_fields = ("rule_id",)
    ui_color = "#fef7e0"

    def __init__(
        self,
        *,
        rule_id: str,
        poll_interval_s: float = 2.0,
        stuck_after_s: float = 0.0,
        expected_s: float = 0.0,
        inline_wait_s: float = INLINE_WAIT_S,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.rule_id = rule_id
        self.poll_interval_s = poll_interval_s
        self.stuck_after_s = stuck_after_s
        self.expected_s = expected_s
        self.inline_wait_s = inline_wait_s

    def execute(self, context) -> dict | None:
        # Look before deferring, for up to inline_wait_s: a rule settled by then needs no trigger.
        # This also keeps clear of an Airflow 3.3 race (apache/airflow#72716): when a trigger fires
        # before the scheduler has drained the deferring worker's exit event, the resumed task is
        # failed as "state changed externally". Hence, too, the trigger's first poll waits a little.
        service = TransferHook().get_service()
        watch = TransferWatch(self.stuck_after_s, self.expected_s)
        boost = StuckBoost(self.stuck_after_s > 0)
        deadline = time.monotonic() + self.inline_wait_s
        while True:
            status = service.rule_status(self.rule_id)
            if status.state == "OK" or (status.state in STUCK_STATES and self.stuck_after_s <= 0):
                return self.execute_complete(context, status.to_dict())
            if boosted := boost.check(service, status):
                self.log.warning("%s", boosted)
            for kind in watch.due(status):
                watch.alert(kind, context["ti"], status)
            if time.monotonic() >= deadline:
                break
            time.sleep(INLINE_POLL_S)
        self.log.info(
            "rule %s: %s, %d/%d files; waiting in the triggerer",
            self.rule_id,
            status.state,
            status.files_ok,
            status.files_total,
        )
        self.defer(
            trigger=RuleStateTrigger(
                self.rule_id,
                service_kind(),
                poll_interval_s=self.poll_interval_s,
                stuck_after_s=self.stuck_after_s,
                first_poll_delay_s=FIRST_POLL_DELAY_S,
                expected_s=self.expected_s,
                waiting_since=watch.since,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context, event: dict) -> dict:
        if event["state"] != "OK":
            errors = "\n".join(f"  {e}" for e in event.get("errors", [])[:50])
            raise AirflowException(
                f"rule {event['rule_id']} is {event['state']}: {event['files_ok']}/{event['files_total']} files "
                f"replicated; failing files:\n{errors}\nFix the source or storage and have Rucio retry the stuck "
                "transfers (`rucio rule update --boost-rule` or a Rucio admin; docs/runbook.md 3), then clear this "
                "task: it waits on the same rule again."
            )
        self.log.info("rule %s OK: %d files, %d B", event["rule_id"], event["files_total"], event["bytes_ok"])
        return {k: event[k] for k in ("rule_id", "files_total", "bytes_ok")}
