"""The stack side, for real: Butler repos, the real `pipetask` on DRP-shaped mock tasks, hops.

These tests run in the controller env and call the science-stack env by subprocess, exactly as an
Airflow worker does: `$DRP_STACK_PREFIX/bin/python -m drp_campaign.stackside <subcommand> ...`.
The synthetic sizing of configs/campaigns/test-3x3.yaml keeps them to about a minute on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from drp_campaign import settings

pytestmark = pytest.mark.integration

CAMPAIGN = settings.CAMPAIGNS_DIR / "test-3x3.yaml"
PREFIX = "drp/test-3x3/T1"
STACK_PY = settings.stack_prefix() / "bin" / "python"

if not STACK_PY.exists():  # pragma: no cover - the env is part of the project's setup
    pytest.skip(f"science-stack env missing at {STACK_PY}", allow_module_level=True)


def stackside(work: Path, *args: str, ok: bool = True) -> dict | subprocess.CompletedProcess:
    """The stack side's CLI as a site runs it: through a warm stack server of the work dir when the
    suite runs with DRP_STACK_SERVER=warm (the embedded default), else a Python of its own
    (DRP_STACK_SERVER=per-call make test runs the whole suite that way)."""
    env = dict(
        os.environ,
        DRP_WORK_DIR=str(work),
        DRP_STACK_PREFIX=str(settings.stack_prefix()),
        PATH=f"{STACK_PY.parent}:{os.environ['PATH']}",
    )
    warm = settings.warm_prefix("tests", str(STACK_PY), work / "stack-servers")
    proc = subprocess.run(
        [*(warm or [str(STACK_PY)]), *(["python"] if warm else []), "-m", "drp_campaign.stackside", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if not ok:
        return proc
    assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}): {proc.stderr[-3000:]}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got {proc.stdout!r}"
    return json.loads(lines[0])


def repo(work: Path, site: str) -> str:
    return str(work / "repos" / site)


def chain(site: str) -> str:
    return f"{PREFIX}/{site}/input"


def run_name(site: str, step: str, group: str) -> str:
    return f"{PREFIX}/{site}/{step}/{group}"


def run_step(work: Path, site: str, step: str, group: str, tracts: str | None, *extra: str) -> dict:
    args = [
        "run-step",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        site,
        "--repo",
        repo(work, site),
        "--step",
        step,
        "--chain",
        chain(site),
        "--output-run",
        run_name(site, step, group),
    ]
    if tracts:
        args += ["--tracts", tracts]
    return stackside(work, *args, *extra)


def manifest_of(work: Path, site: str, pattern: str, types: str, name: str) -> dict:
    out = work / "manifests" / f"{name}.json"
    stackside(
        work,
        "export-hop",
        "--repo",
        repo(work, site),
        "--collections",
        pattern,
        "--dataset-types",
        types,
        "--manifest",
        str(out),
    )
    return json.loads(out.read_text())


READ_OUTPUTS = """
import json, sys
from lsst.daf.butler import Butler
butler = Butler.from_config(sys.argv[1])
answers = []
for request in sys.argv[2:]:
    collections, _, dataset_type = request.rpartition(":")
    out = {}
    for ref in butler.query_datasets(dataset_type, collections=collections.split(","), limit=None, explain=False):
        value = butler.get(ref)
        key = ",".join(f"{k}={v}" for k, v in sorted(ref.dataId.required.items()))
        if hasattr(value, "colnames"):
            value = {"columns": list(value.colnames), **{c: value[c].tolist() for c in value.colnames}}
        out[key] = value
    answers.append(out)
