"""The embedded default's transfer service: Rucio's model on plain directories.

DIDs, rules and RSEs are files under $DRP_WORK_DIR/transfers and $DRP_WORK_DIR/rse. `replicate`
copies the files itself (the part FTS does for Rucio) and verifies each copy's size and adler32,
so the rule reaches OK only when every file really arrived intact; a copy that does not match
leaves the rule STUCK with that file named. Every call is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from .. import settings
from ..checksums import adler32
from .base import Manifest, ManifestEntry, RuleStatus, TransferError, TransferService


class LocalTransferService(TransferService):
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else settings.work_dir()

    # -- layout ------------------------------------------------------------------------------
    def _did_dir(self, dataset_did: str) -> Path:
        scope, _, name = dataset_did.partition(":")
        if not scope or not name:
            raise TransferError(f"dataset DID {dataset_did!r} is not of the form scope:name")
        return self.root / "transfers" / "dids" / scope / name.replace("/", "__")

    def _rule_file(self, rule_id: str) -> Path:
        return self.root / "transfers" / "rules" / f"{rule_id}.json"

    def replica_dir(self, destination_rse: str) -> Path:
        return self.root / "rse" / destination_rse

    # -- interface ---------------------------------------------------------------------------
    def register(self, dataset_did: str, source_rse: str, manifest: Manifest) -> int:
        did_dir = self._did_dir(dataset_did)
        known: dict[str, ManifestEntry] = {}
        if (did_dir / "manifest.json").exists():
            known = {e.dataset_id: e for e in Manifest.read(did_dir / "manifest.json").entries}
        added = [e for e in manifest.entries if e.dataset_id not in known]
        if added or not known:
            merged = Manifest(repo=manifest.repo, entries=[*known.values(), *added])
            merged.write(did_dir / "manifest.json")
            (did_dir / "source_rse").write_text(source_rse)
        return len(added)

    def manifest(self, dataset_did: str) -> Manifest:
        path = self._did_dir(dataset_did) / "manifest.json"
        if not path.exists():
            raise TransferError(f"dataset {dataset_did} is not registered: run the hop's register task first")
        return Manifest.read(path)

    @staticmethod
    def _rule_id(dataset_did: str, rse: str) -> str:
        return hashlib.sha1(f"{dataset_did}@{rse}".encode()).hexdigest()[:32]

    def replicate(self, dataset_did: str, destination_rse: str, lifetime_s: int | None = None) -> str:
        rule_id = self._rule_id(dataset_did, destination_rse)
        rule_file = self._rule_file(rule_id)
        if rule_file.exists() and json.loads(rule_file.read_text())["state"] == "OK":
            return rule_id  # the rule exists and is satisfied: nothing to do again
        manifest = self.manifest(dataset_did)
        if (self._did_dir(dataset_did) / "source_rse").read_text() == destination_rse:
            # A hold on the source's own copy: nothing to copy (Rucio makes the locks at once).
            status = RuleStatus(rule_id, "OK", len(manifest.entries), len(manifest.entries), manifest.total_bytes)
        else:
            status = self._copy_all(rule_id, manifest, self.replica_dir(destination_rse))
        rule_file.parent.mkdir(parents=True, exist_ok=True)
        rule_file.write_text(
            json.dumps({"did": dataset_did, "rse": destination_rse, "lifetime_s": lifetime_s, **status.to_dict()})
        )
        return rule_id

    def replicas_at(self, dataset_did: str, rse: str) -> dict[str, int]:
        """Files copied there and intact in size (the copy checked their adler32 already)."""
        sizes = {e.relpath: e.bytes for e in self.manifest(dataset_did).entries}
        paths = self.replica_paths(dataset_did, rse)
        return {name: sizes[name] for name, path in paths.items() if path.stat().st_size == sizes[name]}

    def replica_paths(self, dataset_did: str, rse: str) -> dict[str, Path]:
        root = self.replica_dir(rse)
        at_source = (self._did_dir(dataset_did) / "source_rse").read_text() == rse
        found = {}
        for e in self.manifest(dataset_did).entries:
            path = Path(e.path) if at_source else root / e.relpath  # the source's files stay in its repo
            if path.is_file():
                found[e.relpath] = path
        return found

    def release(self, dataset_did: str, rse: str, grace_s: int = 0) -> list[str]:
        """Forget the rule at once. Unlike Rucio's reaper, nothing deletes the files here: the
        local service moves data but does not manage site storage."""
        rule_id = self._rule_id(dataset_did, rse)
        rule_file = self._rule_file(rule_id)
        if not rule_file.exists():
            return []
        rule_file.unlink()
        return [rule_id]

    def rule_status(self, rule_id: str) -> RuleStatus:
        rule_file = self._rule_file(rule_id)
        if not rule_file.exists():
            raise TransferError(f"rule {rule_id} does not exist: run the hop's replicate task first")
        raw = json.loads(rule_file.read_text())
        return RuleStatus(**{k: raw[k] for k in RuleStatus.__dataclass_fields__})

    # -- the FTS part --------------------------------------------------------------------------
    @staticmethod
    def _copy_all(rule_id: str, manifest: Manifest, dest_root: Path) -> RuleStatus:
        ok = ok_bytes = 0
        errors: list[str] = []
        for entry in manifest.entries:
            dest = dest_root / entry.relpath
            if not (dest.exists() and dest.stat().st_size == entry.bytes and adler32(dest) == entry.adler32):
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(entry.path, dest.with_suffix(dest.suffix + ".part"))
                    dest.with_suffix(dest.suffix + ".part").replace(dest)
                except OSError as exc:
                    errors.append(f"{entry.relpath}: copy failed: {exc}")
                    continue
                got = adler32(dest)
                if dest.stat().st_size != entry.bytes or got != entry.adler32:
                    errors.append(
                        f"{entry.relpath}: checksum mismatch after copy (adler32 {got}, expected {entry.adler32})"
                    )
                    continue
            ok += 1
            ok_bytes += entry.bytes
        state = "OK" if not errors else "STUCK"
        return RuleStatus(rule_id, state, len(manifest.entries), ok, ok_bytes, errors)
