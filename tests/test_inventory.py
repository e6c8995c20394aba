"""`drp-campaign inventory`, for real: a real local Rucio 41 server (own work dir, database and
port) and real Butler repos (the hub seeded with every input, FRDF with records only). The place
hop is done as its operators do it (export-inputs at the hub, register at USDF_DISK, a rule to
FRDF_DISK settled by Rucio's daemons, ingest-hop at FRDF); the inventory then reads only Rucio and
the Butlers: balanced, a file damaged at FRDF named, a tape and an IDAC copy checked from Rucio's
replicas, released copies shown as released, the newest run by default, an unknown run refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import drop_database
from test_rucio_local import SCRIPT, _daemons_once
from test_stackside import stackside

from drp_campaign import graph, settings
from drp_campaign.cli import main
from drp_campaign.config import load_campaign
from drp_campaign.inventory import Inventory, InventoryRow, _merged, format_inventory
from drp_campaign.transfer.base import Manifest
from drp_campaign.transfer.rucio import RucioTransferService, rucio_client
from operators.hops import hop_dataset_did

pytestmark = pytest.mark.integration

TEST_DB = "drp_rucio_inventory"
TEST_PORT = "8086"  # 8080 demo, 8082 test_rucio_local, 8083 e2e, 809x Airflow and iDDS
CAMPAIGN = settings.CAMPAIGNS_DIR / "test-3x3.yaml"
RUN_1 = "manual__2026-11-20T08:00:00.123456+00:00"  # as Airflow names a run; the CLI takes it or its key
RUN_2 = "manual__2026-11-21T08:00:00.000000+00:00"
RUN_TAPE = "scheduled__2026-11-20T12:00:00+00:00"
RUN_FANIN = "manual__2026-11-20T10:00:00+00:00"


@pytest.fixture(scope="module")
def world(tmp_path_factory, seeded_repo):
    """USDF seeded with every input, FRDF with the sky's records only; then Rucio from nothing,
    its RSE prefixes being those repos. The process environment points at them (as env.sh would),
    so `drp-campaign inventory` finds the connection file and the sites' repos by itself."""
    work = tmp_path_factory.mktemp("inventory-work")
    repos = work / "repos"
    seeded_repo(repos / "USDF", "USDF", "--all-tracts")
    seeded_repo(repos / "FRDF", "FRDF", "--no-data")
    env = {**os.environ, "DRP_WORK_DIR": str(work), "DRP_RUCIO_DB": TEST_DB, "DRP_RUCIO_PORT": TEST_PORT}
    env.pop("RUCIO_CONFIG", None)
    drop_database(TEST_DB)
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", "--no-daemons"], env=env, capture_output=True, text=True, timeout=180
    )
    assert started.returncode == 0, started.stdout + started.stderr
    conn = json.loads((work / "rucio" / "connection.json").read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRP_WORK_DIR", str(work))
        mp.setenv("DRP_RUCIO_PORT", TEST_PORT)
        mp.setenv("DRP_RUCIO_DB", TEST_DB)
        mp.setenv("RUCIO_CONFIG", conn["client_config"])  # the token cache under this work dir
        try:
            client = rucio_client(conn)
            yield {
                "env": env,
                "work": work,
                "repos": repos,
                "client": client,
                "service": RucioTransferService(client),
                "campaign": load_campaign(CAMPAIGN),
            }
        finally:
            subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)


def settle(world, *rule_ids: str) -> None:
    result = _daemons_once(world, *rule_ids, timeout=120)
    assert result["settled"], result
    for rule_id in rule_ids:
        assert world["service"].rule_status(rule_id).state == "OK", result


@pytest.fixture(scope="module")
def frdf_inputs(world) -> Manifest:
    """What FRDF needs for its tracts, selected at the hub (the place hop's register step)."""
    path = world["work"] / "manifests" / "FRDF.source.json"
    stackside(
        world["work"],
        "export-inputs",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        "FRDF",
        "--repo",
        str(world["repos"] / "USDF"),
        "--manifest",
        str(path),
    )
    return Manifest.read(path)


