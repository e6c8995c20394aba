"""Operators for one hop between two sites: register at the source, replicate, ingest, verify.

The wait between replicate and ingest is a deferrable sensor (sensors/hops.py). Each task is
idempotent: re-registering adds nothing twice, replicate finds the existing rule, ingest skips
datasets already present, verify only reads the ledger. What a hop's direction means (its
source, destination, RSEs, Rucio dataset name and lifetimes) comes from drp_campaign/hops.py.
"""

from __future__ import annotations

import json
from functools import cached_property

from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from drp_campaign import graph, settings
from drp_campaign.hooks.stack import StackHook
from drp_campaign.hooks.transfer import TransferHook
from drp_campaign.hops import HopEnds, Way, hop_dataset_did, hop_ends
from drp_campaign.ledger import HopEntry, LedgerUnbalanced
from drp_campaign.transfer.base import Manifest

from .base import CampaignOperator


def ledger_entries(manifest: Manifest) -> list[HopEntry]:
    """The ledger's view of a manifest: one row per dataset, with the source's size and adler32."""
    return [HopEntry(e.dataset_id, e.dataset_type, e.run, e.bytes, e.adler32) for e in manifest.entries]


class HopOperator(CampaignOperator):
    """A task of one hop for one (source, destination) pair; `site` is the non-hub end."""

    template_fields = CampaignOperator.template_fields
    ui_color = "#f3e8fd"

    def __init__(self, *, hop: str, **kwargs):
        super().__init__(**kwargs)
        self.hop = hop

    @cached_property
    def ends(self) -> HopEnds:
        return hop_ends(self.campaign, self.hop, self.site)

    @property
    def direction(self) -> str:
        return self.ends.direction

    @property
    def way(self) -> Way:
        return self.ends.way

    @property
    def source(self) -> str:
        return self.ends.source

    @property
    def destination(self) -> str:
        """The site whose storage receives the copy (the hub for fan-in and tape)."""
        return self.ends.destination

    @property
    def destination_rse(self) -> str:
        return self.ends.destination_rse

    @property
    def destination_label(self) -> str:
        """What the ledger and logs call the destination: a site, or the tape RSE."""
        return self.ends.destination_label

    def dataset_did(self, context) -> str:
        return hop_dataset_did(self.campaign, self.run_key(context), self.hop, self.ends.dataset_end)

    def manifest_file(self, context, kind: str):
        return (
            settings.work_dir()
            / "transfers"
            / "manifests"
            / self.run_key(context)
            / self.hop
            / f"{self.source}-{self.destination_label}.{kind}.json"
        )

    def service(self):
        return TransferHook().get_service(activity=self.campaign.hops[self.hop].activity)

    def skip_unless_selected(self, context, site: str | None = None) -> None:
        if self.way.to_tape:  # the tape hop archives whatever the run made
            return
        super().skip_unless_selected(context, site)
        if self.direction != "place" and not self.selections(context):
            raise AirflowSkipException(
                f"site {self.site} processes only overlap tracts in this run, and {self.hop} carries none of "
                "the dataset types the site QA compares: nothing to send"
            )

    def selections(self, context) -> list[tuple[str, list[str]]]:
        """What this hop sends from its source (graph.hop_selections), for this run's selection."""
        key = self.run_key(context)
        return graph.hop_selections(
            self.campaign, key, self.hop, self.source, self.selected_tracts(context), self.moved_tracts(context)
        )

    def record_rule(self, context, service, rule_id: str):
        """Put the rule's id and state in the ledger, where the campaign view shows it."""
        status = service.rule_status(rule_id)
        self.ledger.record_rule(
            run_key=self.run_key(context),
            hop=self.hop,
            src_site=self.source,
            dst_site=self.destination_label,
            status=status,
        )
        return status

    def site_copy_released(self, context) -> dict | None:
        """The ledger's record of the site's copy of this hop (what a fan-in sent, what a fan-out
        delivered) being released after the tape hop, if it was."""
        key = self.run_key(context)
        return next((r for r in self.ledger.releases(key) if (r["hop"], r["site"]) == (self.hop, self.site)), None)

    def replicate_task_id(self) -> str:
        """The task that made this pair's rule (its XCom is the rule id)."""
        return self.task_id.rsplit(".", 1)[0] + ".replicate"

    def refresh_rule(self, context, service) -> None:
        """After the wait: put the rule's settled state (from the replicate task's id) in the ledger."""
        rule_id = context["ti"].xcom_pull(task_ids=self.replicate_task_id())
        if rule_id:
            status = self.record_rule(context, service, rule_id)
            self.log.info(
                "%s: rule %s %s, %d/%d files, %d B",
                self.pair(),
                rule_id,
                status.state,
                status.files_ok,
                status.files_total,
                status.bytes_ok,
            )

    def check_pair_balanced(self, context, registered: Manifest, problem: str = "") -> dict:
        """Balance the ledger for this pair only (another site's data on the same hop may still be
        on its way). What the hop registered (REGISTERED, read back from the transfer service) must
        each have a row: a ledger that never heard of a dataset balances nothing, and neither does a
        hop that registered nothing. Fail naming every dataset not intact or missing; return what arrived."""
        if not registered.entries and not self.is_dry_run(context):  # a dry run makes nothing to send
            raise AirflowException(
                f"{self.pair()}: {problem}nothing is registered as {self.dataset_did(context)}, so nothing can be "
                "verified: clear the hop's register task (it names what the source lacks), then the tasks after it"
            )
        key = self.run_key(context)
        try:
            balances = self.ledger.check_balanced(
                key, self.hop, self.destination_label, self.source, expected=ledger_entries(registered)
            )
        except LedgerUnbalanced as exc:
            raise AirflowException(f"{self.pair()}: {problem}{exc}") from None
        sent, arrived, nbytes = (sum(getattr(b, k) for b in balances) for k in ("sent", "arrived", "arrived_bytes"))
        return {"sent": sent, "arrived": arrived, "bytes": nbytes}

    def record_sent(self, context, manifest: Manifest) -> int:
        """Put what this pair sends in the ledger (one row per dataset); returns the new rows."""
        return self.ledger.record_registered(
            run_key=self.run_key(context),
            campaign=self.campaign.name,
            hop=self.hop,
            src_site=self.source,
            dst_site=self.destination_label,
            entries=ledger_entries(manifest),
        )

    def pair(self) -> str:
        return f"hop {self.hop} {self.source}->{self.destination_label}"


