"""What every campaign operator shares: its campaign, its site, and the run it belongs to."""

from __future__ import annotations

from functools import cached_property

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from drp_campaign import graph
from drp_campaign.config import CampaignConfig, SiteConfig, load_campaign
from drp_campaign.ledger import Ledger, RunKeyTaken


class CampaignOperator(BaseOperator):
    """Base of the campaign's operators.

    Operators carry only the campaign file path and names (site, step, hop): the config is loaded
    again on the worker, so a task always runs against the validated file, and XComs stay small.
    """

    template_fields = ("campaign_file", "sites_file")
    ui_color = "#e8f0fe"

    def __init__(self, *, campaign_file: str, sites_file: str | None = None, site: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.campaign_file = campaign_file
        self.sites_file = sites_file
        self.site = site

    @cached_property
    def campaign(self) -> CampaignConfig:
        return load_campaign(self.campaign_file, self.sites_file)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger()

    def site_config(self, name: str | None = None) -> SiteConfig:
        return self.campaign.sites_config.sites[name or self.site]

    def run_key(self, context) -> str:
        """The key naming this campaign run's collections, files and ledger rows (graph.run_key),
        claimed in the ledger for this run id: a run whose key already names another run fails
        here, before it can take that run's work for its own."""
        run_id = context["run_id"]
        key = graph.run_key(run_id)
        if getattr(self, "_claimed_run", None) != run_id:
            try:
                self.ledger.claim_run_key(key, self.campaign.name, run_id)
            except RunKeyTaken as err:
                raise AirflowFailException(str(err)) from None
            self._claimed_run = run_id
        return key

    def site_args(self) -> list[str]:
        """The stack side's arguments naming the campaign, this task's site and its Butler repo."""
        return [
            "--campaign",
            str(self.campaign.file),
            "--site",
            self.site,
            "--repo",
            str(self.site_config().butler_repo_path()),
        ]

    def selected_sites(self, context) -> list[str]:
        return graph.run_selection(self.campaign, context["params"])[0]

    def selected_tracts(self, context) -> list[int]:
        """The trigger form's tracts (none: all). One the campaign does not have fails the task
        naming it (a small campaign's form refuses it already; a DR-sized one's takes numbers)."""
        selected = graph.run_selection(self.campaign, context["params"])[1]
        known = {t for tracts in self.campaign.tracts.values() for t in tracts}
        unknown = sorted(set(selected) - known)
        if unknown:
            raise AirflowFailException(
                f"tracts {', '.join(map(str, unknown[:20]))} are not in campaign {self.campaign.name}: "
                "trigger again with tracts of its own (or none for all)"
            )
        return selected

    def is_dry_run(self, context) -> bool:
        return bool(context["params"].get("dry_run"))

    def moved_tracts(self, context) -> dict[int, str]:
        """The run's tracts moved to another site by a failover (tract -> its new site), read from
        the ledger once per task execution (one consistent answer for all its checks)."""
        run_id = context["run_id"]
        if getattr(self, "_moved", (None, None))[0] != run_id:
            self._moved = (run_id, self.ledger.moved_tracts(self.run_key(context)))
        return dict(self._moved[1])

    def work_groups(self, context, site: str | None = None) -> list[graph.WorkGroup]:
        """A site's work groups in this run: the selected tracts, where failovers put them."""
        return graph.plan_groups(
            self.campaign, site or self.site, self.selected_tracts(context), self.moved_tracts(context)
        )

    def skip_unless_selected(self, context, site: str | None = None) -> None:
        """A site left out of this run (trigger form) skips its own tasks, and only those; so does
        a site whose tracts were all moved away by a failover."""
        site = site or self.site
        if site not in self.selected_sites(context):
            raise AirflowSkipException(f"site {site} is not selected for this run")
        if not self.work_groups(context, site):
            moved = sorted(t for t, to in self.moved_tracts(context).items() if self.campaign.tract_site(t) == site)
            if moved:
                raise AirflowSkipException(f"site {site}: its tracts {moved} were failed over to other sites")
            raise AirflowSkipException(f"site {site} has none of the selected tracts")
