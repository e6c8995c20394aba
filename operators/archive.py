"""The end of a campaign's data path: confirm the tape copy, then release the sites' copies.

The tape hop (direction `to_tape`) is register -> replicate -> wait like any hop, but nothing is
ingested at a tape RSE: `ConfirmTapeOperator` reads from Rucio which files have an available
replica there (FTS - here the local transfertool - verified size and adler32 on the way) and
balances the ledger. Only then may `ReleaseSiteCopiesOperator` let a site's copies go: it checks
again, from Rucio, that every file of the site's copy is available at the hub's disk and tape,
removes the datasets from the site's Butler (files stay), and gives the rule that held them a
lifetime of `release_grace_minutes` with purge_replicas: Rucio's judge-cleaner then deletes the
rule and its reaper the files, so the site's storage returns within quota. Both are safe to
re-run: a second run finds the ledger balanced, the datasets gone and no rule left to drop.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from airflow.sdk.exceptions import AirflowException

from drp_campaign.hooks.stack import StackHook
from drp_campaign.ledger import HopEntry

from .hops import HopOperator, hop_dataset_did


class ConfirmTapeOperator(HopOperator):
    """Record what Rucio says is on tape, and fail unless everything registered is there."""

    ui_color = "#fce8e6"

    def execute(self, context) -> dict:
        key = self.run_key(context)
        did = self.dataset_did(context)
        service = self.service()
        self.refresh_rule(context, service)
        manifest = service.manifest(did)
        on_tape = service.replicas_at(did, self.destination_rse)
        arrived = [
            HopEntry(e.dataset_id, e.dataset_type, e.run, e.bytes, e.adler32)
            for e in manifest.entries
            if on_tape.get(e.relpath) == e.bytes
        ]
        self.ledger.record_arrived(run_key=key, hop=self.hop, dst_site=self.destination_label, entries=arrived)
        balance = self.check_pair_balanced(context, "tape copy not confirmed: ")
        files, nbytes = balance["arrived"], balance["bytes"]
        self.log.info("%s: %d files (%d B) confirmed at %s", self.pair(), files, nbytes, self.destination_rse)
        return {"rse": self.destination_rse, "files": files, "bytes": nbytes}


class ReleaseSiteCopiesOperator(HopOperator):
    """For one site: release its copies of the hops the tape hop names, once they are safe."""

    ui_color = "#e6f4ea"

    def site_copies(self, context) -> list[tuple[str, str]]:
        """(hop, dataset DID) of each copy the site holds: what it sent (fan-in) or got (fan-out)."""
        key, hub = self.run_key(context), self.campaign.hub()
        copies = []
        for name in self.campaign.hops[self.hop].release_site_copies_of:
            source = self.site if self.campaign.hops[name].direction == "fan_in" else hub
            copies.append((name, hop_dataset_did(self.campaign, key, name, source)))
        return copies

    def execute(self, context) -> dict:
        # A site left out of the run holds nothing to release (the tape hop itself never skips).
        super(HopOperator, self).skip_unless_selected(context)
        key = self.run_key(context)
        service = self.service()
        hub = self.site_config(self.campaign.hub()).rucio
        archive_did = self.dataset_did(context)
        on_tape, on_hub_disk = service.replicas_at(archive_did, hub.tape_rse), service.replicas_at(archive_did, hub.disk_rse)
        copies = self.site_copies(context)
        manifests = {name: service.manifest(did) for name, did in copies}
        unsafe = [
            f"{name}: {e.relpath} ({'not on tape' if e.relpath not in on_tape else 'not at ' + hub.disk_rse})"
            for name, manifest in manifests.items()
            for e in manifest.entries
            if e.relpath not in on_tape or e.relpath not in on_hub_disk
        ]
        if unsafe:
            raise AirflowException(
                f"{self.site}: nothing released: {len(unsafe)} files of its copies are not safe at {hub.disk_rse} and "
                f"{hub.tape_rse}:\n" + "\n".join(f"  {u}" for u in unsafe[:20])
                + "\nConfirm the tape hop (clear its tasks) before releasing."
            )
        site_rse = self.site_config().rucio.disk_rse
        released = {}
        for name, did in copies:
            manifest = manifests[name]
            forgotten = self._forget_in_butler([e.dataset_id for e in manifest.entries])
            released_rules = service.release(did, site_rse, grace_s=int(self.campaign.hops[self.hop].release_grace_minutes * 60))
            self.ledger.record_release(run_key=key, hop=name, site=self.site, rse=site_rse, files=len(manifest.entries),
                                       nbytes=manifest.total_bytes, rule_ids=released_rules)  # fmt: skip
            released[name] = {"files": len(manifest.entries), "bytes": manifest.total_bytes, "rules_released": released_rules}
            self.log.info(
                "%s: released %s's copy at %s: %d files (%d B); %d datasets removed from the Butler (%d already gone); rules released %s",
                self.site, name, site_rse, len(manifest.entries), manifest.total_bytes,
                forgotten["forgotten"], forgotten["already_gone"], released_rules or "none (released before)",
            )  # fmt: skip
        return released

    def _forget_in_butler(self, dataset_ids: list[str]) -> dict:
        """Butler first: once the rule is released the reaper deletes the files, and the site's
        Butler must not point at files that are gone."""
        site = self.site_config()
        with tempfile.TemporaryDirectory(prefix="drp-release-") as tmp:
            ids_file = Path(tmp) / "ids.json"
            ids_file.write_text(json.dumps(dataset_ids))
            return StackHook(site).run("forget-datasets", ["--repo", str(site.butler_repo_path()), "--ids", str(ids_file)])
