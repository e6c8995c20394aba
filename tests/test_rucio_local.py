"""The local Rucio (scripts/rucio-server.sh, localservices.rucio): a real Rucio 41 server.

Runs in the controller environment, which has rucio-clients only: the server, its bootstrap and
its daemons run in .venvs/rucio as subprocesses; this side talks REST with rucio.client.Client,
configured from the connection.json the bootstrap writes. Own work dir, database and port.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import drop_database

from drp_campaign.checksums import adler32
from drp_campaign.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration

SCRIPT = PROJECT_ROOT / "scripts" / "rucio-server.sh"
TEST_DB = "drp_rucio_test"
TEST_PORT = "8082"
SCOPE = "test-3x3"
RSES = {
    "USDF_DISK": "DISK",
    "FRDF_DISK": "DISK",
    "UKDF_RAL_DISK": "DISK",
    "UKDF_LANCS_DISK": "DISK",
    "USDF_TAPE": "TAPE",
}
IDAC_RSES = {"IDAC_UK_DISK", "IDAC_FR_DISK"}  # sites.yaml idacs: disk RSEs fed by USDF_DISK only
CAMPAIGN = PROJECT_ROOT / "configs" / "campaigns" / "test-3x3.yaml"


@pytest.fixture(scope="module")
def rucio(tmp_path_factory):
    """A Rucio server brought up from nothing (no database, no work dir); stopped afterwards."""
    work = tmp_path_factory.mktemp("rucio-work")
    env = {**os.environ, "DRP_WORK_DIR": str(work), "DRP_RUCIO_DB": TEST_DB, "DRP_RUCIO_PORT": TEST_PORT}
    env.pop("RUCIO_CONFIG", None)
    drop_database(TEST_DB)
    t0 = time.monotonic()
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", "--no-daemons"], env=env, capture_output=True, text=True, timeout=120
    )
    seconds = time.monotonic() - t0
    assert started.returncode == 0, started.stdout + started.stderr
    print(f"\nRucio bring-up from nothing: {seconds:.1f} s ({started.stdout.strip()})")
    home = work / "rucio"
    conn = json.loads((home / "connection.json").read_text())
    saved = os.environ.get("RUCIO_CONFIG")
    os.environ["RUCIO_CONFIG"] = conn["client_config"]  # token cache etc. under the work dir
    try:
        yield {"env": env, "work": work, "home": home, "conn": conn, "bringup_seconds": seconds}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        if saved is None:
            os.environ.pop("RUCIO_CONFIG", None)
        else:
            os.environ["RUCIO_CONFIG"] = saved


@pytest.fixture(scope="module")
def client(rucio):
    from rucio.client import Client

    c = rucio["conn"]
    return Client(
        rucio_host=c["rucio_host"],
        auth_host=c["auth_host"],
        account=c["account"],
        auth_type=c["auth_type"],
        creds={"username": c["username"], "password": c["password"]},
        vo=c["vo"],
    )


def _daemons_once(rucio, *rule_ids: str, timeout: int = 60, env: dict | None = None, repairer=False) -> dict:
    args = ["bash", str(SCRIPT), "daemons-once", "--timeout", str(timeout), *(["--repairer"] if repairer else [])]
    for rule_id in rule_ids:
        args += ["--rule", rule_id]
    done = subprocess.run(
        args, env={**rucio["env"], **(env or {})}, capture_output=True, text=True, timeout=timeout + 60
    )
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _site_files(rucio, site: str, n: int, size: int = 4096) -> list[tuple[str, Path]]:
    """n real files inside a site's Butler repo dir: [(relpath, path)]."""
    run = f"u/test/run-{uuid.uuid4().hex[:8]}"
    out = []
    for i in range(n):
        rel = f"{run}/calexp/20240101/HSC-I/calexp_HSC_I_{i}.fits"
        path = rucio["work"] / "repos" / site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size + i))
        out.append((rel, path))
    return out


def _to_usdf_with_a_fault(rucio, client, site: str, n: int, fault: dict, tag: str):
    """N files of SITE registered as a new dataset, FAULT (a transfer tool fault entry, see
    localservices/rucio/transfertool.py) set on the first file, and a rule for the dataset at
    USDF_DISK: (files, dataset, rule id, the daemons' environment that injects the fault)."""
    files = _site_files(rucio, site, n)
    dataset = f"hop-{tag}-{uuid.uuid4().hex[:8]}"
    _register(client, f"{site}_DISK", files, dataset)
    fault_file = rucio["work"] / f"faults-{dataset}.json"
    fault_file.write_text(json.dumps([{"name": files[0][0], **fault}]))
    (rule_id,) = client.add_replication_rule([{"scope": SCOPE, "name": dataset}], 1, "USDF_DISK")
    return files, dataset, rule_id, {"DRP_RUCIO_TRANSFER_FAULTS": str(fault_file)}


def _register(client, rse: str, files, dataset: str) -> None:
    client.add_replicas(
        rse,
        [{"scope": SCOPE, "name": rel, "bytes": path.stat().st_size, "adler32": adler32(path)} for rel, path in files],
    )
    client.add_dataset(SCOPE, dataset)
    client.attach_dids(SCOPE, dataset, [{"scope": SCOPE, "name": rel} for rel, _ in files])


