"""Input placement on the stack side, for real: the hub's Butler holds every input; each site gets
exactly what its tracts need (raws by visit/detector overlap, calibrations by validity range,
reference catalog shards by sky region), ingested with the same UUIDs, certified alike, and
verified with checksums; a gap at the hub is refused, naming it, before anything is placed.
The Rucio leg of the same hop runs in the end-to-end campaign (tests/test_campaign_e2e.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_stackside import STACK_PY, stackside  # noqa: F401 - STACK_PY: skip without the stack env

from drp_campaign import settings
from drp_campaign.config import load_campaign
from drp_campaign.dag_factory import build_dag

pytestmark = pytest.mark.integration

CAMPAIGN = settings.CAMPAIGNS_DIR / "test-3x3.yaml"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, seeded_repo) -> Path:
    """USDF's repo with the whole synthetic sky's inputs (what `drp-campaign seed` makes)."""
    work = tmp_path_factory.mktemp("hub")
    seeded_repo(work / "USDF", "USDF", "--all-tracts")
    return work / "USDF"


@pytest.fixture
def hub_copy(hub: Path, tmp_path: Path) -> Path:
    """A copy of the hub repo a test may damage."""
    return Path(shutil.copytree(hub, tmp_path / "USDF", symlinks=True))


def export(work: Path, hub_repo: Path, site: str, ok: bool = True):
    return stackside(
        work,
        "export-inputs",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        site,
        "--repo",
        str(hub_repo),
        "--manifest",
        str(work / f"{site}.json"),
        ok=ok,
    )


def visit_tract(visit: int) -> int:
    return visit // 1000 - 1


def test_the_place_hop_runs_at_each_other_site_before_its_check_inputs():
    dag = build_dag(load_campaign(CAMPAIGN))
    for site in ("FRDF", "UKDF_RAL"):
        chain = ["register", "replicate", "wait", "ingest", "verify"]
        for before, after in zip(chain, chain[1:]):
            assert f"{site}.place_inputs.{before}" in dag.get_task(f"{site}.place_inputs.{after}").upstream_task_ids
        assert f"{site}.place_inputs.verify" in dag.get_task(f"{site}.check_inputs").upstream_task_ids
        assert dag.get_task(f"{site}.place_inputs.register").queue == "usdf", "the hub exports"
        assert dag.get_task(f"{site}.place_inputs.ingest").queue == site.lower(), "the site ingests"
    assert not [t for t in dag.task_dict if t.startswith("USDF.place_inputs")], "the hub holds its inputs already"
    assert "FRDF.place_inputs.verify" not in dag.get_task("campaign_report").upstream_task_ids


def test_a_site_gets_what_its_tracts_need_ingested_certified_and_verified(hub: Path, tmp_path: Path, seeded_repo):
    out = export(tmp_path, hub, "FRDF")
    entries = json.loads((tmp_path / "FRDF.json").read_text())["entries"]
    by_type: dict[str, list[dict]] = {}
    for e in entries:
        by_type.setdefault(e["dataset_type"], []).append(e)
    # Raws: every visit/detector of FRDF's tracts (2 and 3), nothing of another site's.
    raws = by_type["raw"]
    assert {visit_tract(e["data_id"]["visit"]) for e in raws} == {2, 3}
    assert len(raws) == 2 * 4 * 2 == out["by_type"]["raw"]  # tracts x visits_per_tract x detectors
    # Calibrations: one per detector for the one day FRDF's visits were taken (2026-01-04).
    assert sorted((e["data_id"]["detector"], e["validity"]["begin"][:10]) for e in by_type["bias"]) == [
        (0, "2026-01-04"),
        (1, "2026-01-04"),
    ]
    # Reference catalog shards: the htm4 pixels whose envelope meets tracts 2 or 3 (see sky.py), all of them.
    wanted = set(
        json.loads(
            stack_python(
                "from lsst.sphgeom import ConvexPolygon, HtmPixelization, LonLat, UnitVector3d\n"
                "ids = set()\n"
                "for c in (25, 35):  # tract t spans RA 10t+1..10t+9, Dec -4..4\n"
                "    box = ConvexPolygon([UnitVector3d(LonLat.fromDegrees(c + dx, dy)) "
                "for dx, dy in ((-4, -4), (4, -4), (4, 4), (-4, 4))])\n"
                "    ids.update(p for lo, hi in HtmPixelization(4).envelope(box) for p in range(lo, hi))\n"
                "print(json.dumps(sorted(ids)))"
            )
        )
    )
    assert {e["data_id"]["htm4"] for e in by_type["ref_cat"]} == wanted

    site = tmp_path / "FRDF"
    seeded_repo(site, "FRDF", "--no-data")
    empty = stackside(tmp_path, "check-datasets", "--repo", str(site), "--manifest", str(tmp_path / "FRDF.json"))
    assert not empty["ok"] and {t: r["present"] for t, r in empty["by_type"].items()} == {
        "raw": 0,
        "bias": 0,
        "ref_cat": 0,
    }

    first = stackside(
        tmp_path,
        "ingest-hop",
        "--repo",
        str(site),
        "--manifest",
        str(tmp_path / "FRDF.json"),
        "--replica-dir",
        str(hub),
    )
    assert (first["ingested"], first["certified"], first["rejected"]) == (len(entries), 2, [])
    again = stackside(
        tmp_path,
        "ingest-hop",
        "--repo",
        str(site),
        "--manifest",
        str(tmp_path / "FRDF.json"),
        "--replica-dir",
        str(hub),
    )
    assert (again["ingested"], again["already_present"], again["certified"]) == (0, len(entries), 0), (
        "a retry changes nothing"
    )

    held = stackside(tmp_path, "check-datasets", "--repo", str(site), "--manifest", str(tmp_path / "FRDF.json"))
    assert held["ok"], held["problems"]
    assert {t: (r["expected"], r["present"], r["verified"]) for t, r in held["by_type"].items()} == {
        t: (len(v), len(v), len(v)) for t, v in by_type.items()
    }
    assert sum(r["bytes_verified"] for r in held["by_type"].values()) == out["bytes"]

    inputs = stackside(
        tmp_path,
        "check-inputs",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        "FRDF",
        "--repo",
        str(site),
        "--chain",
        "drp/t/FRDF",
    )
    assert inputs["ok"] and inputs["raws_per_tract"] == {"2": [8, 8], "3": [8, 8]}

    # A file damaged at the site after ingest: present, but no longer verified, and named.
    victim = next(e for e in entries if e["dataset_type"] == "raw")
    (site / victim["relpath"]).write_text("{}")
    damaged = stackside(tmp_path, "check-datasets", "--repo", str(site), "--manifest", str(tmp_path / "FRDF.json"))
    assert not damaged["ok"] and damaged["by_type"]["raw"]["present"] == len(raws)
    assert damaged["by_type"]["raw"]["verified"] == len(raws) - 1
    assert any(victim["dataset_id"] in p and "size" in p for p in damaged["problems"])


def stack_python(code: str) -> str:
    """Run CODE in the stack env; its stdout."""
    proc = subprocess.run([str(STACK_PY), "-c", "import json\n" + code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _butler_script(repo: Path, body: str) -> None:
    """Run BODY (python, with `butler` open on REPO) in the stack env."""
    stack_python(
        f"from lsst.daf.butler import Butler, Timespan\nimport astropy.time\n"
        f"butler = Butler.from_config({str(repo)!r}, writeable=True)\n{body}"
    )


def test_a_raw_missing_at_the_hub_is_named_and_nothing_is_placed(hub_copy: Path, tmp_path: Path):
    _butler_script(
        hub_copy,
        "refs = butler.query_datasets('raw', collections='MockCam/raw/all', "
        "where=\"instrument='MockCam' AND visit=3001 AND detector=0\", explain=False)\n"
        "assert len(refs) == 1\nbutler.pruneDatasets(refs, purge=True, unstore=True, disassociate=True)",
    )
    proc = export(tmp_path, hub_copy, "FRDF", ok=False)
    assert proc.returncode == 2
    assert "raw visit=3001 detector=0 (tract 2) is not in MockCam/raw/all" in proc.stderr
    assert "site FRDF" in proc.stderr and "hub USDF" in proc.stderr
    assert not (tmp_path / "FRDF.json").exists(), "no manifest, so nothing can be registered"
    # Another site's inputs are complete: it is not held back by FRDF's gap.
    assert export(tmp_path, hub_copy, "UKDF_RAL")["by_type"]["raw"] == 16


def test_a_raw_file_lost_at_the_hub_is_named(hub_copy: Path, tmp_path: Path):
    manifest = export(tmp_path, hub_copy, "FRDF")["manifest"]
    victim = next(e for e in json.loads(Path(manifest).read_text())["entries"] if e["dataset_type"] == "raw")
    Path(manifest).unlink()
    (hub_copy / victim["relpath"]).unlink()
    proc = export(tmp_path, hub_copy, "FRDF", ok=False)
    assert proc.returncode == 2 and victim["relpath"] in proc.stderr and "is missing in repo" in proc.stderr
    assert not Path(manifest).exists()


def test_a_calibration_missing_for_a_date_range_is_named_with_the_dates(hub_copy: Path, tmp_path: Path):
    _butler_script(
        hub_copy,
        "day = Timespan(astropy.time.Time('2026-01-04T00:00:00', scale='tai'), "
        "astropy.time.Time('2026-01-05T00:00:00', scale='tai'))\n"
        "butler.registry.decertify('MockCam/calib', 'bias', day, dataIds=[{'instrument': 'MockCam', 'detector': 1}])",
    )
    proc = export(tmp_path, hub_copy, "FRDF", ok=False)
    assert proc.returncode == 2
    assert (
        "bias detector=1: nothing certified in MockCam/calib for 2026-01-04T02:00:00 .. 2026-01-04T18:43:30 TAI"
        in proc.stderr
    )
    assert "visits 3000, 3001, 3002, 3003, 4000, 4001, 4002, 4003" in proc.stderr
    assert not (tmp_path / "FRDF.json").exists()
    # UKDF_RAL's visits (2026-01-05 and -06) are covered: its placement goes on.
    assert export(tmp_path, hub_copy, "UKDF_RAL")["by_type"]["bias"] == 4


def test_every_site_checks_its_software_first_against_the_hubs():
    dag = build_dag(load_campaign(CAMPAIGN))
    assert dag.get_task("USDF.check_software").reference_task_id is None, "the hub is the reference"
    for site in ("FRDF", "UKDF_RAL"):
        check = dag.get_task(f"{site}.check_software")
        assert check.reference_task_id == "USDF.check_software"
        assert check.upstream_task_ids == {"USDF.check_software"} and check.queue == site.lower()
        assert f"{site}.check_software" in dag.get_task(f"{site}.place_inputs.register").upstream_task_ids
    for site in ("USDF", "FRDF", "UKDF_RAL"):
        assert f"{site}.check_software" in dag.get_task(f"{site}.check_inputs").upstream_task_ids
