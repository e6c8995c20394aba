"""CampaignReportOperator: the last task; balances the whole ledger and writes the report."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException

from drp_campaign import graph
from drp_campaign.hooks.stack import StackHook
from drp_campaign.hops import way
from drp_campaign.report import build_report, format_report, write_report

from .base import CampaignOperator


class CampaignReportOperator(CampaignOperator):
    ui_color = "#e8eaed"

    def execute(self, context) -> dict:
        key = self.run_key(context)
        hub = self.site_config(self.campaign.hub())
        product_types = sorted(
            {t for h in self.campaign.hops.values() if way(h.direction).gathers for t in h.dataset_types}
            | {
                t
                for s in self.campaign.steps.values()
                if s.scope == "global"
                for t in self.campaign.pipeline_spec.step_outputs(s.name)
            }
        )
        products = StackHook(hub).run(
            "count-datasets",
            [
                "--repo",
                str(hub.butler_repo_path()),
                "--collections",
                graph.site_chain(self.campaign, key),
                "--dataset-types",
                ",".join(product_types),
            ],
        )
        report = build_report(
            self.ledger, self.campaign.name, key, products, str(hub.butler_repo_path()), config=self.campaign
        )
        path = write_report(report)
        self.ledger.finish_campaign_run(key)
        self.log.info("campaign report (%s):\n%s", path, format_report(report))
        if not report["ledger_balanced"]:
            raise AirflowException(f"campaign {self.campaign.name} run {key}: the ledger does not balance; see {path}")
        return {"report": str(path), "ledger_balanced": True}
