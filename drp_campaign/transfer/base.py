"""The Rucio-shaped interface every hop goes through: register -> replicate -> wait -> ingest.

The names follow Rucio: a hop's files are attached to a *dataset* DID registered at the source
RSE; a *replication rule* asks for a copy at the destination RSE; the rule's state says when the
copy is complete. The local implementation (local.py) does the same with plain files; a Rucio
implementation slots in behind this class without changing operators or DAGs.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import DrpError

RuleState = Literal["OK", "REPLICATING", "STUCK", "SUSPENDED"]
# A rule in one of these makes no progress on its own: Rucio may still retry it, for a while.
STUCK_STATES: tuple[RuleState, ...] = ("STUCK", "SUSPENDED")


@dataclass
class ManifestEntry:
    """One dataset's file as the source registered it (what lsst-rucio-register's sidecar carries)."""

    dataset_id: str
    dataset_type: str
    run: str
    relpath: str
    bytes: int
    adler32: str
    path: str = ""  # absolute path at the source; not needed at the destination
    data_id: dict = field(default_factory=dict)
    ref: str | dict = ""  # serialized DatasetRef, rebuilt at the destination with the same UUID
    validity: dict = field(default_factory=dict)  # a calibration's {collection, begin, end} (TAI), certified alike


@dataclass
class Manifest:
    repo: str
    entries: list[ManifestEntry]

    @classmethod
    def read(cls, path: Path) -> Manifest:
        raw = json.loads(Path(path).read_text())
        return cls(repo=raw.get("repo", ""), entries=[ManifestEntry(**e) for e in raw["entries"]])

    def write(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        tmp.write_text(json.dumps({"repo": self.repo, "entries": [asdict(e) for e in self.entries]}))
        tmp.replace(path)  # readers never see half a manifest

    @property
    def total_bytes(self) -> int:
        return sum(e.bytes for e in self.entries)


@dataclass
class RuleStatus:
    rule_id: str
    state: RuleState
    files_total: int
    files_ok: int
    bytes_ok: int
    errors: list[str] = field(default_factory=list)  # one line per failing file, for on-call

    def to_dict(self) -> dict:
        return asdict(self)


class TransferError(DrpError):
    """A hop cannot proceed; the message names the hop, sites and what to do."""


class TransferService(ABC):
    """What a hop needs from the data-movement system (Rucio in production)."""

    @abstractmethod
    def register(self, dataset_did: str, source_rse: str, manifest: Manifest) -> int:
        """Attach the manifest's files to the dataset DID at the source RSE; returns files newly added."""

    @abstractmethod
    def replicate(self, dataset_did: str, destination_rse: str, lifetime_s: int | None = None) -> str:
        """Ask for a copy at the destination (or hold the one there); returns the rule id, the
        existing one if already asked. A lifetime lets Rucio release the copy after it."""

    @abstractmethod
    def rule_status(self, rule_id: str) -> RuleStatus:
        """Where the rule stands; cheap enough to poll from a trigger."""

    @abstractmethod
    def replica_dir(self, destination_rse: str) -> Path:
        """Directory under which files land at the destination, by their manifest relpath."""

    @abstractmethod
    def manifest(self, dataset_did: str) -> Manifest:
        """The registered files and their metadata (the destination ingests from this)."""

    @abstractmethod
    def replicas_at(self, dataset_did: str, rse: str) -> dict[str, int]:
        """The dataset's files that have an available replica at the RSE: {name: bytes}."""

    @abstractmethod
    def replica_paths(self, dataset_did: str, rse: str) -> dict[str, Path]:
        """The dataset's files that have an available replica at the RSE: {name: where the file is},
        for a reader that confirms the copy itself rather than taking the transfer's word for it."""

    def boost(self, rule_id: str) -> bool:
        """Have the rule's stuck transfers retried now rather than at the system's own pace; False
        when this service has nothing to boost (it retries on its own)."""
        return False

    @abstractmethod
    def release(self, dataset_did: str, rse: str, grace_s: int = 0) -> list[str]:
        """Let our rules on the dataset at the RSE expire after `grace_s`, so the copy there is
        deleted; returns the rule ids released now (none when already released)."""


class StuckBoost:
    """Boost a hop's rule once when it is first seen STUCK, where the wait gives it time to recover
    (ENABLED: the hop's stuck_after_minutes > 0). Rucio retries a rule's stuck transfers from its
    judge-repairer, which takes a rule only once it has been left alone [repairer] updated_at_delta
    (30 min by default), and a boosted one at its next pass: so the retry comes within the wait."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.boosted = False

    def check(self, service: TransferService, status: RuleStatus) -> str | None:
        """Boost if due; returns the line to log when it did."""
        if not self.enabled or self.boosted or status.state != "STUCK":
            return None
        self.boosted = True
        if not service.boost(status.rule_id):
            return None
        return (
            f"rule {status.rule_id} STUCK ({status.files_ok}/{status.files_total} files): boosted, so Rucio retries "
            f"its stuck transfers at the repairer's next pass; failing: {'; '.join(status.errors[:3])}"
        )
