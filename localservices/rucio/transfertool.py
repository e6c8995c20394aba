"""`local`: a Rucio transfertool that copies files between file-protocol RSEs (FTS's part).

At a data facility the conveyor-submitter hands transfers to FTS, which copies each file from a
source replica to the destination, compares size and adler32 with what Rucio says the file is,
and reports FINISHED or FAILED with a reason; the conveyor-poller asks FTS for that outcome and
the conveyor-finisher turns it into replica and rule states (retrying failures up to 3 times,
then marking the lock and rule STUCK). FTS cannot run here, and Rucio's own `mock` transfertool
reports success without copying anything. This one stands in for FTS:

* `submit` (called by the conveyor-submitter) copies every transfer of the job right away: for
  each candidate source in Rucio's order, source path -> `<dest>.rucio-local.part` -> rename to
  the destination path, computing the adler32 and size of what was read. The source must match
  the size and adler32 registered in Rucio (else FAILED: "SOURCE CHECKSUM MISMATCH ..." and the
  next source is tried); then the destination file is read back and must match too ("DESTINATION
  CHECKSUM MISMATCH"). An existing destination file that already matches is kept (FTS's
  "destination exists" case that Rucio treats as success); one that does not is overwritten on
  a disk RSE and refused on a tape RSE. The outcome of every file is written to
  `<[conveyor] local_transfer_dir>/<job id>.json`; the job id goes back to Rucio.
* `bulk_query` (called by the conveyor-poller) reads those files and returns per-request status
  reports; a job without a results file is reported lost (Rucio then resubmits).

Fault injection (for tests and drills; off unless `$DRP_RUCIO_TRANSFER_FAULTS` is set in the
daemons' environment): the variable names a JSON file listing the transfers to fail on purpose,

    [{"name": "u/test/run-1234/*_0.fits", "fail": 1},          # fnmatch pattern on the DID name
     {"name": "*.fits", "fail": 5, "rse": "USDF_DISK"}]        # optional: only into this RSE

The first `fail` transfers of each file matching an entry are reported FAILED with the reason
"INJECTED FAULT: ..." without copying anything, as FTS reports a failed copy; later ones run
normally. So `"fail": 1` is a transfer that fails then succeeds on Rucio's retry, and `"fail": 4`
outlasts Rucio's 3 retries (lock and rule STUCK). Two more kinds of entry:

    {"name": "*.fits", "corrupt": 1}     # the first copy lands with one byte flipped
    {"name": "*.fits", "hold_s": 60}     # every copy is reported in flight for 60 s
    {"name": "*.fits", "hold_while": "/path/release-me"}   # ... while that file exists

`corrupt` damages the bytes written at the destination (a bad disk or network path would), not the
check: the destination read-back finds the checksum mismatch as it would any other, removes the
file and reports FAILED, and Rucio retries. `hold_s` copies at once but keeps the transfer out of
`bulk_query`'s answers for that long, as FTS does with a transfer still queued or running: the
rule stays REPLICATING, which gives a drill the time to kill services during a fan-in or fan-out;
`hold_while` keeps it so until the drill deletes the file it names (no race with a loaded machine).
The count of faults already injected per (entry, kind, DID) is kept in
`<results dir>.faults-count.json`, so it survives daemon passes and processes (`daemons once` is a
new process each time); delete that file to start counting again. An unreadable faults file is
logged as an error and injects nothing; a file that does not exist injects nothing, quietly (the
e2e stacks name one that only a drill writes).

Registered under the name "local" in rucio.core.transfer.TRANSFERTOOL_CLASSES_BY_NAME by
`register()` (no file of rucio is changed); rucio.cfg says `[conveyor] transfertool = local`.
Runs in the daemons' process (daemons.py), never in the REST server.
"""

from __future__ import annotations

import datetime
import fcntl
import fnmatch
import json
import logging
import os
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rucio.common.config import config_get
from rucio.db.sqla.constants import RequestState
from rucio.transfertool.transfertool import TransferStatusReport, Transfertool, TransferToolBuilder