class RegisterHopOperator(HopOperator):
    """Export the hop's dataset types from the source Butler and register them for transfer."""

    def execute(self, context) -> dict:
        self.skip_unless_selected(context)
        hop = self.campaign.hops[self.hop]
        manifest_path = self.manifest_file(context, "source")
        source_repo = str(self.site_config(self.source).butler_repo_path())
        if self.direction == "place":  # what the site's tracts need, selected from the hub's inputs
            runs = ", ".join(sorted({sel.collection for sel in hop.inputs.values()}))
            tracts = [t for g in self.work_groups(context) for t in g.tracts]
            subcommand, args = (
                "export-inputs",
                ["--campaign", str(self.campaign.file), "--site", self.site, "--tracts", ",".join(map(str, tracts))],
            )
        else:  # what the source made (and the second copy of its overlap tracts, for the site QA)
            selections = self.selections(context)
            subcommand, args = "export-hop", graph.export_hop_args(selections)
            runs = " and ".join(pattern for pattern, _ in selections)
        result = StackHook(self.site_config(self.source)).run(
            subcommand, [*args, "--repo", source_repo, "--manifest", str(manifest_path)]
        )
        manifest = Manifest.read(manifest_path)
        did = self.dataset_did(context)
        rse = self.ends.source_rse
        released = self.site_copy_released(context) if self.way.site_end == "source" else None
        if released and not manifest.entries:
            # A re-run after the tape hop released this copy: what was sent is registered and safe.
            self.log.info(
                "%s: the site copy was released at %s after reaching tape (%d files); nothing to register again",
                self.pair(),
                released["released"],
                released["files"],
            )
            return {"did": did, "files": released["files"], "bytes": released["bytes"]}
        # Every type the hop moves must be there, none may be skipped quietly. No campaign in
        # configs/campaigns/ moves a type that may legitimately be empty: the config refuses a type
        # no step before the hop makes, and those steps make each one at every source (a visit or
        # tract type at every site that has tracts; the tape hop's at the hub after final_qa). An
        # empty type means a step made none of it: nothing is registered, so nothing half-sent.
        empty = [t for t, n in result["by_type"].items() if not n]
        if empty and not self.is_dry_run(context):  # a dry run makes nothing to send
            raise AirflowException(
                f"{self.pair()}: nothing registered: {self.source} has no {', '.join(empty)} datasets in {runs} "
                f"(the hop moves {', '.join(result['by_type'])}); check that the steps before this hop produced "
                "them at the site (their groups' output RUNs), then clear this task"
            )
        added = self.service().register(did, rse, manifest)
        new_rows = self.record_sent(context, manifest)
        self.log.info(
            "%s: registered %d datasets (%d B) as %s at %s (%d new files, %d new ledger rows); by type %s",
            self.pair(),
            len(manifest.entries),
            manifest.total_bytes,
            did,
            rse,
            added,
            new_rows,
            result.get("by_type"),
        )
        return {"did": did, "files": len(manifest.entries), "bytes": manifest.total_bytes}


