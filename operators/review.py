"""ReviewGateOperator: a human approves a step before it starts, where the campaign asks for it.

The technote's team looked at every step's outputs before going on; `review_gates` names the
steps that wait for that look. The gate is the standard provider's ApprovalOperator (a
human-in-the-loop task: it waits in Airflow's "awaiting input" state, answered from the UI's
Required Actions page or `PATCH .../hitlDetails`), with a body that says what to look at: per
site, what the steps so far did (groups, quanta, failures accepted or not) and the site QA, with
a link to the campaign view. Approve: the step runs. Reject: the gate fails naming who rejected
and when, so what follows stops (upstream_failed) and the run ends failed; clearing the gate asks
again. Who decided, what and when goes into the ledger, the report and the view. When a gate
starts waiting, on-call is told (alerts.py gate_waiting), with the link to answer it.

The trigger form's `review_gates` Param turns the gates off for one run (the nightly), and a dry
run passes them: there is nothing to look at.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException

from drp_campaign.alerts import GateWaitingAlert

from .base import CampaignOperator

GATES_PARAM = "review_gates"


class ReviewRejected(AirflowFailException):
    """A reviewer rejected the step: not retried; clearing the gate asks again."""


class ReviewGateOperator(CampaignOperator, ApprovalOperator):
    template_fields = (*CampaignOperator.template_fields, *ApprovalOperator.template_fields)
    ui_color = "#fde7c4"

    def __init__(self, *, step: str, **kwargs):
        # The notifier tells on-call the gate waits (once per try), with its Required Actions link.
        super().__init__(subject=f"Review before {step}", body=None, notifiers=[GateWaitingAlert()], **kwargs)
        self.step = step

    def execute(self, context) -> Any:
        key = self.run_key(context)
        why_not = self.passed_without_asking(context)
        if why_not:
            self.ledger.record_review(run_key=key, step=self.step, decision="passed", decided_by=why_not)
            self.log.info("review gate before %s passed without asking: %s", self.step, why_not)
            return {"chosen_options": [self.APPROVE], "passed": why_not}
        self.subject = f"{self.campaign.name} run {key}: approve {self.step}?"
        self.body = self.what_to_look_at(context, key)
        self.log.info("waiting for a reviewer's decision on %s:\n%s", self.step, self.body)
        return super().execute(context)

    def passed_without_asking(self, context) -> str:
        if not context["params"].get(GATES_PARAM, True):
            return "review gates off for this run (trigger form)"
        if self.is_dry_run(context):
            return "dry run: nothing to review"
        return ""

    def what_to_look_at(self, context, key: str) -> str:
        """The gate's body (Markdown): per site and step so far, groups, quanta and failures."""
        records = self.ledger.step_records(key)
        lines = [f"Before **{self.step}** starts, look at what ran so far (campaign run `{key}`):", ""]
        lines += ["| site | step | groups | quanta ok / total | failed (accepted) |", "|---|---|---|---|---|"]
        per: dict[tuple[str, str], list[dict]] = {}
        for r in records:
            per.setdefault((r["site"], r["step"]), []).append(r)
        for (site, step), rows in sorted(per.items()):
            ok, total = sum(r["quanta_succeeded"] for r in rows), sum(r["quanta_total"] for r in rows)
            failed, accepted = sum(r["quanta_failed"] for r in rows), sum(r["quanta_accepted"] for r in rows)
            states = ", ".join(sorted({r["status"] for r in rows}))
            lines.append(f"| {site} | {step} | {len(rows)} ({states}) | {ok} / {total} | {failed} ({accepted}) |")
        if qa := self.ledger.site_qa(key):
            bad = [c for c in qa if not c["ok"]]
            lines += ["", f"Site QA: {len(qa) - len(bad)}/{len(qa)} quantities within tolerance."]
        lines += ["", f"Campaign view: /drp/run?run_id={key} (hops, rules, the ledger); each task's log in the grid."]
        return "\n".join(lines)

    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        key = self.run_key(context)
        chosen = (event.get("chosen_options") or ["?"])[0]
        user = event.get("responded_by_user") or {}
        who = user.get("name") or user.get("id") or "unknown"
        decision = "approved" if chosen == self.APPROVE else "rejected"
        if "error" not in event:
            self.ledger.record_review(run_key=key, step=self.step, decision=decision, decided_by=who)
        if chosen != self.APPROVE or "error" in event:
            super(ApprovalOperator, self).execute_complete(context, event)  # a timeout raises here
            raise ReviewRejected(
                f"{self.step} rejected by {who} at {event.get('responded_at')}: it and what follows do not run; "
                "clear this task to ask again"
            )
        self.log.info("%s approved by %s at %s", self.step, who, event.get("responded_at"))
        return super().execute_complete(context, event)