def test_bring_up_from_nothing(rucio):
    import requests

    assert rucio["bringup_seconds"] < 60
    assert requests.get(f"{rucio['conn']['rucio_host']}/ping", timeout=5).json()["version"] == "41.5.1"
    assert (rucio["home"] / "rucio.cfg").stat().st_mode & 0o077 == 0  # holds passwords
    # start again: idempotent, the same server keeps running
    pid = (rucio["home"] / "pids" / "server.pid").read_text()
    again = subprocess.run(
        ["bash", str(SCRIPT), "start", "--no-daemons"], env=rucio["env"], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert (rucio["home"] / "pids" / "server.pid").read_text() == pid


def test_whoami_as_controller_account(client, rucio):
    me = client.whoami()
    assert me["account"] == rucio["conn"]["account"] == "drp"
    assert me["status"] == "ACTIVE"
    assert client.ping()["version"] == "41.5.1"


def test_rses_types_distances_limits_scopes(client, rucio):
    names = {r["rse"] for r in client.list_rses()}
    assert set(RSES) <= names
    for rse, rse_type in RSES.items():
        info = client.get_rse(rse)
        assert info["rse_type"] == rse_type, rse
        assert info["deterministic"]
        (proto,) = [p for p in info["protocols"] if p["scheme"] == "file"]
        expected = (
            (rucio["work"] / "rse" / rse)
            if rse_type == "TAPE"
            else (rucio["work"] / "repos" / rse.removesuffix("_DISK"))
        )
        assert Path(proto["prefix"]) == expected.resolve(), rse
        assert client.list_rse_attributes(rse)["lfn2pfn_algorithm"] == "drp_relpath"
    for src in RSES:
        for dst in RSES:
            if src != dst:
                dist = client.get_distance(src, dst)
                assert dist and dist[0]["distance"] in (1, 2), (src, dst)
    assert client.get_distance("USDF_DISK", "USDF_TAPE")[0]["distance"] == 1
    assert IDAC_RSES <= names
    for idac in IDAC_RSES:
        info = client.get_rse(idac)
        assert (info["rse_type"], info["deterministic"]) == ("DISK", True), idac
        (proto,) = [p for p in info["protocols"] if p["scheme"] == "file"]
        assert Path(proto["prefix"]) == (rucio["work"] / "rse" / idac).resolve(), idac
        assert (rucio["work"] / "rse" / idac).is_dir() and not (rucio["work"] / "rse" / idac).is_symlink()
        # only the hub's disk sends to an IDAC (Rucio picks no source without a distance), and
        # nothing is copied out of one
        assert client.get_distance("USDF_DISK", idac)[0]["distance"] == 2
        for other in [*RSES, *IDAC_RSES]:
            if other not in (idac, "USDF_DISK"):
                assert not client.get_distance(other, idac), (other, idac)
            if other != idac:
                assert not client.get_distance(idac, other), (idac, other)
    limits = client.get_local_account_limits("drp")
    assert limits["FRDF_DISK"] == 5000 * 10**12 and limits["UKDF_LANCS_DISK"] == 300 * 10**12
    assert limits["IDAC_UK_DISK"] == 500 * 10**12
    assert {"test-3x3", "nightly"} <= set(client.list_scopes())


def test_replicate_in_place_files_to_usdf(client, rucio):
    from rucio.common.exception import DuplicateRule

    files = _site_files(rucio, "FRDF", 3)
    dataset = f"hop-step2c-{uuid.uuid4().hex[:8]}"
    _register(client, "FRDF_DISK", files, dataset)
    # registered in place: the PFN Rucio hands out is the very file the Butler wrote
    for rel, path in files:
        (rep,) = client.list_replicas([{"scope": SCOPE, "name": rel}], schemes=["file"])
        (pfn,) = rep["rses"]["FRDF_DISK"]
        assert pfn.endswith(str(path)), (pfn, path)
    t0 = time.monotonic()
    (rule_id,) = client.add_replication_rule([{"scope": SCOPE, "name": dataset}], 1, "USDF_DISK")
    result = _daemons_once(rucio, rule_id)
    seconds = time.monotonic() - t0
    print(
        f"\nrule FRDF_DISK -> USDF_DISK, 3 files: OK after {seconds:.1f} s "
        f"({result['passes']} daemon passes, {result['seconds']} s in the daemons)"
    )
    assert result["settled"], result
    rule = client.get_replication_rule(rule_id)
    assert rule["state"] == "OK" and rule["locks_ok_cnt"] == 3, rule
    for rel, path in files:
        landed = rucio["work"] / "repos" / "USDF" / rel
        assert landed.is_file(), landed
        assert adler32(landed) == adler32(path)
        assert landed.stat().st_size == path.stat().st_size
        (rep,) = client.list_replicas([{"scope": SCOPE, "name": rel}])
        assert rep["states"] == {"FRDF_DISK": "AVAILABLE", "USDF_DISK": "AVAILABLE"}
    # the same rule again: Rucio refuses the duplicate; the existing rule is found instead
    with pytest.raises(DuplicateRule):
        client.add_replication_rule([{"scope": SCOPE, "name": dataset}], 1, "USDF_DISK")
    existing = [
        r["id"]
        for r in client.list_did_rules(SCOPE, dataset)
        if r["rse_expression"] == "USDF_DISK" and r["account"] == "drp"
    ]
    assert existing == [rule_id]


def test_corrupted_source_file_fails_and_rule_is_stuck(client, rucio):
    files = _site_files(rucio, "UKDF_RAL", 2)
    dataset = f"hop-corrupt-{uuid.uuid4().hex[:8]}"
    _register(client, "UKDF_RAL_DISK", files, dataset)
    bad_rel, bad_path = files[0]
    data = bytearray(bad_path.read_bytes())
    data[100] ^= 0xFF  # same size, different content: only adler32 tells
    bad_path.write_bytes(bytes(data))
    (rule_id,) = client.add_replication_rule([{"scope": SCOPE, "name": dataset}], 1, "USDF_DISK")
    result = _daemons_once(rucio, rule_id)
    assert result["settled"], result
    rule = client.get_replication_rule(rule_id)
    print(
        f"\ncorrupted file: rule {rule['state']} after {result['passes']} daemon passes "
        f"({result['seconds']} s); rule error: {rule['error']}"
    )
    assert rule["state"] == "STUCK", rule
    assert rule["locks_ok_cnt"] == 1 and rule["locks_stuck_cnt"] == 1, rule
    assert "CHECKSUM MISMATCH" in (rule["error"] or ""), rule["error"]
    # why, per file: the failed lock's replica and the last transfer request say it
    req = client.list_request_history_by_did(bad_rel, "USDF_DISK", scope=SCOPE)
    req = req if isinstance(req, dict) else next(iter(req))
    assert req["state"] == "FAILED", req
    print(f"request history: {req['state']} retry_count={req.get('retry_count')}: {req['err_msg']}")
    assert "SOURCE CHECKSUM MISMATCH" in req["err_msg"] and bad_rel.split("/")[-1] in req["err_msg"]
    assert not (rucio["work"] / "repos" / "USDF" / bad_rel).exists()
    good_rel = files[1][0]
    assert (rucio["work"] / "repos" / "USDF" / good_rel).is_file()


def test_a_transfer_that_fails_once_is_retried_by_rucio_and_lands_once(client, rucio):
    files = _site_files(rucio, "FRDF", 2)
    dataset = f"hop-flaky-{uuid.uuid4().hex[:8]}"
    _register(client, "FRDF_DISK", files, dataset)
    flaky_rel = files[0][0]
    faults = rucio["work"] / f"faults-{dataset}.json"
    # a pattern, as an operator would write it; it matches the first file only
    faults.write_text(json.dumps([{"name": flaky_rel.rsplit("/", 1)[0] + "/*_I_0.fits", "fail": 1}]))
    (rule_id,) = client.add_replication_rule([{"scope": SCOPE, "name": dataset}], 1, "USDF_DISK")
    result = _daemons_once(rucio, rule_id, env={"DRP_RUCIO_TRANSFER_FAULTS": str(faults)})
    assert result["settled"], result
    rule = client.get_replication_rule(rule_id)
    print(
        f"\nfail-once transfer: rule {rule['state']} after {result['passes']} daemon passes "
        f"({result['seconds']} s in the daemons)"
    )
    assert rule["state"] == "OK" and rule["locks_ok_cnt"] == 2 and rule["locks_stuck_cnt"] == 0, rule
    # the fault really fired, once: the transfertool counted it and Rucio archived the FAILED
    # request it retried, then the DONE one; the other file never failed
    counts = json.loads((rucio["home"] / "transfers.faults-count.json").read_text())
    assert [n for key, n in counts.items() if key.endswith(f"{SCOPE}:{flaky_rel}")] == [1], counts
    history = [
        r
        for r in client.list_requests_history("FRDF_DISK", "USDF_DISK", "F,D", limit=10000)
        if r["name"] in {rel for rel, _ in files}
    ]
    flaky = sorted((r for r in history if r["name"] == flaky_rel), key=lambda r: r["retry_count"] or 0)
    assert [r["state"] for r in flaky] == ["FAILED", "DONE"], flaky
    assert flaky[0]["err_msg"] and "INJECTED FAULT" in flaky[0]["err_msg"], flaky[0]
    assert flaky[1]["previous_attempt_id"] == flaky[0]["id"], flaky  # a retry, not a new rule
    assert [r["state"] for r in history if r["name"] != flaky_rel] == ["DONE"], history
    # the bytes that landed are the source's, exactly once: one replica, no part files left
    dest_dir = rucio["work"] / "repos" / "USDF" / flaky_rel.rsplit("/", 1)[0]
    assert sorted(p.name for p in dest_dir.iterdir()) == sorted(rel.rsplit("/", 1)[1] for rel, _ in files)
    for rel, path in files:
        landed = rucio["work"] / "repos" / "USDF" / rel
        assert (landed.read_bytes(), adler32(landed)) == (path.read_bytes(), adler32(path)), rel
        (rep,) = client.list_replicas([{"scope": SCOPE, "name": rel}], all_states=True)
        assert rep["states"] == {"FRDF_DISK": "AVAILABLE", "USDF_DISK": "AVAILABLE"}, rep
    (ds,) = [d for d in client.list_dataset_replicas(SCOPE, dataset, deep=True) if d["rse"] == "USDF_DISK"]
    assert (ds["available_length"], ds["available_bytes"]) == (2, sum(p.stat().st_size for _, p in files)), ds


# --- the controller's Rucio transfer service against this server -------------------------------


def _manifest(files):
    from drp_campaign.transfer.base import Manifest, ManifestEntry

    return Manifest(
        "test",
        [
            ManifestEntry(
                str(uuid.uuid4()),
                "isolated_star",
                rel.split("/calexp")[0],
                rel,
                path.stat().st_size,
                adler32(path),
                ref={"id": f"ref-{i}", "run": rel.split("/calexp")[0]},
            )
            for i, (rel, path) in enumerate(files)
        ],
    )


@pytest.fixture(scope="module")
def service(client):
    from drp_campaign.transfer.rucio import RucioTransferService

    return RucioTransferService(client, activity="User Subscriptions")


def test_service_registration_is_idempotent_and_keeps_the_sidecar(rucio, client, service):
    files = _site_files(rucio, "FRDF", 3)
    manifest = _manifest(files)
    did = f"{SCOPE}:svc-{uuid.uuid4().hex[:8]}/gather/FRDF"
    assert service.register(did, "FRDF_DISK", manifest) == 3
    assert service.register(did, "FRDF_DISK", manifest) == 0, "a re-run registers nothing twice"
    scope, name = did.split(":")
    assert len(list(client.list_files(scope, name))) == 3
    back = {e.relpath: e for e in service.manifest(did).entries}
    for sent in manifest.entries:
        got = back[sent.relpath]
        assert (got.dataset_id, got.bytes, got.adler32, got.ref) == (
            sent.dataset_id,
            sent.bytes,
            sent.adler32,
            sent.ref,
        )


def test_twin_tasks_registering_one_dataset_at_once_both_succeed(rucio, client, service):
    """Each site's fan-out register registers the hub's one dataset: Rucio refuses a batch holding
    a file a twin attached first (FileAlreadyExists); the service attaches the rest instead."""
    from rucio.common.exception import FileAlreadyExists

    files = _site_files(rucio, "USDF", 4)
    manifest = _manifest(files)
    did = f"{SCOPE}:svc-{uuid.uuid4().hex[:8]}/distribute/USDF"
    scope, name = did.split(":")
    client.add_dataset(scope, name)
    service._add_missing_replicas(scope, "USDF_DISK", manifest.entries)
    # The twin got there first with half the files.
    client.add_files_to_dataset(
        scope, name, [{"scope": scope, "name": e.relpath} for e in manifest.entries[:2]], rse="USDF_DISK"
    )
    with pytest.raises(FileAlreadyExists):  # what Rucio does with the whole batch
        client.add_files_to_dataset(
            scope, name, [{"scope": scope, "name": e.relpath} for e in manifest.entries], rse="USDF_DISK"
        )
    service._attach(scope, name, "USDF_DISK", manifest.entries)
    assert sorted(f["name"] for f in client.list_files(scope, name)) == sorted(e.relpath for e in manifest.entries)


def test_twin_tasks_registering_the_same_files_at_once_both_succeed(rucio, client, service, monkeypatch):
    """Each site's fan-out register registers the hub's same files: when the twin's transaction
    inserts them at the same moment as ours, PostgreSQL refuses ours (a duplicate key, which
    Rucio answers with DatabaseException; seen in a by-hand 3x3). The service looks again and
    registers what is still missing instead of failing the task."""
    from rucio.common.exception import DatabaseException

    files = _site_files(rucio, "USDF", 4)
    manifest = _manifest(files)
    real = service.client.add_replicas
    adds = []

    def twin_wins_the_first_race(rse, files):  # the fault, injected at the client boundary
        adds.append(len(files))
        if len(adds) == 1:
            real(rse=rse, files=files[:2])  # the twin's transaction commits half of them first
            raise DatabaseException('duplicate key value violates unique constraint "DIDS_PK"')
        return real(rse=rse, files=files)

    monkeypatch.setattr(service.client, "add_replicas", twin_wins_the_first_race)
    service._add_missing_replicas(SCOPE, "USDF_DISK", manifest.entries)
    assert adds == [4, 2], "refused once, then only what was still missing"
    dids = [{"scope": SCOPE, "name": e.relpath} for e in manifest.entries]
    registered = {
        r["name"]
        for r in client.list_replicas(dids, rse_expression="USDF_DISK", all_states=True, ignore_availability=True)
    }
    assert registered == {e.relpath for e in manifest.entries}


def test_service_finds_the_existing_rule_and_reports_the_copy(rucio, client, service):
    files = _site_files(rucio, "FRDF", 2)
    did = f"{SCOPE}:svc-{uuid.uuid4().hex[:8]}/gather/FRDF"
    service.register(did, "FRDF_DISK", _manifest(files))
    rule_id = service.replicate(did, "USDF_DISK")
    assert service.replicate(did, "USDF_DISK") == rule_id, "the existing rule is found, not remade"
    scope, name = did.split(":")
    assert len(list(client.list_did_rules(scope, name))) == 1
    _daemons_once(rucio, rule_id)
    status = service.rule_status(rule_id)
    assert (status.state, status.files_ok, status.files_total) == ("OK", 2, 2)
    assert status.bytes_ok == sum(p.stat().st_size for _, p in files)
    assert service.replica_dir("USDF_DISK") == (rucio["work"] / "repos" / "USDF").resolve()
    for rel, path in files:
        assert adler32(service.replica_dir("USDF_DISK") / rel) == adler32(path)


def test_a_held_site_copy_goes_to_tape_and_is_released_only_then(rucio, client, service):
    """The fan-in's source hold, the hub's copy and tape copy; releasing the site's copy lets
    Rucio's judge-cleaner and reaper delete the site's files, and nothing else."""
    files = _site_files(rucio, "FRDF", 3)
    did = f"{SCOPE}:svc-{uuid.uuid4().hex[:8]}/return/FRDF"
    service.register(did, "FRDF_DISK", _manifest(files))
    hold = service.replicate(did, "FRDF_DISK", lifetime_s=30 * 86400)
    to_hub = service.replicate(did, "USDF_DISK")
    to_tape = service.replicate(did, "USDF_TAPE")
    _daemons_once(rucio, hold, to_hub, to_tape)
    assert {service.rule_status(r).state for r in (hold, to_hub, to_tape)} == {"OK"}
    names = {rel: path.stat().st_size for rel, path in files}
    assert service.replicas_at(did, "USDF_TAPE") == names == service.replicas_at(did, "USDF_DISK")
    for rel, path in files:
        assert adler32(rucio["work"] / "rse" / "USDF_TAPE" / rel) == adler32(path)

    assert service.release(did, "FRDF_DISK") == [hold]
    assert service.release(did, "FRDF_DISK") == [], "a re-run releases nothing again"
    _daemons_once(rucio)
    scope, name = did.split(":")
    assert {r["rse_expression"] for r in client.list_did_rules(scope, name)} == {"USDF_DISK", "USDF_TAPE"}
    assert not any(path.exists() for _, path in files), "the reaper deleted the released site copy"
    assert service.replicas_at(did, "FRDF_DISK") == {}
    assert service.replicas_at(did, "USDF_DISK") == names and service.replicas_at(did, "USDF_TAPE") == names


def test_service_names_the_stuck_file_when_the_source_is_corrupted(rucio, service):
    files = _site_files(rucio, "UKDF_RAL", 2)
    did = f"{SCOPE}:svc-{uuid.uuid4().hex[:8]}/gather/UKDF_RAL"
    service.register(did, "UKDF_RAL_DISK", _manifest(files))
    bad_rel, bad_path = files[1]
    bad_path.write_bytes(b"x" * bad_path.stat().st_size)  # same size, other content
    rule_id = service.replicate(did, "USDF_DISK")
    _daemons_once(rucio, rule_id)
    status = service.rule_status(rule_id)
    assert status.state == "STUCK" and status.files_ok == 1
    assert any(bad_rel in e for e in status.errors), status.errors
    assert not (service.replica_dir("USDF_DISK") / bad_rel).exists(), "nothing damaged lands at the destination"


def test_an_unknown_rule_or_dataset_is_a_clear_error(service):
    from drp_campaign.transfer.base import TransferError

    with pytest.raises(TransferError, match="does not exist: run the hop's replicate task again"):
        service.rule_status("0" * 32)
    with pytest.raises(TransferError, match="is not registered in Rucio: run the hop's register task first"):
        service.manifest(f"{SCOPE}:no/such/dataset")


def test_a_missing_airflow_connection_says_how_to_add_it(monkeypatch):
    from drp_campaign.hooks.rucio import RucioConnectionMissing, RucioHook

    monkeypatch.delenv("AIRFLOW_CONN_RUCIO_NOWHERE", raising=False)
    with pytest.raises(
        RucioConnectionMissing, match="'rucio_nowhere' is not defined: add it .*airflow connections add rucio_nowhere"
    ):
        RucioHook("rucio_nowhere").get_conn()


def _client_from_config(cfg: Path):
    """A Client configured by cfg alone. rucio-clients reads $RUCIO_CONFIG once per process, and
    client.cfg's [client] auth_token_file_path is drp's token file: a Client of any other account
    built under it reads drp's token and acts as drp. So another account needs its own config."""
    from rucio.client import Client
    from rucio.common.config import clean_cached_config

    saved = os.environ["RUCIO_CONFIG"]
    os.environ["RUCIO_CONFIG"] = str(cfg)
    clean_cached_config()
    try:
        return Client()
    finally:
        os.environ["RUCIO_CONFIG"] = saved
        clean_cached_config()


def test_a_destination_over_the_accounts_quota_is_refused_and_no_rule_is_made(rucio, client, service):
    from drp_campaign.transfer.base import TransferError
    from drp_campaign.transfer.rucio import RucioTransferService

    # drp is admin, and Rucio skips quota checks for admin accounts (RSESelector), so the quota is
    # tried with a plain USER account. Only root may add accounts in the generic policy
    # (perm_add_account): rucio.cfg's [client] section is root's, as for rucio-admin.
    root = _client_from_config(rucio["home"] / "rucio.cfg")
    probe, password = f"quota_probe_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    root.add_account(probe, "USER", f"{probe}@localhost")
    root.add_identity(probe, probe, "USERPASS", f"{probe}@localhost", default=True, password=password)
    root.set_local_account_limit(probe, "USDF_DISK", 1000)  # bytes: less than one file
    root.set_local_account_limit(probe, "UKDF_RAL_DISK", 10**9)
    c = rucio["conn"]
    cfg = rucio["work"] / f"{probe}.cfg"
    cfg.write_text(
        f"[client]\nrucio_host = {c['rucio_host']}\nauth_host = {c['auth_host']}\n"
        f"auth_type = userpass\nusername = {probe}\npassword = {password}\naccount = {probe}\n"
        f"vo = {c['vo']}\nauth_token_file_path = {rucio['home'] / 'tokens' / probe / 'token'}\n"
    )
    probe_client = _client_from_config(cfg)
    assert probe_client.whoami()["account"] == probe
    files = _site_files(rucio, "FRDF", 2)
    did = f"{SCOPE}:svc-{uuid.uuid4().hex[:8]}/gather/FRDF"
    service.register(did, "FRDF_DISK", _manifest(files))  # as drp: only admins add replicas here
    with pytest.raises(TransferError) as err:
        RucioTransferService(probe_client).replicate(did, "USDF_DISK")
    print(f"\nover quota: {err.value}")
    assert f"account {probe} is over its quota at USDF_DISK" in str(err.value), err.value
    assert did in str(err.value)
    assert list(client.list_did_rules(*did.split(":"))) == []
    # where its quota suffices, the same account may make the rule: the refusal was the quota
    rule_id = RucioTransferService(probe_client).replicate(did, "UKDF_RAL_DISK")
    assert [(r["id"], r["account"]) for r in client.list_did_rules(*did.split(":"))] == [(rule_id, probe)]


def test_a_destination_rse_rucio_does_not_know_is_refused_and_no_rule_is_made(rucio, client, service):
    from drp_campaign.transfer.base import TransferError

    files = _site_files(rucio, "FRDF", 1)
    did = f"{SCOPE}:svc-{uuid.uuid4().hex[:8]}/gather/FRDF"
    service.register(did, "FRDF_DISK", _manifest(files))
    with pytest.raises(TransferError, match=f"{did} -> NOWHERE_DISK: Rucio knows no RSE 'NOWHERE_DISK'"):
        service.replicate(did, "NOWHERE_DISK")
    assert list(client.list_did_rules(*did.split(":"))) == []


def test_a_path_too_long_for_a_rucio_name_is_refused_before_anything_is_registered(service, client):
    from drp_campaign.transfer.base import Manifest, ManifestEntry, TransferError

    long_rel = "drp/" + "x" * 260 + ".json"
    did = f"{SCOPE}:svc-{uuid.uuid4().hex[:8]}/gather/FRDF"
    with pytest.raises(
        TransferError, match="longer than Rucio's 250-character DID names.*shorten the campaign's output_prefix"
    ):
        service.register(did, "FRDF_DISK", Manifest("x", [ManifestEntry("id", "t", "r", long_rel, 1, "00000001")]))
    assert not list(client.list_dids(SCOPE, {"name": did.split(":")[1]}, did_type="dataset"))


# --- products out: tape, then the IDACs the campaign names ------------------------------------------


def test_products_at_the_hub_reach_tape_and_an_idac_from_the_hubs_disk_only(rucio, client, service):
    """Products returned from FRDF and made at USDF, registered at USDF_DISK as the tape hop does:
    rules to USDF_TAPE and IDAC_UK_DISK reach OK with every file AVAILABLE at its size, and the
    IDAC's copies come from USDF_DISK, never from FRDF's copy (which is released after tape)."""
    returned, made = _site_files(rucio, "FRDF", 2), _site_files(rucio, "USDF", 2)
    key = f"svc-{uuid.uuid4().hex[:8]}"
    fan_in = f"{SCOPE}:{key}/return_products/FRDF"
    service.register(fan_in, "FRDF_DISK", _manifest(returned))
    _daemons_once(rucio, service.replicate(fan_in, "USDF_DISK"))
    at_hub = [(rel, rucio["work"] / "repos" / "USDF" / rel) for rel, _ in returned] + made
    archive = f"{SCOPE}:{key}/archive_products/USDF"
    assert service.register(archive, "USDF_DISK", _manifest(at_hub)) == 4
    hold, tape, idac = (service.replicate(archive, rse) for rse in ("USDF_DISK", "USDF_TAPE", "IDAC_UK_DISK"))
    result = _daemons_once(rucio, hold, tape, idac)
    assert result["settled"], result
    sizes = {rel: path.stat().st_size for rel, path in at_hub}
    for rule_id in (tape, idac):
        status = service.rule_status(rule_id)
        assert (status.state, status.files_ok, status.bytes_ok) == ("OK", 4, sum(sizes.values())), status
    assert service.replicas_at(archive, "USDF_TAPE") == sizes == service.replicas_at(archive, "IDAC_UK_DISK")
    for rel, path in at_hub:
        landed = service.replica_dir("IDAC_UK_DISK") / rel
        assert (landed.stat().st_size, adler32(landed)) == (path.stat().st_size, adler32(path)), rel
    assert service.replica_dir("IDAC_UK_DISK") == (rucio["work"] / "rse" / "IDAC_UK_DISK").resolve()
    came_from = sorted(
        (r["name"], src, r["state"])
        for src in ("USDF_DISK", "FRDF_DISK", "USDF_TAPE")
        for r in client.list_requests_history(src, "IDAC_UK_DISK", "F,D", limit=10000)
        if r["name"] in sizes
    )
    assert came_from == sorted((rel, "USDF_DISK", "DONE") for rel in sizes), came_from


class _TaskInstance:
    """What the operators use of Airflow's task instance: the XComs of the tasks before them."""

    def __init__(self, xcoms: dict[str, str]):
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str):
        return self.xcoms.get(task_ids)


