"""The site-independence QA: the comparison library (Airflow-free, stack-free), and the stack
side's `site-qa` on a real Butler repo holding both sites' copies of overlap tracts."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from drp_campaign import settings
from drp_campaign.config.models import QaConfig, Tolerance
from drp_campaign.site_qa import (
    FAILURE_LINES,
    STATISTICS,
    Check,
    Side,
    SiteQaReport,
    column_statistics,
    compare_metrics,
    compare_presence,
    compare_tables,
    plot_tract,
    tolerance_for,
    value_counts,
    within,
)

SIDE = Side(tract=2, site_a="FRDF", site_b="UKDF_RAL")
QA = QaConfig(
    tolerance=0.001,
    compare={
        "object_table": {"ra": Tolerance(absolute=1e-9), "rows": Tolerance(absolute=2)},
        "visit_summary": {},
        "qa_metrics": {"n_objects": Tolerance(absolute=0)},
    },
)


def table(n: int = 200, seed: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "object_id": np.arange(n),
        "band": rng.choice(["g", "r"], n),
        "ra": rng.uniform(21, 29, n),
        "psf_flux": rng.lognormal(5, 1, n),
    }


def metrics() -> dict[str, float | int]:
    return {"n_objects": 200, "median_psf_flux": 150.25, "median_snr": 20.5}


def by_quantity(checks: list[Check]) -> dict[str, Check]:
    return {c.quantity: c for c in checks}


# --- within --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "tol", "ok"),
    [
        (100.0, 100.05, Tolerance(relative=0.001), True),  # inside
        (1.0, 2.0, Tolerance(relative=0.5), True),  # at: |1| == 0.5 x 2
        (1.0, 2.0000001, Tolerance(relative=0.5), False),  # just past
        (-1.0, -2.0, Tolerance(relative=0.5), True),  # by magnitude
        (1.0, 1.5, Tolerance(absolute=0.5), True),  # at
        (1.0, 1.1, Tolerance(absolute=0.1), True),  # at in decimal, a few ulps over in binary
        (1.0, 1.5000001, Tolerance(absolute=0.5), False),  # just past
        (7, 7, Tolerance(absolute=0), True),  # exact
        (7, 8, Tolerance(absolute=0), False),
        (0.0, 0.0, Tolerance(relative=0.001), True),
        (0.0, 1e-300, Tolerance(relative=0.001), False),  # relative to zero: only zero
        (math.inf, math.inf, Tolerance(relative=0.001), True),
        (math.inf, 1.0, Tolerance(absolute=1e12), False),
    ],
)
def test_within_at_and_past_the_tolerance(a, b, tol, ok):
    assert within(a, b, tol) is ok
    assert within(b, a, tol) is ok  # symmetric


def test_within_nans_agree_only_with_nans():
    assert within(math.nan, math.nan, Tolerance(relative=0.001))
    assert not within(math.nan, 1.0, Tolerance(absolute=1e12))
    assert not within(1.0, math.nan, Tolerance(absolute=1e12))


def test_tolerance_of_a_quantity_is_its_own_else_the_campaign_default():
    assert tolerance_for(QA, "object_table", "ra.median") == Tolerance(absolute=1e-9)
    assert tolerance_for(QA, "object_table", "rows") == Tolerance(absolute=2)
    assert tolerance_for(QA, "object_table", "psf_flux.q95") == Tolerance(relative=0.001)
    assert tolerance_for(QA, "visit_summary", "rows") == Tolerance(relative=0.001)
    assert tolerance_for(QA, "qa_metrics", "n_objects") == Tolerance(absolute=0)
    assert tolerance_for(QA, "qa_metrics", "median_snr") == Tolerance(relative=0.001)


# --- statistics ----------------------------------------------------------------------------------


def test_column_statistics_are_robust_and_skip_nans():
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    stats = column_statistics(values)
    assert list(stats) == list(STATISTICS)
    assert stats["count"] == 5 and stats["nan_count"] == 1
    assert stats["median"] == 3.0
    assert stats["robust_scatter"] == pytest.approx(1.4826 * 1.0)  # |x - 3|: 2 1 0 1 97 -> median 1
    assert stats["q05"] < stats["q25"] < stats["median"] < stats["q75"] < stats["q95"]
    empty = column_statistics(np.array([np.nan, np.nan]))
    assert empty["count"] == 0 and empty["nan_count"] == 2 and math.isnan(empty["median"])


def test_value_counts_of_a_non_numeric_column():
    assert value_counts(np.array(["r", "g", "r"])) == {"g": 1, "r": 2}


# --- tables --------------------------------------------------------------------------------------


def test_identical_tables_agree_on_every_statistic_and_the_row_count():
    checks = compare_tables(SIDE, "object_table", table(), table(), QA)
    found = by_quantity(checks)
    assert all(c.ok for c in checks)
    assert found["rows"].value_a == 200 and found["band.values"].tolerance == "exact"
    assert {f"psf_flux.{s}" for s in STATISTICS} <= set(found)
    assert all(c.site_a == "FRDF" and c.site_b == "UKDF_RAL" and c.tract == 2 for c in checks)
    assert len(found) == len(checks)  # one check per quantity (the ledger's key)


def test_row_order_does_not_matter():
    a = table()
    b = {k: v[::-1] for k, v in a.items()}
    assert all(c.ok for c in compare_tables(SIDE, "object_table", a, b, QA))


def test_one_percent_in_one_column_fails_naming_it_with_the_default_tolerance():
    b = table()
    b["psf_flux"] = b["psf_flux"] * 1.01
    failed = [c for c in compare_tables(SIDE, "object_table", table(), b, QA) if not c.ok]
    assert failed and {c.quantity.split(".")[0] for c in failed} == {"psf_flux"}
    median = by_quantity(failed)["psf_flux.median"]
    assert (median.tolerance_kind, median.tolerance_value) == ("relative", 0.001)
    assert median.scaled_difference() == pytest.approx(0.01 / 1.01 / 0.001, rel=1e-6)


def test_a_column_tolerance_overrides_the_default():
    b = table()
    b["ra"] = b["ra"] + 5e-10  # within its own absolute 1e-9, far beyond nothing
    assert all(c.ok for c in compare_tables(SIDE, "object_table", table(), b, QA))
    b["ra"] = b["ra"] + 2e-9
    failed = [c for c in compare_tables(SIDE, "object_table", table(), b, QA) if not c.ok]
    assert {c.quantity for c in failed} == {"ra.median", "ra.q05", "ra.q25", "ra.q75", "ra.q95"}
    assert all(c.tolerance == "absolute 1e-09" for c in failed)


def test_row_count_uses_the_rows_tolerance():
    a, b = table(200), table(202)
    rows = by_quantity(compare_tables(SIDE, "object_table", a, b, QA))["rows"]
    assert rows.ok and rows.tolerance == "absolute 2"
    rows = by_quantity(compare_tables(SIDE, "object_table", a, table(203), QA))["rows"]
    assert not rows.ok


def test_nans_in_a_column_count_on_both_sides():
    a, b = table(), table()
    a["psf_flux"][:3] = np.nan
    b["psf_flux"][:3] = np.nan
    assert all(c.ok for c in compare_tables(SIDE, "object_table", a, b, QA))
    b["psf_flux"][3] = np.nan
    failed = by_quantity([c for c in compare_tables(SIDE, "object_table", a, b, QA) if not c.ok])
    assert {"psf_flux.count", "psf_flux.nan_count"} <= set(failed)


def test_masked_entries_are_nans():
    a = table()
    b = dict(a, psf_flux=np.ma.masked_array(a["psf_flux"], mask=np.zeros(200, bool)))
    assert all(c.ok for c in compare_tables(SIDE, "object_table", a, b, QA))
    b["psf_flux"].mask[0] = True
    assert not by_quantity(compare_tables(SIDE, "object_table", a, b, QA))["psf_flux.nan_count"].ok


def test_empty_tables_agree_on_both_sides_and_fail_on_one():
    empty = {k: v[:0] for k, v in table().items()}
    both = compare_tables(SIDE, "object_table", empty, empty, QA)
    assert [(c.quantity, c.value_a, c.value_b, c.ok) for c in both] == [("rows", 0, 0, True)]
    one = compare_tables(SIDE, "object_table", table(), empty, QA)
    assert [(c.quantity, c.ok) for c in one] == [("rows", False)]
    assert "empty at UKDF_RAL" in one[0].note
    assert "empty at FRDF" in compare_tables(SIDE, "object_table", {}, table(), QA)[0].note


def test_a_column_missing_on_one_side_fails_naming_the_side():
    b = table()
    del b["psf_flux"]
    b["extra"] = np.ones(200)
    failed = by_quantity([c for c in compare_tables(SIDE, "object_table", table(), b, QA) if not c.ok])
    assert set(failed) == {"psf_flux", "extra"}
    assert failed["psf_flux"].note == "column psf_flux missing at UKDF_RAL"
    assert failed["extra"].note == "column extra missing at FRDF"
    assert (failed["psf_flux"].value_a, failed["psf_flux"].value_b) == ("present", None)


def test_a_non_numeric_column_is_compared_exactly():
    b = table()
    b["band"] = b["band"].copy()
    b["band"][0] = "i"
    failed = [c for c in compare_tables(SIDE, "object_table", table(), b, QA) if not c.ok]
    assert [c.quantity for c in failed] == ["band.values"]
    assert failed[0].value_b["i"] == 1 and "i" not in failed[0].value_a


# --- metrics and presence ------------------------------------------------------------------------


def test_metrics_within_their_tolerances():
    b = dict(metrics(), median_psf_flux=150.25 * 1.0009)
    assert all(c.ok for c in compare_metrics(SIDE, "qa_metrics", metrics(), b, QA))
    b["median_psf_flux"] = 150.25 * 1.0011
    b["n_objects"] = 201  # absolute 0: one object more fails
    failed = by_quantity([c for c in compare_metrics(SIDE, "qa_metrics", metrics(), b, QA) if not c.ok])
    assert set(failed) == {"median_psf_flux", "n_objects"}
    assert failed["n_objects"].tolerance == "absolute 0"


def test_a_metric_missing_on_one_side_fails_naming_the_side():
    b = metrics()
    del b["median_snr"]
    b["note"] = "text"
    failed = by_quantity([c for c in compare_metrics(SIDE, "qa_metrics", metrics(), b, QA) if not c.ok])
    assert failed["median_snr"].note == "metric median_snr missing at UKDF_RAL"
    assert failed["note"].note == "metric note missing at FRDF"


def test_presence_names_what_each_side_lacks():
    same = compare_presence(
        SIDE, "visit_summary", "datasets", ["visit=3000", "visit=3001"], ["visit=3001", "visit=3000"]
    )
    assert same.ok and (same.value_a, same.value_b) == (2, 2)
    lacks = compare_presence(SIDE, "visit_summary", "datasets", ["visit=3000", "visit=3001"], ["visit=3000"])
    assert not lacks.ok and lacks.note == "datasets missing at UKDF_RAL: visit=3001"
    assert not compare_presence(SIDE, "visit_summary", "datasets", [], []).ok


# --- the report ----------------------------------------------------------------------------------


def failing_report() -> SiteQaReport:
    b = table()
    b["psf_flux"] = b["psf_flux"] * 1.01
    b["psf_flux"][0] = np.nan
    m = dict(metrics(), n_objects=199)
    return SiteQaReport(
        compare_tables(SIDE, "object_table", table(), b, QA) + compare_metrics(SIDE, "qa_metrics", metrics(), m, QA)
    )


def test_failure_message_names_tract_type_quantity_values_and_tolerance():
    report = failing_report()
    assert not report.ok and report.verdict().startswith("fail: ")
    lines = report.failure_message().splitlines()
    assert len(lines) == len(report.failures)
    median = next(ln for ln in lines if "psf_flux.median" in ln)
    c = next(c for c in report.failures if c.quantity == "psf_flux.median")
    assert median.startswith("tract 2 object_table psf_flux.median: FRDF ")
    assert f"FRDF {c.value_a:.6g} vs UKDF_RAL {c.value_b:.6g}" in median
    assert "(relative 0.001)" in median and "allowed" in median
    assert "tract 2 qa_metrics n_objects: FRDF 200 vs UKDF_RAL 199 (absolute 0)" in report.failure_message()


def test_failure_message_is_capped():
    checks = [
        SIDE.check("object_table", f"c{i}.median", 1.0, 2.0, "relative", 0.001, False) for i in range(FAILURE_LINES + 7)
    ]
    lines = SiteQaReport(checks).failure_message().splitlines()
    assert len(lines) == FAILURE_LINES + 1 and lines[-1].startswith("... and 7 more")


def test_values_are_shown_with_the_digits_that_tell_them_apart():
    c = SIDE.check("object_table", "ra.median", 25.0, 25.000000003, "absolute", 1e-9, False)
    assert "FRDF 25 vs UKDF_RAL 25.000000003 (absolute 1e-09)" in c.describe()


def test_passing_report_has_no_failure_message():
    report = SiteQaReport(compare_tables(SIDE, "object_table", table(), table(), QA))
    assert report.ok and report.failure_message() == "" and report.verdict().startswith("pass: ")


def test_report_json_round_trips_with_nan_as_null():
    report = failing_report()
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))  # strict JSON: no NaN
    assert data["ok"] is False and data["failed"] == len(report.failures) and data["tracts"] == [2]
    assert data["compared"] == len(data["checks"]) == len(report.checks)
    again = SiteQaReport.from_json(data)
    assert again.to_json() == data
    row = next(c for c in data["checks"] if c["quantity"] == "psf_flux.count")
    assert set(row) >= {
        "tract",
        "dataset_type",
        "quantity",
        "site_a",
        "value_a",
        "site_b",
        "value_b",
        "tolerance",
        "ok",
    }
    nan_check = SIDE.check("visit_summary", "psf_sigma.median", math.nan, math.nan, "relative", 0.001, True)
    assert nan_check.to_json()["value_a"] is None


# --- the plot ------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_plot_tract_writes_a_png_of_sensible_size(tmp_path: Path):
    report = failing_report()
    path = plot_tract(report.checks, tmp_path / "plots" / "site_qa_tract2.png")
    width, height = png_size(path)
    assert 600 <= width <= 2000 and 400 <= height <= 3000
    assert 20_000 < path.stat().st_size < 1_000_000


def test_plot_tract_refuses_several_tracts(tmp_path: Path):
    other = SIDE.check("qa_metrics", "n_objects", 1, 1, "absolute", 0.0, True)
    moved = Check(**{**other.__dict__, "tract": 4})
    with pytest.raises(ValueError, match="one tract per plot"):
        plot_tract([other, moved], tmp_path / "x.png")


# --- the stack side: `site-qa` on a real Butler repo ---------------------------------------------

STACK_PY = settings.stack_prefix() / "bin" / "python"
CAMPAIGN = settings.CAMPAIGNS_DIR / "test-3x3.yaml"

# Run in the stack env: a hub repo with the synthetic sky, and, for each run key, the products of
# the overlap tracts as the own site's (in RUNs of the site chain) and the second site's (in RUNs
# under its overlap root). Keys: `same` (identical copies), `differs` (tract 2: psf_flux 1% higher
# at the second site; tract 4: one visit_summary and the qa_metrics never came home).
SETUP = r"""
import json, sys
import astropy.table
import numpy as np
from lsst.daf.butler import CollectionType, DatasetType
from drp_campaign import graph
from drp_campaign.config import load_campaign
from drp_campaign.stackside.repo import insert_sky, open_butler
from drp_campaign.stackside.sky import SyntheticSky