def place_at_frdf(world, run_id: str, manifest: Manifest, ingest: bool = True) -> str:
    """The place hop to FRDF as its operators do it; returns the dataset DID."""
    service, key = world["service"], graph.run_key(run_id)
    did = hop_dataset_did(world["campaign"], key, "place_inputs", "FRDF")
    service.register(did, "USDF_DISK", manifest)
    service.replicate(did, "USDF_DISK")  # the hub holds its copy
    settle(world, service.replicate(did, "FRDF_DISK"))
    if ingest:
        registered = world["work"] / "manifests" / f"{key}.registered.json"
        service.manifest(did).write(registered)
        out = stackside(
            world["work"],
            "ingest-hop",
            "--repo",
            str(world["repos"] / "FRDF"),
            "--manifest",
            str(registered),
            "--replica-dir",
            str(service.replica_dir("FRDF_DISK")),
        )
        assert out["ingested"] == len(manifest.entries) and not out["rejected"], out
    return did


def inventory(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["inventory", str(CAMPAIGN), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def by_type(manifest: Manifest) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    for e in manifest.entries:
        n, b = counts.get(e.dataset_type, (0, 0))
        counts[e.dataset_type] = (n + 1, b + e.bytes)
    return counts


def test_a_placed_and_ingested_hop_balances(world, frdf_inputs, capsys):
    place_at_frdf(world, RUN_1, frdf_inputs)
    code, out, err = inventory(capsys, "--run", RUN_1, "--json")
    assert code == 0, out + err
    inv = json.loads(out)
    assert (inv["run_key"], inv["balanced"]) == (graph.run_key(RUN_1), True)
    expected = by_type(frdf_inputs)
    assert set(expected) == {"raw", "bias", "ref_cat"} and expected["raw"][0] == 16
    assert {
        (r["site_or_rse"], r["hop"], r["dataset_type"]): (
            r["expected"],
            r["present"],
            r["verified"],
            r["rucio_available"],
            r["bytes_expected"],
            r["bytes_present"],
            r["bytes_verified"],
            r["state"],
        )
        for r in inv["rows"]
    } == {
        (site, "place_inputs", t): (n, n, n, n, b, b, b, "ok")
        for t, (n, b) in expected.items()
        for site in ("USDF", "FRDF")
    }, "the hub's copy (the source, held there) is listed and checked too"
    assert inv["notes"] == [] and "place_inputs" not in inv["hops_not_registered"]
    assert "gather_for_step2c" in inv["hops_not_registered"]

    code, table, _ = inventory(capsys, "--run", graph.run_key(RUN_1))  # the key works as well as the run id
    assert code == 0
    print(f"\n{table}")
    n, b = len(frdf_inputs.entries), frdf_inputs.total_bytes
    for site in ("USDF", "FRDF"):
        [total] = [line.split() for line in table.splitlines() if line.split()[:2] == [site, "total"]]
        assert total == [site, "total", str(n), str(n), str(n), str(n), str(b), str(b), str(b), "ok"]
    assert table.splitlines()[-1].startswith("BALANCED")


def test_tape_and_idac_copies_are_checked_from_rucio(world, frdf_inputs, capsys):
    """No Butler at a tape or IDAC RSE: what Rucio has AVAILABLE there with the manifest's size."""
    service, key = world["service"], graph.run_key(RUN_TAPE)
    archived = Manifest(frdf_inputs.repo, [e for e in frdf_inputs.entries if e.dataset_type == "raw"][:3])
    did = hop_dataset_did(world["campaign"], key, "archive_products", "USDF")
    service.register(did, "USDF_DISK", archived)
    settle(world, service.replicate(did, "USDF_TAPE"))
    code, out, _ = inventory(capsys, "--run", RUN_TAPE, "--json")
    rows = {r["site_or_rse"]: r for r in json.loads(out)["rows"]}
    assert code == 1, "the campaign's to_tape hop names IDAC_UK: its copy is expected too"
    assert (rows["USDF_TAPE"]["verified"], rows["USDF_TAPE"]["bytes_verified"], rows["USDF_TAPE"]["state"]) == (
        3,
        archived.total_bytes,
        "ok",
    )
    assert (rows["IDAC_UK_DISK"]["expected"], rows["IDAC_UK_DISK"]["verified"], rows["IDAC_UK_DISK"]["state"]) == (
        3,
        0,
        "missing",
    )
    code, table, _ = inventory(capsys, "--run", RUN_TAPE)
    assert "NOT BALANCED: IDAC_UK_DISK archive_products raw: 0 of 3 verified" in table.splitlines()[-1]

    settle(world, service.replicate(did, "IDAC_UK_DISK"))
    code, out, _ = inventory(capsys, "--run", RUN_TAPE, "--json")
    assert code == 0
    assert sorted(
        (r["site_or_rse"], r["verified"], r["rucio_available"], r["state"]) for r in json.loads(out)["rows"]
    ) == [("IDAC_UK_DISK", 3, 3, "ok"), ("USDF", 3, 3, "ok"), ("USDF_TAPE", 3, 3, "ok")]
    # RUN_1 placed the same files at FRDF: Rucio holds them there for that run, and says so.
    note = "Rucio also holds 3 files of archive_products at FRDF_DISK, which no copy of this run lists"
    assert json.loads(out)["notes"] == [f"{note} (held for another run or dataset)"]


def test_a_fan_in_sites_own_copy_that_rucio_still_holds_is_listed_and_counts(world, frdf_inputs, capsys):
    """#12 finding 5: the inventory showed where a hop's data was sent, not the copies Rucio still
    holds at its source: a fan-in site's own copy stays, held by a rule that expires with the hop's
    lifetime (gather_for_step2c: 30 days). FRDF sends what it holds (its placed inputs stand in for
    its step outputs) to the hub as the fan-in's operators do; FRDF's copy is listed beside the
    hub's, checked in FRDF's Butler, and is part of the balance."""
    time.sleep(1.1)  # Rucio keeps creation times to the second: this run is newer than RUN_TAPE
    service, client, key = world["service"], world["client"], graph.run_key(RUN_FANIN)
    did = hop_dataset_did(world["campaign"], key, "gather_for_step2c", "FRDF")
    service.register(did, "FRDF_DISK", frdf_inputs)
    hold = service.replicate(did, "FRDF_DISK", lifetime_s=30 * 86400)
    settle(world, hold, service.replicate(did, "USDF_DISK"))
    assert client.get_replication_rule(hold)["expires_at"] is not None

    code, out, _ = inventory(capsys, "--run", RUN_FANIN, "--json")
    inv = json.loads(out)
    assert (code, inv["balanced"]) == (0, True)
    rows = {(r["site_or_rse"], r["hop"], r["dataset_type"]): r for r in inv["rows"]}
    held = {key: (r["expected"], r["verified"], r["rucio_available"], r["state"]) for key, r in rows.items()}
    sent = {t: (n, n, n, "ok") for t, (n, _) in by_type(frdf_inputs).items()}
    assert held == {(site, "gather_for_step2c", t): v for t, v in sent.items() for site in ("USDF", "FRDF")}
    why = "which no copy of this run lists (held for another run or dataset)"
    assert inv["notes"] == [
        f"Rucio also holds 3 files of gather_for_step2c at {rse}, {why}" for rse in ("IDAC_UK_DISK", "USDF_TAPE")
    ], "RUN_TAPE archived 3 of the same files"
    code, table, _ = inventory(capsys, "--run", RUN_FANIN)
    print(f"\n{table}")
    [total] = [line.split() for line in table.splitlines() if line.split()[:2] == ["FRDF", "total"]]
    assert total[2:4] == [str(len(frdf_inputs.entries))] * 2 and total[-1] == "ok"


def test_without_run_the_newest_run_rucio_knows_is_shown(world, frdf_inputs, capsys):
    time.sleep(1.1)  # Rucio keeps creation times to the second
    place_at_frdf(world, RUN_2, frdf_inputs, ingest=False)  # the same inputs again: FRDF's Butler has them
    code, out, _ = inventory(capsys, "--json")
    inv = json.loads(out)
    assert (code, inv["run_key"], inv["balanced"]) == (0, graph.run_key(RUN_2), True)
    for site in ("USDF", "FRDF"):  # the hub's copy (the source) and FRDF's
        assert sum(r["verified"] for r in inv["rows"] if r["site_or_rse"] == site) == len(frdf_inputs.entries)


def test_a_file_damaged_at_the_site_is_named_with_its_site_type_and_count(world, frdf_inputs, capsys):
    victim = next(e for e in frdf_inputs.entries if e.dataset_type == "raw")
    damaged = world["repos"] / "FRDF" / victim.relpath
    damaged.write_text("{}")  # after ingest: Rucio still calls the replica AVAILABLE; only the Butler check tells
    cli = [sys.executable, "-m", "drp_campaign.cli", "inventory", str(CAMPAIGN), "--run", RUN_1]
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    print(f"\n{proc.stdout}")
    raws = by_type(frdf_inputs)["raw"]
    verdict = proc.stdout.splitlines()[-1]
    assert verdict == (
        f"NOT BALANCED: FRDF place_inputs raw: {raws[0] - 1} of {raws[0]} verified "
        f"(1 missing or damaged, {victim.bytes} B)"
    )
    assert any(victim.dataset_id in line and "size 2" in line for line in proc.stdout.splitlines() if "note:" in line)

    rows = {
        r["dataset_type"]: r
        for r in json.loads(subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=300).stdout)[
            "rows"
        ]
        if r["site_or_rse"] == "FRDF"
    }
    assert (rows["raw"]["present"], rows["raw"]["verified"], rows["raw"]["rucio_available"], rows["raw"]["state"]) == (
        raws[0],
        raws[0] - 1,
        raws[0],
        "missing",
    )
    assert rows["raw"]["bytes_verified"] == raws[1] - victim.bytes
    assert rows["bias"]["state"] == rows["ref_cat"]["state"] == "ok"
    # The same file is FRDF's own copy of what it sent in RUN_FANIN's fan-in: that copy is short too.
    code, table, _ = inventory(capsys, "--run", RUN_FANIN)
    short = f"{raws[0] - 1} of {raws[0]} verified (1 missing or damaged, {victim.bytes} B)"
    assert code == 1 and table.splitlines()[-1] == f"NOT BALANCED: FRDF gather_for_step2c raw: {short}"


def test_a_released_copy_is_shown_released_not_missing(world, capsys):
    service, client = world["service"], world["client"]
    did = hop_dataset_did(world["campaign"], graph.run_key(RUN_2), "place_inputs", "FRDF")
    assert service.release(did, "FRDF_DISK", grace_s=1)
    code, out, _ = inventory(capsys, "--run", RUN_2, "--json")
    states = {(r["site_or_rse"], r["state"]) for r in json.loads(out)["rows"]}
    assert code == 0 and states == {("FRDF", "released"), ("USDF", "ok")}, "the hub's source copy stays"

    time.sleep(2)  # the rule's lifetime passes; Rucio's judge-cleaner deletes it
    result = _daemons_once(world, timeout=120)
    assert result["settled"], result
    scope, name = did.split(":", 1)
    assert [r["rse_expression"] for r in client.list_did_rules(scope, name)] == ["USDF_DISK"]
    code, table, _ = inventory(capsys, "--run", RUN_2)
    assert code == 0, table
    assert (
        table.splitlines()[-1] == "BALANCED: every copy Rucio expects is present and verified where it belongs "
        "(released, as asked: FRDF place_inputs)"
    )
    assert all(line.split()[-1] == "released" for line in table.splitlines() if line.startswith("  FRDF "))
    assert (world["repos"] / "FRDF" / service.manifest(did).entries[0].relpath).is_file(), (
        "RUN_1's rule still holds the files"
    )


def test_a_run_rucio_does_not_know_is_refused_with_the_runs_it_knows(world, capsys):
    code, out, err = inventory(capsys, "--run", "manual__1999-01-01T00:00:00+00:00")
    assert (code, out) == (2, "")
    assert "Rucio has no datasets of run manual__1999-01-01T00-00-00 in scope test-3x3" in err
    listed = [line.split()[0] for line in err.splitlines()[1:]]
    assert listed == [graph.run_key(r) for r in (RUN_2, RUN_FANIN, RUN_TAPE, RUN_1)], "newest first"


def test_a_connection_file_that_cannot_be_read_is_refused_and_an_unreachable_rucio_named(tmp_path, capsys):
    code, out, err = inventory(capsys, "--rucio-connection", str(tmp_path / "absent.json"))
    assert (code, out) == (2, "")
    assert (
        f"cannot read the Rucio connection file {tmp_path / 'absent.json'}" in err and "--rucio-connection FILE" in err
    )
    nothing = tmp_path / "nothing-listens.json"
    nothing.write_text(
        json.dumps(
            {
                "rucio_host": "http://127.0.0.1:9",
                "account": "drp",
                "auth_type": "userpass",
                "username": "drp",
                "password": "x",
            }
        )
    )
    code, out, err = inventory(capsys, "--rucio-connection", str(nothing))
    assert (code, out) == (1, "")
    assert "error: cannot reach Rucio at http://127.0.0.1:9 as drp" in err and str(nothing) in err


def test_a_fan_in_from_two_sites_is_one_row_per_type_at_the_hub_and_one_short_part_makes_it_missing():
    """No service: rows as collect makes them per (copy, type), merged and printed."""
    part = dict(site_or_rse="USDF", hop="gather_for_step2c", dataset_type="isolated_star", rucio_available=2)
    rows = _merged(
        [
            InventoryRow(
                **part, expected=2, present=2, verified=2, bytes_expected=20, bytes_present=20, bytes_verified=20
            ),
            InventoryRow(
                **part,
                expected=3,
                present=3,
                verified=2,
                bytes_expected=30,
                bytes_present=30,
                bytes_verified=20,
                state="missing",
            ),
            InventoryRow("FRDF", "return_products", "deep_coadd", expected=1, bytes_expected=5, state="released"),
            InventoryRow("FRDF", "return_products", "deep_coadd", expected=1, bytes_expected=5, state="released"),
        ]
    )
    assert [(r.site_or_rse, r.expected, r.verified, r.bytes_verified, r.rucio_available, r.state) for r in rows] == [
        ("USDF", 5, 4, 40, 4, "missing"),
        ("FRDF", 2, 0, 0, 0, "released"),
    ]
    table = format_inventory(Inventory("test-3x3", "k", rows)).splitlines()
    assert [line.split()[:3] for line in table[1:] if line.strip()][:3] == [
        ["where", "hop", "dataset"],
        ["USDF", "gather_for_step2c", "isolated_star"],
        ["USDF", "total", "5"],
    ]
    assert (
        table[-1] == "NOT BALANCED: USDF gather_for_step2c isolated_star: 4 of 5 verified (1 missing or damaged, 10 B)"
    )
    end = table[1].index("expected") + len("expected")  # numbers are right-aligned under their header
    assert [line[:end][-2:] for line in table[2:6]] == [" 5", " 5", "", " 2"] and table[2][
        end
    ] == " "  # row, total, gap, FRDF