@pytest.fixture
def operator_env(rucio, monkeypatch, tmp_path):
    """The Airflow Connection `rucio_default` for this server, the rucio transfer service and a
    ledger of this test's own: what a worker running the archive tasks has."""
    from drp_campaign.ledger import Ledger

    c = rucio["conn"]
    monkeypatch.setenv(
        "AIRFLOW_CONN_RUCIO_DEFAULT",
        json.dumps(
            {
                "conn_type": "generic",
                "host": c["rucio_host"],
                "login": c["username"],
                "password": c["password"],
                "extra": {
                    "auth_host": c["auth_host"],
                    "account": c["account"],
                    "auth_type": c["auth_type"],
                    "vo": c["vo"],
                },
            }
        ),
    )
    monkeypatch.setenv("DRP_TRANSFER_SERVICE", "rucio")
    monkeypatch.setenv("DRP_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("DRP_WORK_DIR", str(rucio["work"]))
    return Ledger()


def _archived_at_usdf(rucio, service, ledger, run_id: str, n: int = 3, settle: bool = True):
    """What the tape hop's register and replicate leave: the run's products registered at
    USDF_DISK as the archive dataset, in the ledger towards USDF_TAPE, held at USDF and asked on tape."""
    from drp_campaign import graph
    from drp_campaign.ledger import HopEntry

    key = graph.run_key(run_id)
    did = f"{SCOPE}:{key}/archive_products/USDF"
    files = _site_files(rucio, "USDF", n)
    manifest = _manifest(files)
    service.register(did, "USDF_DISK", manifest)
    ledger.record_registered(
        run_key=key,
        campaign=SCOPE,
        hop="archive_products",
        src_site="USDF",
        dst_site="USDF_TAPE",
        entries=[HopEntry(e.dataset_id, e.dataset_type, e.run, e.bytes, e.adler32) for e in manifest.entries],
    )
    hold, tape = service.replicate(did, "USDF_DISK"), service.replicate(did, "USDF_TAPE")
    if settle:
        assert _daemons_once(rucio, hold, tape)["settled"]
    return key, did, files, tape


def test_the_idac_tasks_copy_the_archive_after_tape_and_the_report_shows_tape_idacs_and_releases(
    rucio, client, service, operator_env
):
    from drp_campaign.config import load_campaign
    from drp_campaign.operators.archive import ConfirmIdacOperator, ConfirmTapeOperator, CopyToIdacOperator
    from drp_campaign.report import build_report, format_report
    from drp_campaign.sensors.hops import HopReplicationSensor

    ledger = operator_env
    run_id = f"manual__idac-{uuid.uuid4().hex[:8]}"
    key, did, files, tape_rule = _archived_at_usdf(rucio, service, ledger, run_id)
    group = "USDF.archive_products"
    args = dict(campaign_file=str(CAMPAIGN), hop="archive_products", site="USDF")
    ti = _TaskInstance({f"{group}.replicate": tape_rule})
    context = {"run_id": run_id, "params": {}, "ti": ti}
    assert ConfirmTapeOperator(task_id=f"{group}.confirm_tape", **args).execute(context)["files"] == 3

    copy = CopyToIdacOperator(task_id=f"{group}.to_IDAC_UK", idac="IDAC_UK", **args)
    rule_id = copy.execute(context)
    assert copy.execute(context) == rule_id, "a re-run finds the rule"
    scope, name = did.split(":")
    assert sorted(r["rse_expression"] for r in client.list_did_rules(scope, name)) == [
        "IDAC_UK_DISK",
        "USDF_DISK",
        "USDF_TAPE",
    ]
    [pending] = ledger.hop_balances(key, "archive_products", "IDAC_UK_DISK")
    assert (pending.src_site, pending.sent, pending.arrived) == ("USDF", 3, 0), "registered once, not yet there"

    _daemons_once(rucio, rule_id)
    nbytes = sum(path.stat().st_size for _, path in files)
    waited = HopReplicationSensor(task_id=f"{group}.wait_IDAC_UK", rule_id=rule_id).execute(context)
    assert waited == {"rule_id": rule_id, "files_total": 3, "bytes_ok": nbytes}
    ti.xcoms[f"{group}.to_IDAC_UK"] = rule_id
    confirmed = ConfirmIdacOperator(task_id=f"{group}.confirm_IDAC_UK", idac="IDAC_UK", **args).execute(context)
    assert confirmed == {"idac": "IDAC_UK", "rse": "IDAC_UK_DISK", "files": 3, "bytes": nbytes}
    [balance] = ledger.check_balanced(key, "archive_products", "IDAC_UK_DISK", "USDF")
    assert (balance.sent, balance.arrived, balance.arrived_bytes) == (3, 3, nbytes)
    for rel, path in files:
        assert adler32(rucio["work"] / "rse" / "IDAC_UK_DISK" / rel) == adler32(path)

    # What the releases after tape put in the ledger (ReleaseSiteCopiesOperator), for the report.
    ledger.record_release(
        run_key=key, hop="return_products", site="FRDF", rse="FRDF_DISK", files=2, nbytes=8192, rule_ids=["r1"]
    )
    report = build_report(ledger, SCOPE, key, config=load_campaign(CAMPAIGN))
    assert report["ledger_balanced"] is True
    assert report["at_tape"] == [
        {
            "hop": "archive_products",
            "rse": "USDF_TAPE",
            "files": 3,
            "sent": 3,
            "bytes": nbytes,
            "rule_id": tape_rule,
            "rule_state": "OK",
        }
    ]
    assert report["at_idacs"] == [
        {
            "idac": "IDAC_UK",
            "hop": "archive_products",
            "rse": "IDAC_UK_DISK",
            "files": 3,
            "sent": 3,
            "bytes": nbytes,
            "rule_id": rule_id,
            "rule_state": "OK",
        }
    ]
    assert [(r["site"], r["hop"], r["rse"], r["files"], r["bytes"]) for r in report["released"]] == [
        ("FRDF", "return_products", "FRDF_DISK", 2, 8192)
    ]
    text = format_report(report)
    print("\n" + text)
    assert f"archive_products     USDF_TAPE            3/3     files {nbytes:>9} B  rule {tape_rule} OK" in text
    assert (
        f"IDAC_UK     archive_products     IDAC_UK_DISK         3/3     files {nbytes:>9} B  rule {rule_id} OK" in text
    )
    assert "FRDF        return_products      FRDF_DISK            2 files      8192 B" in text


def test_an_idac_rse_rucio_does_not_know_fails_its_task_and_changes_nothing(
    rucio, client, service, operator_env, tmp_path
):
    """sites.yaml names an IDAC whose RSE Rucio lacks: its to_<IDAC> task fails naming the IDAC,
    the RSE and what to do; no rule is made, and the ledger (copies, rules, releases) is untouched."""
    from airflow.sdk.exceptions import AirflowException

    from drp_campaign.operators.archive import CopyToIdacOperator

    ledger = operator_env
    sites = yaml.safe_load((PROJECT_ROOT / "configs" / "sites.yaml").read_text())
    sites["idacs"]["IDAC_XX"] = {"rse": "NOWHERE_IDAC_DISK", "facility": "Nowhere", "storage_tb": 1}
    sites_file = tmp_path / "sites.yaml"
    sites_file.write_text(yaml.safe_dump(sites))
    campaign = yaml.safe_load(CAMPAIGN.read_text())
    campaign["pipeline"] = str(CAMPAIGN.parent / campaign["pipeline"])
    campaign["hops"]["archive_products"]["idacs"] = ["IDAC_UK", "IDAC_XX"]
    campaign_file = tmp_path / "test-3x3.yaml"
    campaign_file.write_text(yaml.safe_dump(campaign))

    run_id = f"manual__idac-{uuid.uuid4().hex[:8]}"
    key, did, _, _ = _archived_at_usdf(rucio, service, ledger, run_id, n=1, settle=False)
    ledger.record_release(
        run_key=key, hop="return_products", site="FRDF", rse="FRDF_DISK", files=1, nbytes=4096, rule_ids=["r1"]
    )
    scope, name = did.split(":")

    def state():
        rules = sorted((r["rse_expression"], r["id"]) for r in client.list_did_rules(scope, name))
        return rules, ledger.hop_balances(key), ledger.rules(key), ledger.releases(key)

    before = state()
    task = CopyToIdacOperator(
        task_id="USDF.archive_products.to_IDAC_XX",
        campaign_file=str(campaign_file),
        sites_file=str(sites_file),
        hop="archive_products",
        site="USDF",
        idac="IDAC_XX",
    )
    with pytest.raises(AirflowException) as err:
        task.execute({"run_id": run_id, "params": {}, "ti": _TaskInstance({})})
    text = str(err.value)
    print(f"\nunknown IDAC RSE: {text}")
    assert "IDAC IDAC_XX (NOWHERE_IDAC_DISK): no copy asked, no rule made" in text
    assert "Rucio knows no RSE 'NOWHERE_IDAC_DISK'" in text
    assert f"idacs.IDAC_XX.rse in {sites_file}: fix it there, or add NOWHERE_IDAC_DISK to Rucio" in text
    assert "then clear this task" in text
    assert state() == before
    assert "NOWHERE_IDAC_DISK" not in {r["rse"] for r in client.list_rses()}


def test_tape_and_idac_copies_are_confirmed_by_reading_them_not_by_rucio_s_word(rucio, service, operator_env):
    """#12 finding 5: the tape and IDAC confirmations copied size and adler32 from Rucio's record
    (what the source registered), so a copy damaged at the destination was confirmed. Now each file
    is read where Rucio says the replica is, and a mismatch fails the task naming the dataset."""
    from airflow.sdk.exceptions import AirflowException

    from drp_campaign.operators.archive import ConfirmIdacOperator, ConfirmTapeOperator, CopyToIdacOperator

    ledger = operator_env
    run_id = f"manual__confirm-{uuid.uuid4().hex[:8]}"
    key, did, files, tape_rule = _archived_at_usdf(rucio, service, ledger, run_id)
    group, args = "USDF.archive_products", dict(campaign_file=str(CAMPAIGN), hop="archive_products", site="USDF")
    ti = _TaskInstance({f"{group}.replicate": tape_rule})
    context = {"run_id": run_id, "params": {}, "ti": ti}
    [victim] = [e for e in service.manifest(did).entries if e.relpath == files[0][0]]

    def damage(rse: str) -> bytes:
        """Flip one byte of the victim's replica at RSE (same size: Rucio still calls it AVAILABLE)."""
        path = rucio["work"] / "rse" / rse / victim.relpath
        original = path.read_bytes()
        path.write_bytes(original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])
        return original

    def refused(task, rse: str, copy_name: str) -> str:
        with pytest.raises(AirflowException) as err:
            task.execute(context)
        text, got = str(err.value), adler32(rucio["work"] / "rse" / rse / victim.relpath)
        print(f"\n{copy_name} damaged: {text}")
        assert text.startswith(f"{task.pair()}: {copy_name} not confirmed: ledger does not balance for run {key}")
        assert (
            f"isolated_star {victim.dataset_id} ({victim.run}): arrived as {victim.bytes} B adler32 {got}, "
            f"sent {victim.bytes} B adler32 {victim.adler32}"
        ) in text
        return text

    tape = ConfirmTapeOperator(task_id=f"{group}.confirm_tape", **args)
    original = damage("USDF_TAPE")
    refused(tape, "USDF_TAPE", "tape copy")
    (rucio["work"] / "rse" / "USDF_TAPE" / victim.relpath).write_bytes(original)
    assert tape.execute(context)["files"] == 3, "the repaired copy is confirmed on a re-run"

    rule_id = CopyToIdacOperator(task_id=f"{group}.to_IDAC_UK", idac="IDAC_UK", **args).execute(context)
    assert _daemons_once(rucio, rule_id)["settled"]
    ti.xcoms[f"{group}.to_IDAC_UK"] = rule_id
    damage("IDAC_UK_DISK")
    idac = ConfirmIdacOperator(task_id=f"{group}.confirm_IDAC_UK", idac="IDAC_UK", **args)
    refused(idac, "IDAC_UK_DISK", "IDAC copy")
    [balance] = ledger.hop_balances(key, "archive_products", "IDAC_UK_DISK", "USDF")
    assert (balance.sent, balance.arrived) == (3, 2)