campaign = load_campaign(sys.argv[1])
butler, _ = open_butler(sys.argv[2], create=True)
sky = SyntheticSky(campaign)
insert_sky(butler, sky)
spec = campaign.pipeline_spec.dataset_types
for name in campaign.qa.compare:
    butler.registry.registerDatasetType(
        DatasetType(name, spec[name].dimensions, spec[name].storage_class, universe=butler.dimensions)
    )

def products(tract):
    rng = np.random.default_rng(tract)
    n = 150
    objects = astropy.table.Table({
        "object_id": np.arange(n) + 1000 * tract, "patch": rng.integers(0, 2, n), "band": rng.choice(["g", "r"], n),
        "ra": rng.uniform(10 * tract + 1, 10 * tract + 9, n), "dec": rng.uniform(-4, 4, n),
        "psf_flux": rng.lognormal(5, 1, n), "psf_flux_err": rng.lognormal(2, 0.3, n), "n_visits": rng.integers(1, 5, n),
    })
    visits = {
        v.id: astropy.table.Table({
            "visit": [v.id] * 2, "detector": [0, 1], "band": [v.band] * 2, "zero_point": rng.normal(27, 0.1, 2),
            "psf_sigma": rng.normal(1.7, 0.1, 2), "sky_background": rng.normal(100, 5, 2), "n_sources": [120, 130],
        })
        for v in sky.visits(tract)
    }
    metrics = {"n_objects": n, "median_psf_flux": float(np.median(objects["psf_flux"])), "median_snr": 20.5,
               "astrometric_scatter_mas": 5.0, "photometric_scatter_mmag": 10.0}
    return objects, visits, metrics

