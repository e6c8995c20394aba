"""The end of a campaign's data path: confirm the tape copy, then release the sites' copies and
send the products on to the IDACs the tape hop names.

The tape hop (direction `to_tape`) is register -> replicate -> wait like any hop, but nothing is
ingested at a tape RSE: `ConfirmTapeOperator` asks Rucio which files have an available replica
there and where (the RSE's file PFNs), reads each one, and balances the ledger with the size and
adler32 it measured: FTS (here the local transfertool) checked them on the way, but a copy is
confirmed only by reading what the destination holds now. Only then may
`ReleaseSiteCopiesOperator` let a site's copies go: it checks again, from Rucio, that every file of
the site's copy is available at the hub's disk and tape (a second site's copy of an overlap tract,
never archived, at the hub's disk), removes the datasets from the site's
Butler (files stay), and gives the rule that held them a lifetime of `release_grace_minutes` with
purge_replicas: Rucio's judge-cleaner then deletes the rule and its reaper the files, so the site's
storage returns within quota. Both are safe to re-run: a second run finds the ledger balanced, the
datasets gone and no rule left to drop.

Each IDAC of the tape hop (`idacs`, sites.yaml `idacs`) gets, after the tape copy is confirmed,
`to_<IDAC>` (`CopyToIdacOperator`: a rule for the archive dataset at the IDAC's RSE, its files
put in the ledger with the RSE as destination) -> `wait_<IDAC>` (the hops' deferrable sensor) ->
`confirm_<IDAC>` (`ConfirmIdacOperator`: what Rucio reports available there, read back and
balanced in the ledger as on tape). Nothing else waits for them but the report: the campaign's
products are safe once on tape, and the sites' copies are released on that alone.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from airflow.sdk.exceptions import AirflowException

from drp_campaign import graph
from drp_campaign.checksums import adler32
from drp_campaign.hooks.stack import StackHook
from drp_campaign.hops import hop_dataset_did, hop_ends, idac_rse
from drp_campaign.ledger import HopEntry
from drp_campaign.transfer.base import Manifest, TransferError

from .hops import HopOperator


class ConfirmTapeOperator(HopOperator):
    """Read back each file Rucio says is on tape, and fail unless everything registered is there
    with the size and adler32 the source registered."""

    ui_color = "#fce8e6"
    copy_name = "tape copy"

    def execute(self, context) -> dict:
        key = self.run_key(context)
        did = self.dataset_did(context)
        service = self.service()
        self.refresh_rule(context, service)
        manifest = service.manifest(did)
        arrived, unreadable = measured_copies(manifest, service.replica_paths(did, self.destination_rse))
        self.ledger.record_arrived(run_key=key, hop=self.hop, dst_site=self.destination_label, entries=arrived)
        self.ledger.record_rejected(run_key=key, hop=self.hop, dst_site=self.destination_label, rejected=unreadable)
        balance = self.check_pair_balanced(context, manifest, f"{self.copy_name} not confirmed: ")
        files, nbytes = balance["arrived"], balance["bytes"]
        self.log.info("%s: %d files (%d B) confirmed at %s", self.pair(), files, nbytes, self.destination_rse)
        return {"rse": self.destination_rse, "files": files, "bytes": nbytes}


def measured_copies(manifest: Manifest, paths: dict[str, Path]) -> tuple[list[HopEntry], list[tuple[str, str]]]:
    """The manifest's datasets whose file is at PATHS (where the destination holds them), each with
    the size and adler32 read there now; and (dataset id, why) for each such file that cannot be
    read. What the ledger compares with the source's values: a copy is confirmed by reading it,
    not by the checksum Rucio copied from the registration."""
    arrived, unreadable = [], []
    for e in manifest.entries:
        path = paths.get(e.relpath)
        if path is None:  # no available replica there: the ledger names it as never arrived
            continue
        try:
            arrived.append(HopEntry(e.dataset_id, e.dataset_type, e.run, path.stat().st_size, adler32(path)))
        except OSError as exc:
            unreadable.append((e.dataset_id, f"Rucio lists an available replica, but {path} cannot be read: {exc}"))
    return arrived, unreadable


class ReleaseSiteCopiesOperator(HopOperator):
    """For one site: release its copies of the hops the tape hop names, once they are safe."""

    ui_color = "#e6f4ea"

    def site_copies(self, context) -> list[tuple[str, str]]:
        """(hop, dataset DID) of each copy the site holds: what it sent (fan-in) or got (fan-out)."""
        key = self.run_key(context)
        copies = []
        for name in self.campaign.hops[self.hop].release_site_copies_of:
            end = hop_ends(self.campaign, name, self.site).dataset_end
            copies.append((name, hop_dataset_did(self.campaign, key, name, end)))
        return copies

    def execute(self, context) -> dict:
        # A site left out of the run holds nothing to release (the tape hop itself never skips).
        super(HopOperator, self).skip_unless_selected(context)
        key = self.run_key(context)
        service = self.service()
        # The tape hop's own ends: from the hub's disk to its tape.
        hub_disk, tape = self.ends.source_rse, self.ends.destination_rse
        archive_did = self.dataset_did(context)
        on_tape, on_hub_disk = service.replicas_at(archive_did, tape), service.replicas_at(archive_did, hub_disk)
        copies = self.site_copies(context)
        manifests = {name: service.manifest(did) for name, did in copies}
        # A second site's copy of an overlap tract is not a product (never archived): it is safe
        # once the hop has brought it to the hub's disk, where the site QA reads it.
        overlap_root = graph.overlap_root(self.campaign, key) + "/"
        home = {
            name: service.replicas_at(did, hub_disk)
            for name, did in copies
            if any(e.run.startswith(overlap_root) for e in manifests[name].entries)
        }

        def problem(name: str, e) -> str:
            if e.run.startswith(overlap_root):
                return "" if e.relpath in home[name] else f"not at {hub_disk}"
            return (
                "not on tape" if e.relpath not in on_tape else "" if e.relpath in on_hub_disk else f"not at {hub_disk}"
            )

        unsafe = [
            f"{name}: {e.relpath} ({why})"
            for name, manifest in manifests.items()
            for e in manifest.entries
            if (why := problem(name, e))
        ]
        if unsafe:
            raise AirflowException(
                f"{self.site}: nothing released: {len(unsafe)} files of its copies are not safe at {hub_disk} and "
                f"{tape}:\n"
                + "\n".join(f"  {u}" for u in unsafe[:20])
                + "\nConfirm the tape hop (clear its tasks) before releasing."
            )
        site_rse = self.site_config().rucio.disk_rse
        released = {}
        for name, did in copies:
            manifest = manifests[name]
            forgotten = self._forget_in_butler([e.dataset_id for e in manifest.entries])
            released_rules = service.release(
                did, site_rse, grace_s=int(self.campaign.hops[self.hop].release_grace_minutes * 60)
            )
            self.ledger.record_release(
                run_key=key,
                hop=name,
                site=self.site,
                rse=site_rse,
                files=len(manifest.entries),
                nbytes=manifest.total_bytes,
                rule_ids=released_rules,
            )
            released[name] = {
                "files": len(manifest.entries),
                "bytes": manifest.total_bytes,
                "rules_released": released_rules,
            }
            self.log.info(
                "%s: released %s's copy at %s: %d files (%d B); "
                "%d datasets removed from the Butler (%d already gone); rules released %s",
                self.site,
                name,
                site_rse,
                len(manifest.entries),
                manifest.total_bytes,
                forgotten["forgotten"],
                forgotten["already_gone"],
                released_rules or "none (released before)",
            )
        return released

    def _forget_in_butler(self, dataset_ids: list[str]) -> dict:
        """Butler first: once the rule is released the reaper deletes the files, and the site's
        Butler must not point at files that are gone."""
        site = self.site_config()
        with tempfile.TemporaryDirectory(prefix="drp-release-") as tmp:
            ids_file = Path(tmp) / "ids.json"
            ids_file.write_text(json.dumps(dataset_ids))
            return StackHook(site).run(
                "forget-datasets", ["--repo", str(site.butler_repo_path()), "--ids", str(ids_file)]
            )


class IdacOperator(HopOperator):
    """A task of the tape hop for one IDAC: the hop's archived products, hub disk -> IDAC RSE.

    The ledger and the rule table name the destination by the IDAC's RSE, as they name tape's."""

    def __init__(self, *, idac: str, **kwargs):
        super().__init__(**kwargs)
        self.idac = idac

    @property
    def destination_rse(self) -> str:
        return idac_rse(self.campaign, self.idac)

    @property
    def destination_label(self) -> str:
        return self.destination_rse

    def pair(self) -> str:
        return f"hop {self.hop} {self.source}->IDAC {self.idac} ({self.destination_rse})"

    def replicate_task_id(self) -> str:
        group = self.task_id.rpartition(".")[0]
        return f"{group}.to_{self.idac}" if group else f"to_{self.idac}"


class CopyToIdacOperator(IdacOperator):
    """Ask Rucio for the archived products at the IDAC's RSE (or find the rule); returns its id.

    Runs after the tape copy is confirmed, so what an IDAC gets is what is archived. A refusal
    (an RSE Rucio does not know, a quota, a blocked RSE) makes no rule and leaves the ledger as it
    was: the tape copy and the sites' releases do not depend on this task."""

    def execute(self, context) -> str:
        did = self.dataset_did(context)
        rse = self.destination_rse
        service = self.service()
        try:
            rule_id = service.replicate(did, rse)
        except TransferError as exc:
            raise AirflowException(
                f"{self.pair()}: no copy asked, no rule made: {exc}\n"
                f"The IDAC's RSE is idacs.{self.idac}.rse in {self.campaign.sites_config.file}: fix it there, or add "
                f"{rse} to Rucio (locally `scripts/rucio-server.sh start` adds every RSE of that file), then clear "
                "this task. The tape copy stands, and the sites' releases do not wait for this task."
            ) from None
        manifest = service.manifest(did)  # what Rucio will copy, from Rucio itself
        new_rows = self.record_sent(context, manifest)
        status = self.record_rule(context, service, rule_id)
        self.log.info(
            "%s: rule %s for %s -> %s: %s, %d/%d files (%d B; %d new ledger rows)",
            self.pair(),
            rule_id,
            did,
            rse,
            status.state,
            status.files_ok,
            status.files_total,
            manifest.total_bytes,
            new_rows,
        )
        return rule_id


class ConfirmIdacOperator(IdacOperator, ConfirmTapeOperator):
    """Read back what Rucio says is available at the IDAC's RSE; fail unless all of it is there intact."""

    copy_name = "IDAC copy"

    def execute(self, context) -> dict:
        return {"idac": self.idac, **super().execute(context)}