def test_a_campaign_added_while_rucio_runs_gets_its_scope_at_its_first_hop(rucio, client, service):
    """Issue #15: a campaign file added to running services has no scope yet (the local Rucio makes
    the shipped campaigns' at its start); its first hop's registration makes it, owned by us."""
    scope = f"new-{uuid.uuid4().hex[:8]}"
    assert scope not in client.list_scopes()
    manifest = _manifest(_site_files(rucio, "FRDF", 2))
    assert service.register(f"{scope}:k/gather_for_step2c/FRDF", "FRDF_DISK", manifest) == 2
    assert scope in client.list_scopes_for_account(client.account)
    assert len(list(client.list_files(scope, "k/gather_for_step2c/FRDF"))) == 2


def test_a_scope_our_account_may_not_make_is_a_clear_error_naming_scope_and_account():
    from rucio.common.exception import AccessDenied, ScopeNotFound

    from drp_campaign.transfer.base import Manifest, TransferError
    from drp_campaign.transfer.rucio import RucioTransferService

    class PolicyOfAdminsOnly:
        account = "drp"

        def list_files(self, scope, name):
            raise ScopeNotFound(f"Scope {scope} not found")

        def add_dataset(self, scope, name, **kwargs):
            raise ScopeNotFound(f"Scope {scope} not found")

        def add_scope(self, account, scope):
            raise AccessDenied(f"Account {account} can not add scope")

    with pytest.raises(TransferError) as err:
        RucioTransferService(PolicyOfAdminsOnly()).register("newcampaign:k/hop/FRDF", "FRDF_DISK", Manifest("m", []))
    assert "scope 'newcampaign' does not exist and account drp may not make it" in str(err.value)
    assert "rucio-admin scope add --account drp --scope newcampaign" in str(err.value)