from localservices.rucio import TRANSFERTOOL_NAME

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from rucio.core.request import DirectTransfer

_CHUNK = 4 * 1024 * 1024
PART_SUFFIX = ".rucio-local.part"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
FAULTS_ENV = "DRP_RUCIO_TRANSFER_FAULTS"


def results_dir() -> Path:
    path = Path(
        config_get("conveyor", "local_transfer_dir", raise_exception=False, default=None)
        or Path(tempfile.gettempdir()) / "rucio-local-transfers"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _matching_faults(name: str, dst_rse: str) -> list[dict[str, Any]]:
    """The entries of the faults file (see the module docstring) that apply to this transfer."""
    spec = os.environ.get(FAULTS_ENV)
    if not spec:
        return []
    try:
        return [
            f
            for f in json.loads(Path(spec).read_text())
            if fnmatch.fnmatchcase(name, f["name"]) and f.get("rse", dst_rse) == dst_rse
        ]
    except FileNotFoundError:  # named but not written: a drill not running now
        return []
    except (OSError, ValueError, TypeError, KeyError) as exc:
        logging.error("%s=%s cannot be read (%s): no fault injected", FAULTS_ENV, spec, exc)
        return []


def _count_fault(faults: list[dict[str, Any]], kind: str, scope: str, name: str) -> tuple[dict, int] | None:
    """The first entry of FAULTS whose KIND budget this file has not spent, and the ordinal of
    this fault (1-based), counted; None when none is left."""
    faults = [f for f in faults if int(f.get(kind, 0)) > 0]
    if not faults:
        return None
    counts_path = results_dir().with_name(results_dir().name + ".faults-count.json")
    # A `daemons once` and the demo's loop may submit at the same time: count under a lock.
    fd = os.open(counts_path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        counts = json.loads(f.read() or "{}")
        for fault in faults:
            # A `fail` count keeps its original key (no kind in it): existing count files still apply.
            key = f"{'' if kind == 'fail' else kind + ' '}{fault['name']} {fault.get('rse', '*')} {scope}:{name}"
            done = counts.get(key, 0)
            if done < int(fault[kind]):
                counts[key] = done + 1
                f.seek(0)
                f.truncate()
                f.write(json.dumps(counts, indent=1))
                return fault, done + 1
    return None


def _injected_fault(scope: str, name: str, dst_rse: str, faults: list[dict[str, Any]]) -> str | None:
    """The reason to fail this transfer on purpose, or None; see the module docstring."""
    counted = _count_fault(faults, "fail", scope, name)
    if counted is None:
        return None
    fault, ordinal = counted
    return (
        f"INJECTED FAULT: transfer {ordinal} of {fault['fail']} to fail of "
        f"{scope}:{name} to {dst_rse} (entry {fault['name']!r} of {os.environ.get(FAULTS_ENV)})"
    )


def _held(result: dict[str, Any]) -> bool:
    """A copy made but still reported in flight (the `hold_s` and `hold_while` faults)."""
    return result.get("hold_until", 0) > time.time() or any(os.path.exists(p) for p in result.get("hold_while", ()))


def _adler32_of(path: str | Path) -> tuple[str, int]:
    value, size = 1, 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            value = zlib.adler32(chunk, value)
            size += len(chunk)
    return f"{value & 0xFFFFFFFF:08x}", size


def _copy(src: str, dst: str, corrupt: bool = False) -> tuple[str, int]:
    """Copy src to dst through a part file; the adler32 and size of what was read. CORRUPT flips
    one byte of what is written (an injected fault), leaving what was read, and so its checksum, intact."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    part = dst + PART_SUFFIX
    value, size = 1, 0
    try:
        with open(src, "rb") as fin, open(part, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                value = zlib.adler32(chunk, value)
                size += len(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        if corrupt and size:
            with open(part, "r+b") as damaged:
                damaged.seek(size // 2)
                byte = damaged.read(1)[0]
                damaged.seek(size // 2)
                damaged.write(bytes([byte ^ 0xFF]))
        os.replace(part, dst)
    finally:
        if os.path.exists(part):
            os.unlink(part)
    return f"{value & 0xFFFFFFFF:08x}", size


def _is_tape(rse) -> bool:
    try:
        return bool(rse.is_tape())
    except (ValueError, AttributeError):  # columns not loaded: load them
        rse.ensure_loaded(load_info=True, load_attributes=True)
        return bool(rse.is_tape())


def _norm_adler(value: str | None) -> str | None:
    return value.lower().zfill(8) if value else None


class LocalTransferStatusReport(TransferStatusReport):
    """The outcome of one request, as the poller hands it to rucio.core.transfer.update_transfer_state."""

    supported_db_fields = ["state", "external_id", "started_at", "transferred_at", "source_rse_id", "err_msg"]

    def __init__(
        self, request_id: str, external_id: str, result: dict[str, Any], request: dict[str, Any] | None = None
    ):
        super().__init__(request_id, request=request)
        self.external_id_reported = external_id
        self.result = result
        self.external_id = None
        self.started_at = None
        self.transferred_at = None
        self.source_rse_id = None
        self.err_msg = None

    def initialize(self, session, logger=logging.log) -> None:
        from rucio.core.request import get_transfer_error

        new_state = RequestState.DONE if self.result.get("state") == "DONE" else RequestState.FAILED
        request = self.request(session)
        if request is None:
            logger(logging.WARNING, "%s: no such request any more; skipping", self.request_id)
            return
        if request["external_id"] != self.external_id_reported:
            logger(
                logging.WARNING,
                "request %s belongs to job %s, not %s; not updated",
                self.request_id,
                request["external_id"],
                self.external_id_reported,
            )
            return
        if request["state"] == new_state:
            return
        self.state = new_state
        self.external_id = self.external_id_reported
        self.started_at = _parse_time(self.result.get("started_at"))
        self.transferred_at = _parse_time(self.result.get("finished_at"))
        self.source_rse_id = self.result.get("src_rse_id")
        self.err_msg = get_transfer_error(new_state, self.result.get("reason"))

    def get_monitor_msg_fields(self, session, logger=logging.log) -> dict[str, Any]:
        self.ensure_initialized(session, logger)
        return {
            "transfer_link": f"file://{results_dir() / (self.external_id_reported + '.json')}",
            "reason": self.result.get("reason"),
            "src-type": self.result.get("src_type"),
            "src-rse": self.result.get("src_rse"),
            "src-url": self.result.get("src_url"),
            "dst-type": self.result.get("dst_type"),
            "dst-rse": self.result.get("dst_rse"),
            "dst-url": self.result.get("dst_url"),
            "started_at": self.started_at,
            "transferred_at": self.transferred_at,
            "protocol": "file",
        }


def _parse_time(value: str | None) -> datetime.datetime | None:
    return datetime.datetime.strptime(value, _TIME_FORMAT) if value else None


def _utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None).strftime(_TIME_FORMAT)


class LocalTransfertool(Transfertool):
    """Copies between file-protocol RSEs on this machine; see the module docstring."""

    external_name = TRANSFERTOOL_NAME
    required_rse_attrs = ()
    supported_schemes = {"file"}

    def __init__(self, external_host: str = TRANSFERTOOL_NAME, logger=logging.log, **_kwargs):
        super().__init__(external_host, logger)

    @classmethod
    def submission_builder_for_path(cls, transfer_path: list[DirectTransfer], logger=logging.log):
        # Every hop must be file -> file; multi-hop paths are copied hop by hop in one job.
        for hop in transfer_path:
            if hop.dst.scheme != "file" or any(src.scheme not in (None, "file") for src in hop.sources):
                return [], None
        return transfer_path, TransferToolBuilder(cls, external_host=TRANSFERTOOL_NAME)

    def group_into_submit_jobs(self, transfer_paths: Iterable[list[DirectTransfer]]) -> list[dict[str, Any]]:
        return [{"transfers": list(path), "job_params": {}} for path in transfer_paths]

    def submit(
        self, transfers: Iterable[DirectTransfer], job_params: dict[str, str], timeout: int | None = None
    ) -> str:
        del job_params, timeout
        job_id = str(uuid.uuid4())
        results = {}
        for transfer in transfers:
            results[transfer.rws.request_id] = self._transfer_one(transfer)
        tmp = results_dir() / f".{job_id}.tmp"
        tmp.write_text(json.dumps({"job_id": job_id, "submitted": time.time(), "files": results}, indent=1))
        os.replace(tmp, results_dir() / f"{job_id}.json")
        return job_id

    def _transfer_one(self, transfer: DirectTransfer) -> dict[str, Any]:
        rws = transfer.rws
        expected_adler = _norm_adler(rws.adler32)
        expected_bytes = rws.byte_count
        dst_rse = transfer.dst.rse
        dst_url = transfer.dest_url
        dst_path = os.path.normpath(transfer.dest_protocol().pfn2path(dst_url))
        dst_is_tape = _is_tape(dst_rse)
        result: dict[str, Any] = {
            "scope": str(rws.scope),
            "name": rws.name,
            "state": "FAILED",
            "reason": None,
            "dst_rse": dst_rse.name,
            "dst_url": dst_url,
            "dst_path": dst_path,
            "dst_type": "TAPE" if dst_is_tape else "DISK",
            "bytes_expected": expected_bytes,
            "adler32_expected": expected_adler,
            "started_at": _utcnow(),
            "finished_at": None,
            "attempts": [],
        }
        faults = _matching_faults(rws.name, dst_rse.name)
        fault = _injected_fault(str(rws.scope), rws.name, dst_rse.name, faults)
        if fault:
            result.update(reason=fault, finished_at=_utcnow())
            self.logger(logging.WARNING, "local transfer %s:%s -> %s: %s", rws.scope, rws.name, dst_rse.name, fault)
            return result
        if not expected_adler and not rws.md5:
            result["reason"] = "no checksum registered in Rucio for this file: refusing to copy unverified"
            result["finished_at"] = _utcnow()
            return result
        # FTS's "destination exists": keep a file that is already right.
        if os.path.isfile(dst_path):
            have_adler, have_bytes = _adler32_of(dst_path)
            if have_adler == expected_adler and have_bytes == expected_bytes:
                source = transfer.sources[0] if transfer.sources else None
                result.update(
                    state="DONE",
                    reason="destination file exists and matches",
                    src_rse=source.rse.name if source else None,
                    src_rse_id=source.rse.id if source else None,
                    finished_at=_utcnow(),
                )
                return result
            if dst_is_tape:
                result["reason"] = (
                    f"DESTINATION EXISTS {dst_path} with another content "
                    f"(adler32 {have_adler}, {have_bytes} bytes) and tape "
                    "files are never overwritten"
                )
                result["finished_at"] = _utcnow()
                return result
        for source in transfer.sources:
            src_url = transfer.source_url(source)
            attempt = {"src_rse": source.rse.name, "src_url": src_url}
            result["attempts"].append(attempt)
            result.update(
                src_rse=source.rse.name,
                src_rse_id=source.rse.id,
                src_url=src_url,
                src_type="TAPE" if _is_tape(source.rse) else "DISK",
            )
            try:
                src_path = os.path.normpath(transfer.source_protocol(source).pfn2path(src_url))
                attempt["src_path"] = src_path
                if not os.path.isfile(src_path):
                    attempt["reason"] = f"SOURCE MISSING {src_path}: no such file"
                    continue
                src_adler, src_bytes = _adler32_of(src_path)
                if src_bytes != expected_bytes or (expected_adler and src_adler != expected_adler):
                    attempt["reason"] = (
                        f"SOURCE CHECKSUM MISMATCH {src_path}: Source and Rucio-registered "
                        f"ADLER32/size do not match (source adler32 {src_adler}, {src_bytes} "
                        f"bytes; registered adler32 {expected_adler}, {expected_bytes} bytes)"
                    )
                    continue
                corrupt = _count_fault(faults, "corrupt", str(rws.scope), rws.name) is not None
                if corrupt:
                    attempt["injected"] = "corrupt: one byte flipped in what was written"
                copied_adler, copied_bytes = _copy(src_path, dst_path, corrupt=corrupt)
                dst_adler, dst_bytes = _adler32_of(dst_path)
                if (copied_adler, copied_bytes) != (src_adler, src_bytes) or (dst_adler, dst_bytes) != (
                    expected_adler,
                    expected_bytes,
                ):
                    attempt["reason"] = (
                        f"DESTINATION CHECKSUM MISMATCH {dst_path}: destination adler32 "
                        f"{dst_adler}, {dst_bytes} bytes; registered adler32 {expected_adler}, "
                        f"{expected_bytes} bytes"
                    )
                    try:
                        os.unlink(dst_path)
                    except OSError:
                        pass
                    continue
                attempt["reason"] = None
                result.update(state="DONE", reason=None, bytes=dst_bytes, adler32=dst_adler, finished_at=_utcnow())
                hold_s = max((float(f.get("hold_s", 0)) for f in faults), default=0)
                if hold_s > 0:
                    result["hold_until"] = time.time() + hold_s  # bulk_query: in flight until then
                if held_while := [str(f["hold_while"]) for f in faults if f.get("hold_while")]:
                    result["hold_while"] = held_while  # bulk_query: in flight while these files exist
                self.logger(
                    logging.INFO,
                    "local transfer %s:%s %s -> %s done (%d bytes, adler32 %s)",
                    rws.scope,
                    rws.name,
                    src_path,
                    dst_path,
                    dst_bytes,
                    dst_adler,
                )
                return result
            except OSError as exc:
                attempt["reason"] = f"TRANSFER ERROR {type(exc).__name__}: {exc}"
        reasons = [a["reason"] for a in result["attempts"] if a.get("reason")]
        result["reason"] = "; ".join(reasons) or "no source replica to copy from"
        result["finished_at"] = _utcnow()
        self.logger(
            logging.WARNING,
            "local transfer %s:%s -> %s failed: %s",
            rws.scope,
            rws.name,
            dst_rse.name,
            result["reason"],
        )
        return result

    def bulk_query(
        self, requests_by_eid: Mapping[str, Mapping[str, Any]], timeout: int | None = None
    ) -> dict[str, Any]:
        del timeout
        response: dict[str, Any] = {}
        for job_id, requests in requests_by_eid.items():
            path = results_dir() / f"{job_id}.json"
            try:
                job = json.loads(path.read_text())
            except FileNotFoundError:
                response[job_id] = None  # lost: Rucio marks the requests LOST and requeues them
                continue
            except (OSError, ValueError) as exc:
                response[job_id] = exc
                continue
            reports = {}
            for request_id, request in requests.items():
                result = job["files"].get(request_id)
                # Left out of the answer, a request stays SUBMITTED: in flight, as FTS would say.
                if result is not None and not _held(result):
                    reports[request_id] = LocalTransferStatusReport(request_id, job_id, result, request=None)
            response[job_id] = reports
        return response

    def cancel(self, transfer_ids: Sequence[str], timeout: int | None = None) -> bool:
        return True  # copies are synchronous: only a held one (hold_s, hold_while) looks in flight, and it is done

    def update_priority(self, transfer_id: str, priority: int, timeout: int | None = None) -> bool:
        return True


def prune_results(max_age_seconds: float = 7 * 24 * 3600) -> int:
    """Remove job result files older than max_age_seconds (the loop calls it now and then)."""
    cutoff = time.time() - max_age_seconds
    n = 0
    for path in results_dir().glob("*.json"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                n += 1
        except OSError:
            pass
    return n


def register() -> None:
    """Make "local" a transfertool Rucio knows, in this process (idempotent)."""
    from rucio.core import transfer as transfer_core

    transfer_core.TRANSFERTOOL_CLASSES_BY_NAME[LocalTransfertool.external_name] = LocalTransfertool
