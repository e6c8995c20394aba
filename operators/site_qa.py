"""SiteQaOperator: the site-independence QA at the hub, once the products have come home.

Each overlap tract was processed at its own site (whose copy is the campaign's product) and at a
second site (whose copy came home into per-site RUNs, out of the hub's chain). The stack side's
`site-qa` compares the two per dataset type (row counts, per-column statistics, metric values)
within the campaign's tolerances, writes a JSON report and one PNG per tract, and the checks go
into the ledger, where the report and the campaign view read them.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from drp_campaign.hooks.stack import StackHook
from drp_campaign.report import site_qa_dir

from .base import CampaignOperator


class SiteQaFailed(AirflowFailException):
    """The two sites' results differ beyond a tolerance: for review, not retried (the same data
    would compare the same way). The message names tract, dataset type, quantity, both values."""


class SiteQaOperator(CampaignOperator):
    ui_color = "#fef7e0"

    def overlap_tracts(self, context) -> dict[int, tuple[str, str]]:
        """Overlap tracts of this run -> (own site, second site): the tract selected (or all), and
        both sites taking part in the run."""
        sites = set(self.selected_sites(context))
        selected = set(self.selected_tracts(context))
        # A failed-over tract's product is made at its new site; a site failed over from is down:
        # it makes no second copies either.
        moved = self.moved_tracts(context)
        sites -= {self.campaign.tract_site(t) for t in moved}  # a tract moves once, from its own site
        pairs = {
            tract: (moved.get(tract, self.campaign.tract_site(tract)), second)
            for tract, second in sorted(self.campaign.qa.overlap.items())
            if not selected or tract in selected
        }
        return {t: (own, second) for t, (own, second) in pairs.items() if own != second and {own, second} <= sites}

    def execute(self, context) -> dict:
        key = self.run_key(context)
        tracts = self.overlap_tracts(context)
        if not tracts:
            raise AirflowSkipException("no overlap tract in this run (none selected, or a site of each left out)")
        if self.is_dry_run(context):
            raise AirflowSkipException("dry run: no outputs to compare")
        hub = self.site_config(self.campaign.hub())
        report_dir = site_qa_dir(key)
        result = StackHook(hub).run(
            "site-qa",
            [
                "--campaign",
                str(self.campaign.file),
                "--repo",
                str(hub.butler_repo_path()),
                "--key",
                key,
                "--report-dir",
                str(report_dir),
                "--tracts",
                ",".join(map(str, tracts)),
            ],
        )
        # The stack side names a tract's own site as its first side; a failed-over tract's product
        # was made where it was moved to.
        checks = [{**c, "site_a": tracts[c["tract"]][0]} for c in result["checks"]]
        self.ledger.record_site_qa(key, tracts, checks)
        failed = [c for c in checks if not c["ok"]]
        pairs = ", ".join(f"tract {t}: {a} vs {b}" for t, (a, b) in tracts.items())
        self.log.info(
            "site QA (%s): %d quantities compared, %d outside tolerance; report %s; plots %s",
            pairs,
            len(checks),
            len(failed),
            result["report"],
            ", ".join(result["plots"]),
        )
        if failed:
            message = (
                f"site-independence QA failed ({pairs}): {len(failed)} of {len(checks)} quantities differ beyond "
                f"their tolerance:\n{result['failure_message']}\nReport {result['report']}. Find why the sites "
                "differ (stack version, task config, calibration); this task is not retried on its own."
            )
            self.log.error("%s", message)
            raise SiteQaFailed(message)
        return {"tracts": sorted(tracts), "checks": len(checks), "report": result["report"], "plots": result["plots"]}