@pytest.mark.drill
def test_a_stuck_rule_is_boosted_by_the_hop_wait_and_rucio_retries_it_at_once(rucio, client, operator_env):
    """A file's transfer fails 4 times (Rucio's 3 retries spent): the rule is STUCK, and Rucio's
    repairer leaves it alone for 30 min. A hop's wait that gives it time (stuck_after > 0) boosts
    it once; the repairer's next pass retries it, the 5th transfer lands: the file arrives once,
    intact, under the same rule. A row of the fault table (drp_campaign/faults.py)."""
    from airflow.sdk.exceptions import TaskDeferred

    from drp_campaign import faults
    from drp_campaign.sensors.hops import HopReplicationSensor

    files, dataset, rule_id, env = _to_usdf_with_a_fault(rucio, client, "FRDF", 2, {"fail": 4}, "stuck")
    flaky_rel = files[0][0]
    assert _daemons_once(rucio, rule_id, env=env)["settled"]
    assert client.get_replication_rule(rule_id)["state"] == "STUCK"
    _daemons_once(rucio, rule_id, env=env, repairer=True)
    assert client.get_replication_rule(rule_id)["state"] == "STUCK", "left alone by the repairer, unboosted"

    wait = HopReplicationSensor(task_id="FRDF.gather.wait", rule_id=rule_id, stuck_after_s=600, inline_wait_s=0)
    with pytest.raises(TaskDeferred):  # boosted, then waits in the triggerer
        ti = SimpleNamespace(dag_id="campaign_test_3x3", run_id="manual__stuck", task_id="FRDF.gather.wait")
        wait.execute({"run_id": "manual__stuck", "params": {}, "ti": ti})
    result = _daemons_once(rucio, rule_id, env=env, repairer=True)
    rule = client.get_replication_rule(rule_id)
    assert result["settled"] and rule["state"] == "OK" and rule["locks_ok_cnt"] == 2, (rule, result)
    landed = rucio["work"] / "repos" / "USDF" / flaky_rel
    assert adler32(landed) == adler32(files[0][1]), "arrived intact"
    assert [r["id"] for r in client.list_did_rules(SCOPE, dataset)] == [rule_id], "the same rule, no second one"
    counts = json.loads((rucio["home"] / "transfers.faults-count.json").read_text())
    assert [n for key, n in counts.items() if key.endswith(f"{SCOPE}:{flaky_rel}")] == [4]
    arrived = sum(1 for rel, _ in files if (rucio["work"] / "repos" / "USDF" / rel).is_file())
    faults.record_drill(
        faults.DrillRow(
            "STUCK rule boosted",
            "a file's transfer FRDF_DISK -> USDF_DISK failing 4 times (Rucio's retries spent)",
            "the hop's wait boosted the STUCK rule once; the repairer's next pass retried it; OK, same rule",
            len(files) - arrived,
            len(list(client.list_did_rules(SCOPE, dataset))) - 1,
            rule_id,
        )
    )