class ReplicateHopOperator(HopOperator):
    """Ask for the registered dataset at the destination RSE; returns the rule id."""

    def execute(self, context) -> str:
        self.skip_unless_selected(context)
        did = self.dataset_did(context)
        rse = self.destination_rse
        service = self.service()
        released = self.site_copy_released(context) if self.way.per_site else None
        if released and self.way.site_end == "destination":
            # A re-run after the release: a new rule would have Rucio copy the files back.
            raise AirflowSkipException(
                f"{self.pair()}: the site's copy was released at {released['released']} after "
                "reaching tape; nothing to deliver again"
            )
        if released:
            self.log.info("%s: the source copy was released after reaching tape; not held again", self.pair())
        elif self.way.holds_source:
            # Hold the source copy with a rule of its own, so Rucio (not a person) decides when it
            # may go: a site's with the hop's lifetime, or until released once safe on tape.
            source_rse = self.ends.source_rse
            hold_id = service.replicate(did, source_rse, lifetime_s=self.ends.source_lifetime_s)
            self.log.info("%s: source copy at %s held by rule %s", self.pair(), source_rse, hold_id)
        # The hub keeps what it receives; a site's received copy (fan-out) is an intermediate.
        rule_id = service.replicate(did, rse, lifetime_s=self.ends.destination_lifetime_s)
        status = self.record_rule(context, service, rule_id)
        self.log.info(
            "%s: rule %s for %s -> %s: %s, %d/%d files",
            self.pair(),
            rule_id,
            did,
            rse,
            status.state,
            status.files_ok,
            status.files_total,
        )
        return rule_id


class IngestHopOperator(HopOperator):
    """Ingest what arrived into the destination Butler with the same UUIDs; record it in the ledger."""

    def execute(self, context) -> dict:
        self.skip_unless_selected(context)
        key = self.run_key(context)
        service = self.service()
        self.refresh_rule(context, service)
        manifest_path = self.manifest_file(context, "registered")
        service.manifest(self.dataset_did(context)).write(manifest_path)
        dest = self.site_config(self.destination)
        result = StackHook(dest).run(
            "ingest-hop",
            [
                "--repo",
                str(dest.butler_repo_path()),
                "--manifest",
                str(manifest_path),
                "--replica-dir",
                str(service.replica_dir(dest.rucio.disk_rse)),
                # Inputs go into their own collections (check_inputs chains them); products into the
                # run's chain, but not a second site's copy of an overlap tract (kept for the site QA).
                "--chain",
                "" if self.direction == "place" else graph.site_chain(self.campaign, key),
                "--not-chained",
                graph.overlap_runs_pattern(self.campaign, key, "*"),
            ],
        )
        arrived = [
            HopEntry(e["dataset_id"], e["dataset_type"], e["run"], e["bytes"], e["adler32"]) for e in result["entries"]
        ]
        self.ledger.record_arrived(run_key=key, hop=self.hop, dst_site=self.destination_label, entries=arrived)
        rejected = [(r["dataset_id"], r["reason"]) for r in result.get("rejected", [])]
        self.ledger.record_rejected(run_key=key, hop=self.hop, dst_site=self.destination_label, rejected=rejected)
        self.log.info(
            "%s: ingested %d, already present %d, rejected %d",
            self.pair(),
            result["ingested"],
            result["already_present"],
            len(rejected),
        )
        if rejected:
            raise AirflowException(
                f"{self.pair()}: {len(rejected)} datasets refused at {self.destination} and not ingested:\n"
                + "\n".join(f"  {d}: {why}" for d, why in rejected[:20])
                + "\nThe source copies are untouched, but Rucio still counts these destination replicas as there, so "
                "re-running replicate copies nothing: declare them bad (`rucio-admin replica declare-bad`, "
                "docs/runbook.md 3) so Rucio copies them again, wait for the rule to be OK, then clear this task."
            )
        return {k: result[k] for k in ("ingested", "already_present")}


class VerifyHopOperator(HopOperator):
    """Fail loudly unless every dataset the source sent arrived intact at the destination."""

    ui_color = "#fce8e6"

    def execute(self, context) -> dict:
        self.skip_unless_selected(context)
        registered = self.service().manifest(self.dataset_did(context))  # what Rucio holds, not a file left over
        summary = self.check_pair_balanced(context, registered)
        self.log.info("%s: ledger balanced: %s", self.pair(), json.dumps(summary))
        if self.direction == "place":
            summary["by_type"] = self.check_site_butler(context, registered)
        return summary

    def check_site_butler(self, context, registered: Manifest) -> dict:
        """Inputs only: per dataset type, what the hub's registry selected (the registered
        manifest) must be what the site's Butler holds, each file with the same size and adler32."""
        dest = self.site_config(self.destination)
        manifest = self.manifest_file(context, "registered")
        registered.write(manifest)
        result = StackHook(dest).run(
            "check-datasets", ["--repo", str(dest.butler_repo_path()), "--manifest", str(manifest)]
        )
        counts = {t: f"{r['verified']}/{r['expected']}" for t, r in result["by_type"].items()}
        if not result["ok"]:
            raise AirflowException(
                f"{self.pair()}: the site's Butler does not hold every input verified ({counts} verified/expected):\n"
                + "\n".join(f"  {p}" for p in result["problems"])
                + "\nClear the hop's ingest task (then this one); no step starts at the site until this passes."
            )
        self.log.info(
            "%s: inputs verified in %s's Butler (verified/expected): %s", self.pair(), self.destination, counts
        )
        return result["by_type"]