print(json.dumps(answers))
"""


def read_outputs(work: Path, site: str, *requests: tuple[list[str], str]) -> list[dict[str, dict]]:
    """For each (RUNs, dataset type) of REQUESTS, its datasets read by the stack, in one process:
    {data ID: a dict, or a table's {"columns": [...], column: [values]}}; floats through JSON keep
    every bit."""
    args = [f"{','.join(runs)}:{dataset_type}" for runs, dataset_type in requests]
    proc = subprocess.run(
        [str(STACK_PY), "-c", READ_OUTPUTS, repo(work, site), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


# A module's full sequence (test_full_step_sequence_in_one_repo), for the tests of its real numbers.
FULL_SEQUENCE: dict[str, object] = {}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stackside")


@pytest.fixture(scope="module")
def seeded(work: Path) -> Path:
    """FRDF and USDF repos seeded and their input chains created (the first tests check this)."""
    for site in ("FRDF", "USDF"):
        first = stackside(work, "seed-repo", "--campaign", str(CAMPAIGN), "--site", site, "--repo", repo(work, site))
        assert first["created"] and first["changed"]
        stackside(
            work,
            "check-inputs",
            "--campaign",
            str(CAMPAIGN),
            "--site",
            site,
            "--repo",
            repo(work, site),
            "--chain",
            chain(site),
        )
    return work


def test_seed_repo_is_idempotent_and_puts_only_the_sites_raws(work: Path):
    first = stackside(
        work, "seed-repo", "--campaign", str(CAMPAIGN), "--site", "UKDF_RAL", "--repo", repo(work, "UKDF_RAL")
    )
    assert first["created"] is True
    assert first["raws"]["put"] == 2 * 4 * 2  # 2 tracts x 4 visits x 2 detectors
    # The whole sky, not only this site's tracts: 6 tracts, 24 visits, 48 detector regions.
    assert first["dimension_records_inserted"]["tract"] == 6
    assert first["dimension_records_inserted"]["visit"] == 24
    assert first["dimension_records_inserted"]["visit_detector_region"] == 48
    assert first["dimension_records_inserted"]["patch"] == 12
    second = stackside(
        work, "seed-repo", "--campaign", str(CAMPAIGN), "--site", "UKDF_RAL", "--repo", repo(work, "UKDF_RAL")
    )
    assert second["created"] is False and second["changed"] is False
    assert second["raws"] == {**first["raws"], "put": 0}
    assert set(second["dimension_records_inserted"].values()) == {0}
    assert "nothing to do" in second["message"]


def test_check_inputs_counts_raws_per_tract_and_creates_the_chain(seeded: Path):
    work = seeded
    res = stackside(
        work,
        "check-inputs",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        "FRDF",
        "--repo",
        repo(work, "FRDF"),
        "--tracts",
        "2,3",
        "--chain",
        chain("FRDF"),
    )
    assert res["ok"] is True
    assert res["raws_per_tract"] == {"2": [8, 8], "3": [8, 8]}
    assert res["missing"] == []
    assert res["chain"] == chain("FRDF") and res["chain_created"] is False  # made by the fixture
    # Tracts that live at another site have no raws here: reported, not ok.
    other = stackside(
        work,
        "check-inputs",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        "FRDF",
        "--repo",
        repo(work, "FRDF"),
        "--tracts",
        "0,2",
        "--chain",
        chain("FRDF"),
    )
    assert other["ok"] is False
    assert other["raws_per_tract"] == {"0": [0, 8], "2": [8, 8]}
    assert len(other["missing"]) == 8 and all("tract 0" in m for m in other["missing"])


def test_bad_arguments_fail_with_one_clear_line(seeded: Path):
    work = seeded
    proc = stackside(
        work,
        "run-step",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        "FRDF",
        "--repo",
        repo(work, "FRDF"),
        "--step",
        "step9",
        "--chain",
        chain("FRDF"),
        "--output-run",
        "x/y",
        ok=False,
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "step9" in proc.stderr and "drp-mock.yaml" in proc.stderr
    proc = stackside(
        work,
        "check-inputs",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        "FRDF",
        "--repo",
        str(work / "nope"),
        "--chain",
        "c",
        ok=False,
    )
    assert proc.returncode != 0 and "nope" in proc.stderr and "seed-repo" in proc.stderr
    proc = stackside(
        work,
        "run-step",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        "FRDF",
        "--repo",
        repo(work, "FRDF"),
        "--step",
        "step1",
        "--chain",
        "no/such/chain",
        "--output-run",
        "x/y",
        ok=False,
    )
    assert proc.returncode != 0 and "no/such/chain" in proc.stderr and "check-inputs" in proc.stderr
    proc = stackside(
        work,
        "run-step",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        "FRDF",
        "--repo",
        repo(work, "FRDF"),
        "--step",
        "step1",
        "--chain",
        chain("FRDF"),
        "--output-run",
        "x/y",
        "--fail",
        "noSuchTask:tract = 2",
        ok=False,
    )
    assert proc.returncode != 0 and "noSuchTask" in proc.stderr
    # A config override is written into config code: anything but a plain number or bool is refused.
    for override, why in (
        ("makeObjectTable:flux_calibration_scale=__import__('os')", "is not a plain value"),
        ("makeObjectTable:flux_calibration_scale=True", "is a float field"),
        ("makeObjectTable:no_such_field=1", "has no config field 'no_such_field'"),
        ("makeObjectTable:config.x=1", "is not a config field name"),
        ("isr:sleep=1", "is not part of this step"),
    ):
        proc = stackside(
            work,
            "run-step",
            "--campaign",
            str(CAMPAIGN),
            "--site",
            "FRDF",
            "--repo",
            repo(work, "FRDF"),
            "--step",
            "step5",
            "--chain",
            chain("FRDF"),
            "--output-run",
            "x/config",
            "--config",
            override,
            ok=False,
        )
        assert proc.returncode != 0 and proc.stdout == "", override
        assert len(proc.stderr.strip().splitlines()) == 1 and why in proc.stderr, proc.stderr
        assert "--config" in proc.stderr and override in proc.stderr
    assert stackside(work, "count-datasets", "--repo", repo(work, "FRDF"), "--collections", "x/*") == {}


def test_a_config_drill_names_its_override_for_its_site_and_step_only(tmp_path: Path, monkeypatch):
    from drp_campaign.drills import active_config_overrides, active_faults

    faults = tmp_path / "faults.yaml"
    faults.write_text(
        "- {site: UKDF_RAL, step: step5, config: 'makeObjectTable:flux_calibration_scale=1.01'}\n"
        "- {site: UKDF_RAL, step: step5, task: computeQaMetrics, where: 'tract = 4'}\n"
    )
    monkeypatch.setenv("DRP_FAULTS_FILE", str(faults))
    assert active_config_overrides("UKDF_RAL", "step5") == ["makeObjectTable:flux_calibration_scale=1.01"]
    assert active_faults("UKDF_RAL", "step5") == ["computeQaMetrics:tract = 4"]  # not an override's entry
    assert active_config_overrides("FRDF", "step5") == active_config_overrides("UKDF_RAL", "step4") == []


def test_the_generated_pipeline_runs_our_real_tasks_with_unmocked_datasets(tmp_path: Path):
    """pipe_base loads the generated pipeline: the three real tasks by class, their outputs and
    every consumer's input un-mocked with the spec's storage class; other dataset types mocked."""
    script = """
import json, sys
from pathlib import Path
from drp_campaign.config import load_campaign
from drp_campaign.stackside.pipeline import load_pipeline_graph, parse_config_overrides, write_pipeline
spec = load_campaign(Path(sys.argv[1])).pipeline_spec
overrides = parse_config_overrides(["makeObjectTable:flux_calibration_scale=1.01"], spec, list(spec.tasks))
graph = load_pipeline_graph(write_pipeline(spec, Path(sys.argv[2]), overrides=overrides))
print(json.dumps({
    label: {
        "class": node.task_class_name,
        "connections": {
            e.dataset_type_name: e.storage_class_name for e in [*node.inputs.values(), *node.outputs.values()]
        },
        "scale": getattr(node.config, "flux_calibration_scale", None),
    }
    for label, node in graph.tasks.items()
}))
"""
    proc = subprocess.run(
        [str(STACK_PY), "-c", script, str(CAMPAIGN), str(tmp_path / "pipeline.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tasks = json.loads(proc.stdout)
    real = {
        "consolidateVisitTable": "ConsolidateVisitTableTask",
        "makeObjectTable": "MakeObjectTableTask",
        "computeQaMetrics": "ComputeQaMetricsTask",
    }
    for label, task in tasks.items():
        expected = f"drp_campaign.stackside.tasks.{real[label]}" if label in real else "lsst.pipe.base.tests.mocks."
        assert task["class"].startswith(expected), (label, task["class"])
    unmocked = {"visit_summary": "ArrowAstropy", "object_table": "ArrowAstropy", "qa_metrics": "StructuredDataDict"}
    seen = Counter()
    for label, task in tasks.items():
        for name, storage_class in task["connections"].items():
            if name in unmocked:
                assert storage_class == unmocked[name], (label, name, storage_class)
                seen[name] += 1
            else:
                assert storage_class.startswith("_mock_"), (label, name, storage_class)
    # Producer and consumers: visit_summary by makeDirectWarp, object_table by computeQaMetrics and
    # campaignQa, qa_metrics by campaignQa.
    assert seen == {"visit_summary": 2, "object_table": 3, "qa_metrics": 2}
    assert tasks["makeObjectTable"]["scale"] == 1.01 and tasks["consolidateVisitTable"]["scale"] is None


def test_steps_at_one_site_then_fault_then_retry(seeded: Path):
    work, site, group, tracts = seeded, "FRDF", "g23", "2,3"
    dry = run_step(work, site, "step1", group, tracts, "--dry-run")
    assert dry["status"] == "dry_run"
    assert dry["quanta_per_task"] == {"isr": 16, "calibrateImage": 16}
    assert (
        stackside(work, "count-datasets", "--repo", repo(work, site), "--collections", run_name(site, "step1", group))
        == {}
    )

    s1 = run_step(work, site, "step1", group, tracts)
    assert s1["status"] == "succeeded", s1
    assert s1["quanta"] == {"total": 32, "succeeded": 32, "failed": 0, "blocked": 0, "previously_succeeded": 0}
    assert s1["outputs"] == {"post_isr_image": 16, "preliminary_visit_image": 16, "single_visit_star": 16}
    assert s1["chain_updated"] is True and Path(s1["log"]).exists() and s1["duration_s"] > 0

    s2a = run_step(work, site, "step2a", group, tracts)
    assert s2a["status"] == "succeeded"
    assert s2a["quanta"]["total"] == s2a["quanta"]["succeeded"] == 8  # one per visit
    assert s2a["outputs"] == {"preliminary_visit_summary": 8}

    # A fault: isolatedStarAssociation raises for tract 2; tract 3 still succeeds.
    failed = run_step(work, site, "step2b", group, tracts, "--fail", "isolatedStarAssociation:tract = 2")
    assert failed["status"] == "failed"
    assert failed["quanta"] == {"total": 2, "succeeded": 1, "failed": 1, "blocked": 0, "previously_succeeded": 0}
    [fq] = failed["failed_quanta"]
    assert fq["task"] == "isolatedStarAssociation" and fq["data_id"]["tract"] == 2
    assert "Simulated failure" in fq["error"]
    assert failed["outputs"] == {"isolated_star": 1}
    assert failed["chain_updated"] is False

    # The retry (no fault) redoes only the failed quantum, in the same RUN.
    retry = run_step(work, site, "step2b", group, tracts)
    assert retry["status"] == "succeeded" and retry["retry"] is True
    assert retry["quanta"] == {"total": 1, "succeeded": 1, "failed": 0, "blocked": 0, "previously_succeeded": 1}
    assert "--extend-run" in retry["command"] and "--skip-existing-in" in retry["command"]
    assert retry["outputs"] == {"isolated_star": 2}
    assert retry["chain_updated"] is True
    man = manifest_of(work, site, run_name(site, "step2b", group), "isolated_star", "step2b-after-retry")
    per_data_id = Counter(e["data_id"]["tract"] for e in man["entries"])
    assert per_data_id == {2: 1, 3: 1}  # exactly one dataset per data ID: nothing duplicated

    # Retrying a step that already succeeded is a no-op that says so.
    again = run_step(work, site, "step2b", group, tracts)
    assert again["status"] == "succeeded"
    assert again["quanta"]["total"] == 0 and again["quanta"]["previously_succeeded"] == 2
    assert again["outputs"] == {"isolated_star": 2}


def test_hop_export_copy_ingest_keeps_uuids_and_rejects_corruption(seeded: Path):
    work = seeded
    if not (work / "repos" / "FRDF").exists() or not stackside(
        work,
        "count-datasets",
        "--repo",
        repo(work, "FRDF"),
        "--collections",
        f"{PREFIX}/FRDF/*",
        "--dataset-types",
        "isolated_star",
    ).get("isolated_star"):
        pytest.skip("needs the FRDF step outputs of test_steps_at_one_site_then_fault_then_retry")
    manifest = work / "manifests" / "gather_FRDF.json"
    res = stackside(
        work,
        "export-hop",
        "--repo",
        repo(work, "FRDF"),
        "--collections",
        f"{PREFIX}/FRDF/*",
        "--dataset-types",
        "isolated_star,preliminary_visit_summary",
        "--manifest",
        str(manifest),
    )
    assert res["entries"] == 10 and res["by_type"] == {"isolated_star": 2, "preliminary_visit_summary": 8}
    doc = json.loads(manifest.read_text())
    for e in doc["entries"]:
        assert Path(e["path"]).is_file() and e["path"].endswith(e["relpath"])
        assert len(e["adler32"]) == 8 and e["bytes"] == Path(e["path"]).stat().st_size
        assert e["ref"]["id"] == e["dataset_id"]
    assert res["bytes"] == sum(e["bytes"] for e in doc["entries"])

    replica = work / "replicas" / "USDF_DISK"
    for e in doc["entries"]:
        dst = replica / e["relpath"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(e["path"], dst)

    first = stackside(
        work,
        "ingest-hop",
        "--repo",
        repo(work, "USDF"),
        "--manifest",
        str(manifest),
        "--replica-dir",
        str(replica),
        "--chain",
        chain("USDF"),
    )
    assert first["ingested"] == 10 and first["already_present"] == 0 and first["rejected"] == []
    by_id = {e["dataset_id"]: e for e in doc["entries"]}
    for e in first["entries"]:
        assert (e["bytes"], e["adler32"]) == (by_id[e["dataset_id"]]["bytes"], by_id[e["dataset_id"]]["adler32"])
    assert set(first["runs"]) == {run_name("FRDF", "step2a", "g23"), run_name("FRDF", "step2b", "g23")}
    # Same UUIDs, same runs, at the destination; and the destination's chain now sees them.
    dest = manifest_of(work, "USDF", f"{PREFIX}/FRDF/*", "isolated_star,preliminary_visit_summary", "usdf-after-ingest")
    assert {(e["dataset_id"], e["run"], e["adler32"]) for e in dest["entries"]} == {
        (e["dataset_id"], e["run"], e["adler32"]) for e in doc["entries"]
    }
    via_chain = stackside(
        work,
        "count-datasets",
        "--repo",
        repo(work, "USDF"),
        "--collections",
        chain("USDF"),
        "--dataset-types",
        "isolated_star,preliminary_visit_summary",
    )
    assert via_chain == {"isolated_star": 2, "preliminary_visit_summary": 8}

    second = stackside(
        work,
        "ingest-hop",
        "--repo",
        repo(work, "USDF"),
        "--manifest",
        str(manifest),
        "--replica-dir",
        str(replica),
        "--chain",
        chain("USDF"),
    )
    assert second["ingested"] == 0 and second["already_present"] == 10 and second["rejected"] == []

    # A corrupted replica and a missing one, going to UKDF_RAL: both rejected, the rest ingested.
    stackside(work, "seed-repo", "--campaign", str(CAMPAIGN), "--site", "UKDF_RAL", "--repo", repo(work, "UKDF_RAL"))
    stackside(
        work,
        "check-inputs",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        "UKDF_RAL",
        "--repo",
        repo(work, "UKDF_RAL"),
        "--chain",
        chain("UKDF_RAL"),
    )
    bad_replica = work / "replicas" / "UKDF_RAL_DISK"
    shutil.copytree(replica, bad_replica)
    corrupt, missing = doc["entries"][0], doc["entries"][1]
    target = bad_replica / corrupt["relpath"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    target.write_bytes(bytes(data))
    (bad_replica / missing["relpath"]).unlink()
    third = stackside(
        work,
        "ingest-hop",
        "--repo",
        repo(work, "UKDF_RAL"),
        "--manifest",
        str(manifest),
        "--replica-dir",
        str(bad_replica),
        "--chain",
        chain("UKDF_RAL"),
    )
    assert third["ingested"] == 8
    reasons = {r["dataset_id"]: r["reason"] for r in third["rejected"]}
    assert set(reasons) == {corrupt["dataset_id"], missing["dataset_id"]}
    assert "adler32 mismatch" in reasons[corrupt["dataset_id"]]
    assert "missing" in reasons[missing["dataset_id"]]
    at_ral = manifest_of(work, "UKDF_RAL", f"{PREFIX}/FRDF/*", "isolated_star,preliminary_visit_summary", "ral")
    ids = {e["dataset_id"] for e in at_ral["entries"]}
    assert len(ids) == 8 and corrupt["dataset_id"] not in ids and missing["dataset_id"] not in ids

    # Releasing UKDF_RAL's copy: its Butler forgets the datasets; the files stay for Rucio's reaper.
    ids_file = work / "release-ids.json"
    ids_file.write_text(json.dumps(sorted(ids)))
    released = stackside(work, "forget-datasets", "--repo", repo(work, "UKDF_RAL"), "--ids", str(ids_file))
    assert (released["forgotten"], released["already_gone"]) == (8, 0)
    assert (
        manifest_of(work, "UKDF_RAL", f"{PREFIX}/FRDF/*", "isolated_star,preliminary_visit_summary", "ral-released")[
            "entries"
        ]
        == []
    )
    assert all(Path(e["path"]).is_file() for e in at_ral["entries"]), "forgetting deletes no file"
    again = stackside(work, "forget-datasets", "--repo", repo(work, "UKDF_RAL"), "--ids", str(ids_file))
    assert (again["forgotten"], again["already_gone"]) == (0, 8)
    kept = manifest_of(work, "USDF", f"{PREFIX}/FRDF/*", "isolated_star,preliminary_visit_summary", "usdf-kept")
    assert len(kept["entries"]) == 10, "another site's copy is untouched"


def test_full_step_sequence_in_one_repo(tmp_path: Path, seeded_repo):
    """step1..step5 per site-group plus step2c and final_qa at the hub, in one repo holding every tract."""
    work, site = tmp_path, "USDF"
    seed = seeded_repo(Path(repo(work, site)), site, "--all-tracts")
    assert seed["raws"]["put"] == 48
    check = stackside(
        work,
        "check-inputs",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        site,
        "--repo",
        repo(work, site),
        "--tracts",
        "0,1,2,3,4,5",
        "--chain",
        chain(site),
    )
    assert check["ok"]
    # One group holding every tract keeps this test short; set DRP_TEST_SITE_GROUPS=1 to run the
    # three sites' tract groups (0,1 / 2,3 / 4,5) as separate runs of every per-site step.
    if os.environ.get("DRP_TEST_SITE_GROUPS"):
        groups, n = {"g01": "0,1", "g23": "2,3", "g45": "4,5"}, 2
    else:
        groups, n = {"gall": "0,1,2,3,4,5"}, 6
    expected_per_group = {
        "step1": 16 * n,
        "step2a": 4 * n,
        "step2b": n,
        "step2d": 8 * n,
        "step2e": 4 * n,
        "step3": 8 * n + 4 * n,
        "step4": 8 * n,
        "step5": 2 * n,
    }
    for step in ("step1", "step2a", "step2b"):
        for group, tracts in groups.items():
            res = run_step(work, site, step, group, tracts)
            assert res["status"] == "succeeded" and res["quanta"]["succeeded"] == expected_per_group[step], res
    hub = run_step(work, site, "step2c", "global", None)
    assert hub["status"] == "succeeded" and hub["quanta_per_task"] == {"fgcmFitCycle": 1, "fgcmOutputProducts": 1}
    for step in ("step2d", "step2e", "step3", "step4", "step5"):
        for group, tracts in groups.items():
            res = run_step(work, site, step, group, tracts)
            assert res["status"] == "succeeded" and res["quanta"]["succeeded"] == expected_per_group[step], res
    final = run_step(work, site, "final_qa", "global", None)
    assert final["status"] == "succeeded" and final["outputs"] == {"campaign_qa_summary": 1}
    counts = stackside(
        work,
        "count-datasets",
        "--repo",
        repo(work, site),
        "--collections",
        f"{PREFIX}/{site}/*",
        "--dataset-types",
        "isolated_star,fgcm_photo_calib,visit_image,deep_coadd,object_table,qa_metrics",
    )
    assert counts == {
        "isolated_star": 6,
        "fgcm_photo_calib": 1,
        "visit_image": 48,
        "deep_coadd": 24,
        "object_table": 6,
        "qa_metrics": 6,
    }
    FULL_SEQUENCE.update(work=work, groups=groups)


def test_the_real_tasks_write_the_specs_numbers_the_same_in_every_run():
    """visit_summary, object_table and qa_metrics hold exactly the spec's columns and metrics, with
    finite numbers; step5 of one tract run again into another RUN writes identical values; a config
    override (the drill's makeObjectTable:flux_calibration_scale=1.01) scales psf_flux by 1 %."""
    from drp_campaign.config import load_campaign

    if "work" not in FULL_SEQUENCE:
        pytest.skip("needs the repo of test_full_step_sequence_in_one_repo")
    work, site, groups = FULL_SEQUENCE["work"], "USDF", FULL_SEQUENCE["groups"]
    spec = load_campaign(CAMPAIGN).pipeline_spec
    columns = {name: spec.dataset_types[name].columns for name in ("visit_summary", "object_table")}
    metrics = spec.dataset_types["qa_metrics"].metrics

    summaries, objects, qa = read_outputs(
        work,
        site,
        ([run_name(site, "step2e", g) for g in groups], "visit_summary"),
        ([run_name(site, "step5", g) for g in groups], "object_table"),
        ([run_name(site, "step5", g) for g in groups], "qa_metrics"),
    )
    assert len(summaries) == 24  # one per visit
    for table in summaries.values():
        assert table["columns"] == columns["visit_summary"]
        assert len(table["visit"]) == 2  # one row per detector
        assert sum(table["n_sources"]) > 0
        assert all(math.isfinite(v) for c in ("zero_point", "psf_sigma", "sky_background") for v in table[c])
    assert len(objects) == len(qa) == 6  # one per tract
    for key, table in objects.items():
        assert table["columns"] == columns["object_table"]
        assert len(table["object_id"]) > 0 and set(table["band"]) == {"g", "r"}
        assert all(math.isfinite(v) for c in ("ra", "dec", "psf_flux", "psf_flux_err") for v in table[c])
        assert min(table["n_visits"]) >= 1
        assert sorted(qa[key]) == sorted(metrics)
        assert qa[key]["n_objects"] == len(set(table["object_id"])) > 0
        assert all(math.isfinite(v) for v in qa[key].values())

    # The same step for tract 2 into two more RUNs: once as configured, once with the drill's override.
    again = run_step(work, site, "step5", "t2-again", "2")
    scaled = run_step(work, site, "step5", "t2-scaled", "2", "--config", "makeObjectTable:flux_calibration_scale=1.01")
    assert again["status"] == scaled["status"] == "succeeded"
    assert scaled["config_overrides"] == {"makeObjectTable": {"flux_calibration_scale": 1.01}}
    [key2] = [k for k in objects if "tract=2" in k]
    first = objects[key2]
    again_objects, again_qa, scaled_objects = read_outputs(
        work,
        site,
        ([run_name(site, "step5", "t2-again")], "object_table"),
        ([run_name(site, "step5", "t2-again")], "qa_metrics"),
        ([run_name(site, "step5", "t2-scaled")], "object_table"),
    )
    assert again_objects == {key2: first} and again_qa == {key2: qa[key2]}
    assert list(scaled_objects) == [key2]
    changed = scaled_objects[key2]
    assert {c: changed[c] for c in ("object_id", "band", "ra", "dec", "n_visits")} == {
        c: first[c] for c in ("object_id", "band", "ra", "dec", "n_visits")
    }
    for before, after in zip(first["psf_flux"], changed["psf_flux"], strict=True):
        assert after == pytest.approx(1.01 * before, rel=1e-12)


def test_a_hop_whose_source_lacks_one_of_its_dataset_types_registers_nothing(tmp_path: Path, seeded_repo, monkeypatch):
    """#12 finding 5: export-hop skips a dataset type the source does not have, and the register
    task sent the rest as if complete. FRDF ran step1 and step2a but not step2b: it has the
    preliminary_visit_summary of gather_for_step2c but no isolated_star. Now the register task fails
    naming the hop, the site, the type and the collections, and registers nothing."""
    from airflow.sdk.exceptions import AirflowException

    from drp_campaign import graph
    from drp_campaign.config import load_campaign
    from drp_campaign.ledger import Ledger
    from drp_campaign.operators.hops import RegisterHopOperator, hop_dataset_did
    from drp_campaign.transfer.base import TransferError
    from drp_campaign.transfer.local import LocalTransferService

    work, site, run_id = tmp_path, "FRDF", "manual__2026-11-20T09:00:00+00:00"
    campaign, key = load_campaign(CAMPAIGN), graph.run_key(run_id)
    seeded_repo(Path(repo(work, site)), site)
    at_site = ["--campaign", str(CAMPAIGN), "--site", site, "--repo", repo(work, site), "--tracts", "2"]
    stackside(work, "check-inputs", *at_site, "--chain", graph.site_chain(campaign, key))
    for step in ("step1", "step2a"):
        output_run = graph.output_run(campaign, key, site, step, "g000")
        out = stackside(
            work,
            "run-step",
            *at_site,
            "--step",
            step,
            "--chain",
            graph.site_chain(campaign, key),
            "--output-run",
            output_run,
        )
        assert out["status"] == "succeeded", out
    monkeypatch.setenv("DRP_WORK_DIR", str(work))
    monkeypatch.setenv("DRP_TRANSFER_SERVICE", "local")
    monkeypatch.setenv("DRP_LEDGER_URL", f"sqlite:///{work / 'ledger.db'}")

    hop = {"campaign_file": str(CAMPAIGN), "hop": "gather_for_step2c", "site": site}
    register = RegisterHopOperator(task_id=f"{site}.gather_for_step2c.register", **hop)
    with pytest.raises(AirflowException) as err:
        register.execute({"run_id": run_id, "params": {}})
    text = str(err.value)
    print(f"\nregister with a type missing at the source: {text}")
    runs = graph.site_runs_pattern(campaign, key, site)
    where = f"FRDF has no isolated_star datasets in {runs}"
    assert text.startswith(f"hop gather_for_step2c FRDF->USDF: nothing registered: {where} (the hop moves ")
    assert "preliminary_visit_summary" not in text.split("(the hop moves")[0], "only the missing type is named"
    with pytest.raises(TransferError, match="is not registered"):
        LocalTransferService().manifest(hop_dataset_did(campaign, key, "gather_for_step2c", site))
    assert Ledger().hop_balances(key) == [], "no ledger row either"