def _history(client, rel: str, src: str, dst: str) -> list[dict]:
    """The archived transfer requests of one file SRC -> DST, oldest first."""
    return sorted(
        (r for r in client.list_requests_history(src, dst, "F,D", limit=10000) if r["name"] == rel),
        key=lambda r: r["retry_count"] or 0,
    )


@pytest.mark.drill
def test_a_replica_corrupted_on_its_way_is_found_at_the_destination_and_copied_again(rucio, client):
    """A copy lands with one byte flipped (the transfer tool's `corrupt` fault: the disk or the
    network path damaged it, the read of the source was good). The destination read-back finds the
    adler32 mismatch, removes the file and reports FAILED; Rucio retries under the same rule, the
    second copy is intact, and only then is the replica AVAILABLE (a hop ingests only once its rule
    is OK, and its ingest checks adler32 again: test_stackside). A row of the fault table."""
    from drp_campaign import faults

    files, dataset, rule_id, env = _to_usdf_with_a_fault(rucio, client, "UKDF_RAL", 2, {"corrupt": 1}, "damaged")
    damaged_rel = files[0][0]
    result = _daemons_once(rucio, rule_id, env=env)
    rule = client.get_replication_rule(rule_id)
    assert result["settled"] and rule["state"] == "OK" and rule["locks_ok_cnt"] == 2, (rule, result)

    damaged = _history(client, damaged_rel, "UKDF_RAL_DISK", "USDF_DISK")
    assert [r["state"] for r in damaged] == ["FAILED", "DONE"], damaged
    assert "DESTINATION CHECKSUM MISMATCH" in damaged[0]["err_msg"], damaged[0]
    assert damaged[1]["previous_attempt_id"] == damaged[0]["id"], "a retry of the same request, not a new rule"
    counts = json.loads((rucio["home"] / "transfers.faults-count.json").read_text())
    assert [n for key, n in counts.items() if key.startswith("corrupt ") and key.endswith(damaged_rel)] == [1]
    # the damaged copy was made (the fault fired on a real write) and removed before Rucio heard of it
    copies = sorted(
        (
            f
            for job in (rucio["home"] / "transfers").glob("*.json")
            for f in json.loads(job.read_text())["files"].values()
            if f["name"] == damaged_rel
        ),
        key=lambda f: f["started_at"],
    )
    attempts = [a for f in copies for a in f["attempts"]]
    assert [a.get("injected", "").split(":")[0] for a in attempts] == ["corrupt", ""], attempts

    arrived = 0
    for rel, path in files:
        landed = rucio["work"] / "repos" / "USDF" / rel
        assert (adler32(landed), landed.read_bytes()) == (adler32(path), path.read_bytes()), rel
        arrived += 1
    assert not list((rucio["work"] / "repos" / "USDF").rglob("*.rucio-local.part")), "no part file left"
    faults.record_drill(
        faults.DrillRow(
            "corrupt replica re-transferred",
            "one file's copy UKDF_RAL_DISK -> USDF_DISK written with one byte flipped",
            "DESTINATION CHECKSUM MISMATCH at the read-back, the file removed, Rucio's retry landed it intact",
            len(files) - arrived,
            len(list(client.list_did_rules(SCOPE, dataset))) - 1 + max(0, len(damaged) - 2),
            rule_id,
        )
    )