def put(run, tract, objects, visits, metrics):
    butler.collections.register(run)
    if objects is not None:
        butler.put(objects, "object_table", skymap=campaign.data.skymap, tract=tract, run=run)
    if metrics is not None:
        butler.put(metrics, "qa_metrics", skymap=campaign.data.skymap, tract=tract, run=run)
    for visit, t in visits.items():
        butler.put(t, "visit_summary", instrument=campaign.data.instrument, visit=visit, run=run)

for key in ("same", "differs"):
    own_runs = []
    for tract, second in sorted(campaign.qa.overlap.items()):
        own = campaign.tract_site(tract)
        objects, visits, metrics = products(tract)
        run = graph.output_run(campaign, key, own, "step5", f"g{tract:03d}")
        put(run, tract, objects, visits, metrics)
        own_runs.append(run)
        if key == "differs" and tract == 2:
            objects = objects.copy()
            objects["psf_flux"] *= 1.01
        if key == "differs" and tract == 4:
            visits = dict(list(visits.items())[1:])
            metrics = None
        put(graph.output_run(campaign, key, second, "step5", f"overlap-t{tract}"), tract, objects, visits, metrics)
    chain = graph.site_chain(campaign, key)
    butler.collections.register(chain, CollectionType.CHAINED)
    butler.collections.redefine_chain(chain, own_runs)
