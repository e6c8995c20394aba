"""The live site x step matrix: Airflow's task-instance states counted per cell, merged with the
ledger's numbers, in data-path order, with an ETA from earlier runs."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from drp_campaign.config import load_campaign
from drp_campaign.dag_factory import build_dag
from drp_campaign.live_status import TaskRow, build_status, columns, row_state, typical_durations
from drp_campaign.settings import CAMPAIGNS_DIR

T0 = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
RUN = {
    "dag_id": "campaign_test_3x3",
    "run_id": "manual__2026-11-30T12:00:00+00:00",
    "state": "running",
    "start_date": T0,
}


@pytest.fixture(scope="module")
def campaign():
    return load_campaign(CAMPAIGNS_DIR / "test-3x3.yaml")


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_the_columns_follow_the_data_path_and_cover_every_task_of_the_dag(campaign):
    cols = columns(campaign)
    order = [
        "check_software",
        "place_inputs",
        "check_inputs",
        "step1",
        "step2b",
        "gather_for_step2c",
        "review_step2c",
        "step2c",
        "distribute_step2c",
        "step5",
        "return_products",
        "site_qa",
        "final_qa",
        "archive_products",
        "release_site_copies",
        "campaign_report",
    ]
    assert [c for c in cols if c in order] == order
    dag = build_dag(campaign)
    tasks = [TaskRow(t, -1, None) for t in dag.task_ids]
    assert build_status(campaign, RUN, tasks, None, now=T0)["columns"] == cols, "no task outside the known columns"


def test_a_running_run_counts_mapped_groups_by_state_and_puts_failures_first(campaign):
    tasks = [
        TaskRow("FRDF.step1", 0, "success", at(0), at(5)),
        TaskRow("FRDF.step1", 1, "failed", at(0), at(6), group="g001"),
        TaskRow("UKDF_RAL.step1", 0, "running", at(1)),
        TaskRow("UKDF_RAL.step1", 1, "success", at(1), at(4)),
        TaskRow("UKDF_RAL.step1", 2, "queued"),
        TaskRow("USDF.step1", 0, "success", at(0), at(3)),
        TaskRow("FRDF.place_inputs.register", -1, "success", at(0), at(1)),
        TaskRow("FRDF.place_inputs.wait", -1, "deferred", at(1)),
        TaskRow("USDF.review_step2c", -1, "awaiting_input", at(7)),
    ]
    status = build_status(campaign, RUN, tasks, None, now=at(10))
    rows = {r["site"]: r for r in status["sites"]}
    assert [r["site"] for r in status["sites"]] == ["USDF", "FRDF", "UKDF_RAL"], "the hub first"
    frdf = rows["FRDF"]["cells"]
    assert frdf["step1"]["state"] == "failed" and frdf["step1"]["counts"] == {"success": 1, "failed": 1}
    assert frdf["step1"]["failed"][0]["link"].endswith("/tasks/FRDF.step1/mapped/1")
    assert frdf["step1"]["failed"][0]["group"] == "g001"
    assert frdf["place_inputs"]["state"] == "deferred", "a hop's cell is its five tasks together"
    assert frdf["place_inputs"]["link"].endswith("/tasks/group/FRDF.place_inputs")
    assert rows["UKDF_RAL"]["cells"]["step1"]["counts"] == {"running": 1, "success": 1, "queued": 1}
    assert rows["UKDF_RAL"]["cells"]["step1"]["state"] == "running"
    assert rows["USDF"]["cells"]["review_step2c"]["state"] == "awaiting_input"
    assert rows["FRDF"]["state"] == "failed" and rows["UKDF_RAL"]["state"] == "running"
    assert row_state(Counter({"success": 3, "none": 2})) == "running", "done so far is not done"
    assert row_state(Counter({"success": 3, "skipped": 1})) == "success" and row_state(Counter({"none": 4})) == "none"
    assert rows["FRDF"]["elapsed_s"] == 600.0 and rows["FRDF"]["eta_s"] is None, "no earlier run: no ETA"
    slice_run = {**RUN, "conf": {"sites": ["FRDF"]}}
    rows = {r["site"]: r for r in build_status(campaign, slice_run, tasks, None, now=at(10))["sites"]}
    assert rows["UKDF_RAL"]["state"] == "not selected" and rows["FRDF"]["state"] == "failed"


def test_the_eta_adds_what_earlier_runs_took_for_the_tasks_left_and_a_finished_site_stops_its_clock(campaign):
    earlier = [
        TaskRow("FRDF.step1", 0, "success", at(-100), at(-90), run_id="a"),
        TaskRow("FRDF.step1", 1, "success", at(-100), at(-80), run_id="a"),  # the longest group counts
        TaskRow("FRDF.step1", 0, "success", at(-50), at(-40), run_id="b"),
        TaskRow("FRDF.step2a", 0, "success", at(-80), at(-77), run_id="a"),
        TaskRow("FRDF.step2a", 0, "failed", at(-40), at(-30), run_id="b"),  # a failure says nothing
        TaskRow("FRDF.distribute_step2c.wait", -1, "skipped", run_id="a"),  # nothing to move: no time
    ]
    durations = typical_durations(earlier)
    assert durations == {"FRDF.step1": 900.0, "FRDF.step2a": 180.0, "FRDF.distribute_step2c.wait": 0.0}
    running = [TaskRow("FRDF.step1", 0, "running", at(0)), TaskRow("FRDF.step2a", 0, None)]
    [_, frdf, _] = build_status(campaign, RUN, running, None, durations, now=at(2))["sites"]
    assert (frdf["elapsed_s"], frdf["eta_s"]) == (120.0, 1080.0)
    done = [TaskRow("FRDF.step1", 0, "success", at(0), at(3)), TaskRow("FRDF.step2a", 0, "success", at(3), at(4))]
    [_, frdf, _] = build_status(campaign, RUN, done, None, durations, now=at(60))["sites"]
    assert (frdf["elapsed_s"], frdf["eta_s"]) == (240.0, 0)


def test_the_ledger_adds_quanta_wms_runs_live_rule_states_storage_and_the_qa_verdict(campaign):
    report = {
        "run_key": "manual__2026-11-30T12-00-00",
        "ledger_balanced": True,
        "steps": [
            {
                "site": "FRDF",
                "step": "step1",
                "group_label": g,
                "quanta_succeeded": 16,
                "quanta_total": 16,
                "quanta_failed": 0,
                "status": "succeeded",
                "wms_run_id": f"panda-{g}",
                "output_run": f"drp/x/FRDF/step1/{g}",
            }
            for g in ("g000", "g001")
        ],
        "hops": [
            {
                "hop": "place_inputs",
                "from": "USDF",
                "to": "FRDF",
                "sent": 10,
                "arrived": 10,
                "bytes": 4_000,
                "problems": [],
                "rule_id": "r-place",
                "rule_state": "OK",
            },
            {
                "hop": "gather_for_step2c",
                "from": "FRDF",
                "to": "USDF",
                "sent": 4,
                "arrived": 3,
                "bytes": 1_000,
                "problems": ["x: sent, never arrived"],
                "rule_id": "r-gather",
                "rule_state": "REPLICATING",
            },
        ],
        "released": [{"site": "FRDF", "bytes": 500}],
        "site_qa": {"verdict": "fail", "tracts": []},
        "reviews": [{"step": "step2c", "decision": "approved", "by": "operator", "at": "..."}],
    }
    tasks = [
        TaskRow("FRDF.step1", 0, "success"),
        TaskRow("FRDF.step1", 1, "success"),
        TaskRow("FRDF.place_inputs.verify", -1, "success"),
        TaskRow("FRDF.gather_for_step2c.wait", -1, "failed"),
        TaskRow("USDF.site_qa", -1, "failed"),
    ]
    status = build_status(campaign, RUN, tasks, report, live_rules={"r-gather": "STUCK"}, now=at(1))
    rows = {r["site"]: r for r in status["sites"]}
    frdf = rows["FRDF"]["cells"]
    assert frdf["step1"]["quanta"] == {"succeeded": 32, "total": 32, "failed": 0}
    assert [w["wms_run_id"] for w in frdf["step1"]["wms_runs"]] == ["panda-g000", "panda-g001"]
    [rule] = frdf["gather_for_step2c"]["hop"]["rules"]
    assert (rule["state"], rule["live"]) == ("STUCK", True), "Rucio's word now, not the ledger's snapshot"
    assert frdf["place_inputs"]["hop"]["rules"][0] | {"link": ""} == {
        "rule_id": "r-place",
        "from": "USDF",
        "to": "FRDF",
        "state": "OK",
        "live": False,
        "link": "",
    }
    assert frdf["gather_for_step2c"]["hop"]["problems"] == ["x: sent, never arrived"]
    # FRDF holds what was placed there and what it sent, less what it released; the hub what arrived.
    assert rows["FRDF"]["storage"]["bytes"] == 4_000 + 1_000 - 500
    assert rows["USDF"]["storage"]["bytes"] == 1_000
    assert rows["UKDF_RAL"]["storage"]["quota_bytes"] == campaign.sites_config.sites["UKDF_RAL"].storage_tb * 1e12
    assert rows["USDF"]["cells"]["site_qa"]["verdict"] == "fail" and status["site_qa"] == "fail"
    assert status["reviews"][0]["by"] == "operator" and status["ledger_balanced"] is True