def test_a_held_transfer_keeps_its_rule_replicating_until_the_hold_ends(rucio, client):
    """The `hold_s` and `hold_while` faults: the copy is made at once, but Rucio hears of it only
    after the hold (as a transfer queued at FTS): the rule stays REPLICATING meanwhile, then becomes
    OK with no retry. The second file is held until its release file is deleted."""
    release = rucio["work"] / f"release-{uuid.uuid4().hex[:8]}"
    release.touch()
    files, dataset, rule_id, env = _to_usdf_with_a_fault(rucio, client, "FRDF", 1, {"hold_s": 20}, "held")
    t0 = time.monotonic()
    first = _daemons_once(rucio, rule_id, env=env, timeout=5)
    assert not first["settled"] and client.get_replication_rule(rule_id)["state"] == "REPLICATING", first
    assert (rucio["work"] / "repos" / "USDF" / files[0][0]).is_file(), "copied already, not yet reported"
    second = _daemons_once(rucio, rule_id, env=env, timeout=60)
    rule = client.get_replication_rule(rule_id)
    assert second["settled"] and rule["state"] == "OK", (rule, second)
    assert time.monotonic() - t0 >= 20, "not before the hold ended"
    assert [r["state"] for r in _history(client, files[0][0], "FRDF_DISK", "USDF_DISK")] == ["DONE"]

    files, _, rule_id, env = _to_usdf_with_a_fault(rucio, client, "FRDF", 1, {"hold_while": str(release)}, "held")
    assert not _daemons_once(rucio, rule_id, env=env, timeout=8)["settled"]
    assert client.get_replication_rule(rule_id)["state"] == "REPLICATING", "held while the file exists"
    release.unlink()
    assert _daemons_once(rucio, rule_id, env=env, timeout=60)["settled"]
    assert client.get_replication_rule(rule_id)["state"] == "OK"