print(json.dumps({"ok": True}))
"""


def stack(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, DRP_STACK_PREFIX=str(settings.stack_prefix()))
    proc = subprocess.run([str(STACK_PY), *args], capture_output=True, text=True, env=env, timeout=300)
    if ok:
        assert proc.returncode == 0, f"{args[:3]} failed ({proc.returncode}): {proc.stderr[-3000:]}"
    return proc


def site_qa(campaign: Path, repo: Path, key: str, report_dir: Path, *extra: str, ok: bool = True):
    proc = stack(
        "-m",
        "drp_campaign.stackside",
        "site-qa",
        "--campaign",
        str(campaign),
        "--repo",
        str(repo),
        "--key",
        key,
        "--report-dir",
        str(report_dir),
        *extra,
        ok=ok,
    )
    if not ok:
        return proc
    [line] = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return json.loads(line)


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> tuple[Path, Path]:
    """A campaign like test-3x3 with two overlap tracts (FRDF's 2 at UKDF_RAL, UKDF_RAL's 4 at
    USDF), and a hub repo holding both copies of each under two run keys."""
    if not STACK_PY.exists():  # pragma: no cover - the env is part of the project's setup
        pytest.skip(f"science-stack env missing at {STACK_PY}")
    work = tmp_path_factory.mktemp("site-qa")
    text = CAMPAIGN.read_text()
    text = text.replace(
        "pipeline: ../pipelines/drp-mock.yaml", f"pipeline: {CAMPAIGN.parent.parent / 'pipelines' / 'drp-mock.yaml'}"
    )
    text = text.replace("overlap: {2: UKDF_RAL}", "overlap: {2: UKDF_RAL, 4: USDF}")
    assert "4: USDF" in text and str(CAMPAIGN.parent.parent) in text
    campaign = work / "campaign.yaml"
    campaign.write_text(text)
    repo = work / "hub"
    t0 = time.monotonic()
    stack("-c", SETUP, str(campaign), str(repo))
    print(f"hub repo with both sites' copies: {time.monotonic() - t0:.1f} s")
    return campaign, repo


@pytest.mark.integration
def test_site_qa_on_a_butler_repo(hub, tmp_path: Path):
    campaign, repo = hub
    t0 = time.monotonic()
    same = site_qa(campaign, repo, "same", tmp_path / "same")
    assert same["ok"] is True and same["failed"] == 0 and same["tracts"] == [2, 4], same["failures"]
    assert same["failure_message"] == ""
    quantities = {(c["tract"], c["dataset_type"], c["quantity"]) for c in same["checks"]}
    assert len(quantities) == len(same["checks"])  # one per ledger key
    for tract in (2, 4):
        assert (tract, "visit_summary", "datasets") in quantities  # its 4 visits, found by the tract's region
        assert (tract, "object_table", "psf_flux.median") in quantities
        assert (tract, "qa_metrics", "n_objects") in quantities
    visits = next(c for c in same["checks"] if c["quantity"] == "datasets" and c["dataset_type"] == "visit_summary")
    assert visits["value_a"] == visits["value_b"] == 4
    rows = next(c for c in same["checks"] if c["quantity"] == "rows" and c["dataset_type"] == "visit_summary")
    assert rows["value_a"] == 8  # 4 visits x 2 detectors, concatenated
    report = json.loads(Path(same["report"]).read_text())
    assert report["ok"] and report["run_key"] == "same" and len(report["checks"]) == len(same["checks"])
    assert [Path(p).name for p in same["plots"]] == ["site_qa_tract2.png", "site_qa_tract4.png"]
    assert all(png_size(Path(p))[0] >= 600 for p in same["plots"])

    differs = site_qa(campaign, repo, "differs", tmp_path / "differs")
    assert differs["ok"] is False
    failed = {(c["tract"], c["dataset_type"], c["quantity"]) for c in differs["checks"] if not c["ok"]}
    assert {q for t, d, q in failed if t == 2} == {f"psf_flux.{s}" for s in STATISTICS[2:]}
    assert (4, "visit_summary", "datasets") in failed and (4, "qa_metrics", "datasets") in failed
    message = differs["failure_message"]
    assert "tract 2 object_table psf_flux.median: UKDF_RAL" not in message  # A is the product: FRDF first
    assert "tract 2 object_table psf_flux.median: FRDF " in message and "vs UKDF_RAL " in message
    missing = "tract 4 visit_summary datasets: UKDF_RAL 4 vs USDF 3 (exact): visit_summary datasets missing at USDF"
    assert f"{missing}: visit=5000" in message
    assert "tract 4 qa_metrics datasets: UKDF_RAL 1 vs USDF 0" in message
    assert len(message.splitlines()) == differs["failed"] == len(differs["failures"])

    only = site_qa(campaign, repo, "differs", tmp_path / "only", "--tracts", "4")
    assert only["tracts"] == [4] and {c["tract"] for c in only["checks"]} == {4}
    print(f"site-qa: three runs in {time.monotonic() - t0:.1f} s")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("key", "extra", "expected"),
    [
        ("same", ("--tracts", "3"), "--tracts: 3 not an overlap tract"),
        ("nosuchkey", (), "input chain 'drp/test-3x3/nosuchkey' does not exist in repo"),
    ],
)
def test_site_qa_refuses_bad_arguments_with_one_line(hub, tmp_path: Path, key, extra, expected):
    campaign, repo = hub
    proc = site_qa(campaign, repo, key, tmp_path / "out", *extra, ok=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert expected in proc.stderr and "site-qa: error" in proc.stderr
    assert not (tmp_path / "out" / "site_qa.json").exists()
