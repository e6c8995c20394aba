"""The nightly summary: pass/fail per site and hop, durations against earlier nights, regressions."""

from __future__ import annotations

import json

import pytest

from drp_campaign import nightly
from drp_campaign.config import load_campaign
from drp_campaign.dag_factory import build_dag
from drp_campaign.settings import CAMPAIGNS_DIR

SITES = ["USDF", "FRDF", "UKDF_LANCS"]


def steps(seconds: dict[str, float]) -> list[dict]:
    """Two groups of two steps per site: the longer group of each step counts."""
    return [
        {"site": site, "step": step, "group_label": g, "duration_s": total / 2 * (1 if g == "g000" else 0.5)}
        for site, total in seconds.items()
        for step in ("step1", "step2a")
        for g in ("g000", "g001")
    ]


HOPS_OK = [{"hop": "gather_for_step2c", "from": "FRDF", "to": "USDF", "sent": 10, "arrived": 10, "problems": []}]


def night(seconds: dict[str, float], states: dict | None = None, hops=HOPS_OK, earlier=()) -> dict:
    return nightly.summarize(
        campaign="nightly",
        hub="USDF",
        sites=SITES,
        run_id="scheduled__2026-11-30T03:00:00+00:00",
        run_key="scheduled__2026-11-30T03-00-00",
        task_states=states or {"FRDF.step1": "success", "campaign_report": "success"},
        steps=steps(seconds),
        hops=hops,
        earlier=list(earlier),
    )


USUAL = {"USDF": 100.0, "FRDF": 200.0, "UKDF_LANCS": 300.0}


def test_a_clean_first_night_passes_with_no_history_to_compare():
    summary = night(USUAL)
    assert summary["verdict"] == "PASS" and summary["regressions"] == []
    assert summary["sites"]["FRDF"] == {
        "verdict": "PASS",
        "failed": [],
        "duration_s": 200.0,
        "median_s": None,
        "nights": 0,
    }
    assert summary["hops"]["gather_for_step2c FRDF->USDF"]["verdict"] == "PASS"


def test_a_site_slower_than_its_median_of_earlier_nights_is_a_regression_only_with_enough_nights():
    earlier = [night(USUAL) for _ in range(nightly.NIGHTS + 2)]  # only the last seven count
    slow = night({**USUAL, "FRDF": 200.0 * nightly.SLOWER + 1}, earlier=earlier)
    assert slow["verdict"] == "PASS", "slow is a regression, not a failure"
    assert slow["sites"]["FRDF"]["median_s"] == 200.0 and slow["sites"]["FRDF"]["nights"] == nightly.NIGHTS
    [regression] = slow["regressions"]
    assert regression.startswith("FRDF took 301 s, 1.5x its median of the last 7 nights (200 s)")
    assert night({**USUAL, "FRDF": 200.0 * nightly.SLOWER}, earlier=earlier)["regressions"] == [], "at the bound: not"
    too_few = earlier[: nightly.MIN_NIGHTS - 1]
    assert night({**USUAL, "FRDF": 1000.0}, earlier=too_few)["regressions"] == []


def test_a_failure_tonight_after_a_clean_night_fails_the_site_and_is_flagged_as_a_regression():
    states = {"FRDF.step2b": "failed", "FRDF.gather_for_step2c.register": "upstream_failed", "USDF.step1": "success"}
    lost = [{**HOPS_OK[0], "from": "UKDF_LANCS", "arrived": 9, "problems": ["x: sent, never arrived"]}]
    summary = night(USUAL, states, hops=lost, earlier=[night(USUAL)])
    assert summary["verdict"] == "FAIL"
    assert summary["sites"]["FRDF"]["failed"] == [
        "FRDF.gather_for_step2c.register upstream_failed",
        "FRDF.step2b failed",
    ]
    assert summary["sites"]["USDF"]["verdict"] == "PASS"
    assert summary["hops"]["gather_for_step2c UKDF_LANCS->USDF"]["verdict"] == "FAIL"
    assert (
        "FRDF failed tonight (FRDF.gather_for_step2c.register upstream_failed), passed last night"
        in summary["regressions"]
    )
    text = nightly.text(summary)
    assert text.splitlines()[0] == "Nightly nightly scheduled__2026-11-30T03:00:00+00:00: FAIL, 1 regression(s)"
    assert "  FRDF: FAIL in 200 s" in text and "REGRESSION: FRDF failed tonight" in text
    assert "hop gather_for_step2c UKDF_LANCS->USDF: FAIL 9/10" in text
    again = night(USUAL, states, earlier=[summary])
    assert not any("passed last night" in r for r in again["regressions"]), "failing two nights running: no news"


def test_mapped_state_keys_name_their_task_and_earlier_summaries_are_read_newest_first(tmp_path, monkeypatch):
    ids = {"FRDF.step1", "FRDF.step1_extra", "campaign_report"}
    assert nightly.task_of("FRDF.step1_3", ids) == "FRDF.step1"
    assert nightly.task_of("FRDF.step1_extra", ids) == "FRDF.step1_extra"
    assert nightly.task_of("campaign_report", ids) == "campaign_report"
    monkeypatch.setenv("DRP_WORK_DIR", str(tmp_path))
    for key, verdict in (("a", "PASS"), ("c", "FAIL")):
        nightly.summary_file(key).parent.mkdir(parents=True, exist_ok=True)
        nightly.summary_file(key).write_text(json.dumps({"verdict": verdict}))
    assert [s["verdict"] for s in nightly.earlier_summaries(["c", "b", "a"])] == ["FAIL", "PASS"]


@pytest.mark.parametrize("name, has_summary", [("nightly.yaml", True), ("test-3x3.yaml", False)])
def test_a_scheduled_campaign_ends_with_its_nightly_summary_after_every_other_task(name, has_summary):
    dag = build_dag(load_campaign(CAMPAIGNS_DIR / name))
    assert ("nightly_summary" in dag.task_ids) is has_summary
    if has_summary:
        summary = dag.get_task("nightly_summary")
        assert summary.trigger_rule == "all_done", "it reports a failed night too"
        assert summary.upstream_task_ids == set(dag.task_ids) - {"nightly_summary"}
