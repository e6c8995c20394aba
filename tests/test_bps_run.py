"""A step group through the real `bps` with ctrl_bps_parsl: submit, report, restart, rescue, cancel.

The stack side is called by subprocess from the controller env, exactly as the operator does.
Each BPS run of one step1 group takes ~10 s here.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_stackside import CAMPAIGN, repo, stackside

from drp_campaign import bps as bpsrec

pytestmark = pytest.mark.integration

KEY = "manual__bps"
CHAIN = f"drp/test-3x3/{KEY}"
FAULT = "calibrateImage:detector = 1"


@pytest.fixture(scope="module")
def work(tmp_path_factory, seeded_repo) -> Path:
    work = tmp_path_factory.mktemp("bps")
    seeded_repo(Path(repo(work, "FRDF")), "FRDF")
    stackside(
        work,
        "check-inputs",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        "FRDF",
        "--repo",
        repo(work, "FRDF"),
        "--chain",
        CHAIN,
    )
    return work


def submit(work: Path, group: str, tract: int, *extra: str, ok: bool = True):
    return stackside(
        work,
        "bps-submit",
        "--campaign",
        str(CAMPAIGN),
        "--site",
        "FRDF",
        "--repo",
        repo(work, "FRDF"),
        "--step",
        "step1",
        "--group",
        group,
        "--tracts",
        str(tract),
        "--key",
        KEY,
        "--chain",
        CHAIN,
        "--run-dir",
        str(work / "bps" / group),
        *extra,
        ok=ok,
    )


def wait_finished(work: Path, group: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while (state := bpsrec.local_state(work / "bps" / group)) == "RUNNING":
        assert time.monotonic() < deadline, f"BPS run of {group} still running after {timeout} s"
        time.sleep(0.5)
    return state


def report(work: Path, group: str) -> dict:
    return stackside(work, "bps-report", "--campaign", str(CAMPAIGN), "--run-dir", str(work / "bps" / group))


def visible_in_step1_runs(work: Path) -> dict:
    return stackside(
        work,
        "count-datasets",
        "--repo",
        repo(work, "FRDF"),
        "--collections",
        f"{CHAIN}/FRDF/step1/*",
        "--dataset-types",
        "single_visit_star",
    )


def test_a_clean_run_is_reported_per_task_and_joins_the_chain(work: Path):
    first = submit(work, "g000", 2)
    assert first["action"] == "submitted" and first["wms"] == "parsl"
    assert first["output_run"] == f"{CHAIN}/FRDF/step1/g000"
    # While it runs, asking again attaches to the same run: nothing is submitted twice.
    again = submit(work, "g000", 2)
    assert again["action"] in ("attached",) and again["attempt"] == 1
    assert wait_finished(work, "g000") == "FINISHED"
    res = report(work, "g000")
    assert res["status"] == "succeeded"
    assert res["quanta"] == {"total": 16, "succeeded": 16, "failed": 0, "blocked": 0}
    assert res["quanta_per_task"] == {"isr": 8, "calibrateImage": 8}
    assert res["outputs"]["single_visit_star"] == 8
    assert res["chain_updated"] is True
    # A finished clean run is left alone by a later submit (a retried task, a restarted scheduler),
    # and its outcome is read once: the submit's look and the report after it use the same file.
    outcome = work / "bps" / "g000" / "attempt-1.report.json"
    read_at = outcome.stat().st_mtime_ns
    after = submit(work, "g000", 2)
    assert after["action"] == "attached" and after["attempt"] == 1
    assert {k: v for k, v in report(work, "g000").items() if k != "elapsed_s"} == {
        **{k: v for k, v in res.items() if k != "elapsed_s"},
        "chain_updated": False,
    }
    assert outcome.stat().st_mtime_ns == read_at, "pipetask report ran once for this attempt"
    assert len(bpsrec.read_record(work / "bps" / "g000")["attempts"]) == 1
    assert visible_in_step1_runs(work)["single_visit_star"] == 8


def test_failed_quanta_are_listed_then_a_fix_is_rescued_into_a_new_run(work: Path):
    first = submit(work, "g001", 3, "--fail", FAULT)
    assert first["action"] == "submitted"
    wait_finished(work, "g001")
    res = report(work, "g001")
    assert res["status"] == "failed" and res["chain_updated"] is False
    assert res["quanta"] == {"total": 16, "succeeded": 12, "failed": 4, "blocked": 0}
    failed = res["failed_quanta"]
    assert {q["task"] for q in failed} == {"calibrateImage"}
    assert sorted(q["data_id"]["visit"] for q in failed) == [4000, 4001, 4002, 4003]
    assert all(q["data_id"]["detector"] == 1 and q["error"].startswith("ValueError: Simulated failure") for q in failed)

    # Same definition (the fault still there): a restart of the same run; still failing, no duplicates.
    again = submit(work, "g001", 3, "--fail", FAULT)
    assert again["action"] == "restarted" and again["output_run"] == first["output_run"]
    wait_finished(work, "g001")
    res = report(work, "g001")
    assert res["status"] == "failed" and res["restarts"] == 1
    assert res["quanta"]["succeeded"] == 12 and res["outputs"]["single_visit_star"] == 4

    # The fault removed (a fix): the definition changed, so a rescue RUN redoes only what failed.
    fixed = submit(work, "g001", 3)
    assert fixed["action"] == "rescued" and fixed["output_run"] == f"{first['output_run']}/rescue3"
    wait_finished(work, "g001")
    res = report(work, "g001")
    assert res["status"] == "succeeded", res["failed_quanta"]
    assert res["output_runs"] == [fixed["output_run"], first["output_run"]]
    assert res["outputs"]["single_visit_star"] == 8, "4 from the first RUN + 4 from the rescue, none twice"
    assert res["outputs"]["post_isr_image"] == 8, "isr succeeded the first time and was not redone"
    assert res["chain_updated"] is True


def test_cancel_stops_the_run_and_a_later_submit_restarts_it(work: Path):
    first = submit(work, "g002", 2)  # a second group over tract 2, in its own RUN
    assert first["action"] == "submitted"
    time.sleep(2)
    record = bpsrec.read_record(work / "bps" / "g002")
    pid = record["attempts"][-1]["pid"]
    assert bpsrec.process_alive(pid)
    out = stackside(work, "bps-cancel", "--run-dir", str(work / "bps" / "g002"))
    assert out["action"] == "cancelled"
    assert not bpsrec.process_alive(pid), "the detached bps and its jobs are gone"
    assert bpsrec.local_state(work / "bps" / "g002") == "CANCELLED"
    # Cancelling again is harmless.
    assert stackside(work, "bps-cancel", "--run-dir", str(work / "bps" / "g002"))["action"] == "nothing_to_cancel"
    again = submit(work, "g002", 2)
    assert again["action"] in ("restarted", "submitted", "rescued")
    wait_finished(work, "g002")
    res = report(work, "g002")
    assert res["status"] == "succeeded", res["failed_quanta"]
    assert res["quanta"]["succeeded"] == 16


def test_a_transient_job_failure_is_reported_with_its_exit_code_and_a_restart_succeeds(work: Path):
    first = submit(work, "g003", 3, "--job-fault", "transient")
    assert first["action"] == "submitted"
    wait_finished(work, "g003")
    res = report(work, "g003")
    assert res["status"] == "failed" and res["quanta"]["failed"] == 0 and res["quanta"]["blocked"] == 16
    assert [q["exit_code"] for q in res["failed_quanta"]] == [137]
    assert "node lost" in res["failed_quanta"][0]["error"]
    restarted = stackside(work, "bps-restart", "--campaign", str(CAMPAIGN), "--run-dir", str(work / "bps" / "g003"))
    assert restarted["action"] == "restarted"
    wait_finished(work, "g003")
    res = report(work, "g003")
    assert res["status"] == "succeeded", res["failed_quanta"]
    assert res["quanta"]["succeeded"] == 16 and res["restarts"] == 1


def test_a_group_that_selects_nothing_is_refused_before_submission(work: Path):
    proc = submit(work, "g009", 0, ok=False)  # tract 0 lives at USDF: no raws here
    assert proc.returncode == 2
    assert "selects none of the step's inputs" in proc.stderr and "tract IN (0)" in proc.stderr
    assert "nothing was submitted" in proc.stderr
    assert bpsrec.read_record(work / "bps" / "g009") is None


def test_status_and_report_of_an_unknown_run_dir_say_what_to_do(work: Path):
    proc = stackside(work, "bps-report", "--campaign", str(CAMPAIGN), "--run-dir", str(work / "bps" / "nope"), ok=False)
    assert proc.returncode == 2 and "no BPS run recorded" in proc.stderr
    assert stackside(work, "bps-status", "--run-dir", str(work / "bps" / "nope"))["state"] == "MISSING"


def test_the_trigger_waits_cheaply_and_its_on_kill_cancels_the_run_for_real(work: Path):
    """What the triggerer does: poll the run's files until it ends; a user's mark-failed cancels it."""
    import asyncio

    from drp_campaign.triggers.bps_run import BpsRunTrigger

    run = submit(work, "g004", 2, "--job-fault", "slow:120")
    trigger = BpsRunTrigger(
        run_dir=run["run_dir"],
        wms="parsl",
        run_id=run["run_id"],
        site="FRDF",
        campaign_file=str(CAMPAIGN),
        poll_interval_s=0.2,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "drp_campaign.triggers.bps_run.BpsRunTrigger" and BpsRunTrigger(**kwargs).serialize() == (
        classpath,
        kwargs,
    )

    async def first_event(timeout: float):
        gen = trigger.run()
        try:
            return await asyncio.wait_for(gen.__anext__(), timeout)
        finally:
            await gen.aclose()

    with pytest.raises(TimeoutError):
        asyncio.run(first_event(3.0))  # still running: no event, no worker slot
    pid = bpsrec.read_record(work / "bps" / "g004")["attempts"][-1]["pid"]
    asyncio.run(trigger.on_kill())
    assert not bpsrec.process_alive(pid)
    event = asyncio.run(first_event(10.0))
    assert event.payload["state"] == "CANCELLED" and event.payload["run_dir"] == run["run_dir"]


def test_a_group_whose_work_changed_is_rescued_never_attached(work: Path):
    """A cleared group after someone edited its tracts (issue #12 finding 4): g000 ran tract 2 and
    finished clean; asked for tract 3 it must not report that run as done."""
    assert report(work, "g000")["status"] == "succeeded"
    moved = submit(work, "g000", 3)
    assert moved["action"] == "rescued" and moved["output_run"].endswith("/g000/rescue2")
    # While that runs, the old work asked for again is refused, not attached to the new run.
    refused = submit(work, "g000", 2, ok=False)
    assert refused.returncode == 2 and "submitted for other work" in refused.stderr
    assert "tracts [3] -> [2]" in refused.stderr and "nothing was attached" in refused.stderr
    assert wait_finished(work, "g000") == "FINISHED"
    res = report(work, "g000")
    assert res["status"] == "succeeded" and res["output_runs"] == [moved["output_run"], f"{CHAIN}/FRDF/step1/g000"]
    identity = bpsrec.read_record(work / "bps" / "g000")["identity"]
    assert identity["tracts"] == [3] and "tract IN (3)" in identity["data_query"]
    assert res["outputs"]["single_visit_star"] == 16, "tract 2's 8 from the first RUN + tract 3's 8 from the rescue"


def test_slow_jobs_wait_until_a_drill_releases_them(work: Path):
    """The 'slow' job fault keeps a run in flight for a drill (kills, cancels, restarts) and lets its
    jobs go on as soon as the drill puts drills.RELEASE_JOBS in the attempt's directory."""
    from drp_campaign.drills import RELEASE_JOBS

    run = submit(work, "g006", 3, "--job-fault", "slow:900")
    time.sleep(8)
    assert bpsrec.local_state(work / "bps" / "g006") == "RUNNING", "held by the fault"
    attempt = Path(bpsrec.read_record(work / "bps" / "g006")["attempts"][-1]["submit_yaml"]).parent
    (attempt / RELEASE_JOBS).touch()
    assert wait_finished(work, "g006", timeout=120) != "RUNNING", "released long before its 900 s"
    assert report(work, "g006")["status"] == "succeeded", run
