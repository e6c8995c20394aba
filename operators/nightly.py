"""NightlySummaryOperator: the last task of a scheduled campaign's run, whatever happened before it.

It reads its own run's task states (through the Task SDK, as every task may), the ledger's steps
and hop balances and the summaries of earlier nights; writes the summary next to the run's report
(the campaign view shows it), logs it, and posts it through the alert channels. It fails when the
night failed, so the run's state says so too.
"""

from __future__ import annotations

import json

from airflow.sdk.exceptions import AirflowFailException

from drp_campaign import nightly
from drp_campaign.alerts import Where, deliver, make_alert
from drp_campaign.ledger import campaign_runs

from .base import CampaignOperator

# The worst state of a mapped task's instances is its state in the summary.
WORST_FIRST = ("failed", "upstream_failed", "up_for_retry", "running", "queued", "scheduled", "skipped", "success")


class NightlySummaryOperator(CampaignOperator):
    ui_color = "#fce8e6"

    def execute(self, context) -> dict:
        import sqlalchemy as sa

        key = self.run_key(context)
        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[context["run_id"]]).get(context["run_id"], {})
        task_ids = set(context["dag"].task_ids)
        merged: dict[str, str | None] = {}
        for state_key, state in states.items():
            task_id = nightly.task_of(state_key, task_ids)
            if task_id == ti.task_id:
                continue  # this task, running
            merged[task_id] = min(
                (merged.get(task_id), state), key=lambda s: WORST_FIRST.index(s) if s in WORST_FIRST else 99
            )
        with self.ledger.engine.connect() as conn:
            earlier_keys = [
                r.run_key
                for r in conn.execute(
                    sa.select(campaign_runs.c.run_key)
                    .where(campaign_runs.c.campaign == self.campaign.name, campaign_runs.c.run_key != key)
                    .order_by(campaign_runs.c.started.desc())
                    .limit(nightly.NIGHTS * 3)  # runs without a summary (manual ones) are skipped
                )
            ]
        hops = [
            {
                "hop": b.hop,
                "from": b.src_site,
                "to": b.dst_site,
                "sent": b.sent,
                "arrived": b.arrived,
                "problems": b.problems,
            }
            for b in self.ledger.hop_balances(key)
        ]
        summary = nightly.summarize(
            campaign=self.campaign.name,
            hub=self.campaign.hub(),
            sites=self.selected_sites(context),
            run_id=context["run_id"],
            run_key=key,
            task_states=merged,
            steps=self.ledger.step_records(key),
            hops=hops,
            earlier=nightly.earlier_summaries(earlier_keys),
        )
        path = nightly.summary_file(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2))
        text = nightly.text(summary)
        self.log.info("nightly summary (%s):\n%s", path, text)
        where = Where(dag_id=ti.dag_id, run_id=context["run_id"])
        headline = text.splitlines()[0] + "".join(f"; {r}" for r in summary["regressions"])
        view = f"{where.link().split('/dags/')[0]}/drp/run?run_id={key}"
        deliver(make_alert("nightly_summary", where, headline, link=view, summary=summary))
        if summary["verdict"] != "PASS":
            raise AirflowFailException(f"nightly {self.campaign.name} {key}: FAIL; see {path}")
        return {"summary": str(path), "verdict": summary["verdict"], "regressions": summary["regressions"]}
