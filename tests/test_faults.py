"""The fault table: rows written by the drills, read back, judged and printed (no services)."""

from __future__ import annotations

import pytest

from drp_campaign import faults
from drp_campaign.faults import DrillRow


def row(drill: str, lost: int = 0, duplicates: int = 0, run_id: str = "r1") -> DrillRow:
    return DrillRow(drill, "FRDF step1", "recovered", lost, duplicates, run_id)


def test_the_latest_row_of_each_drill_is_read_in_the_tables_order(tmp_path):
    rows_file = tmp_path / "faults.jsonl"
    for r in (row("site down, failed over"), row("transient job failure", run_id="old")):
        faults.record_drill(r, rows_file)
    faults.record_drill(row("transient job failure", run_id="new"), rows_file)
    assert [(r.drill, r.run_id) for r in faults.read_rows(rows_file)] == [
        ("transient job failure", "new"),
        ("site down, failed over", "r1"),
    ]
    with pytest.raises(ValueError, match="unknown drill 'typo'"):
        faults.record_drill(row("typo"), rows_file)


def test_a_row_with_a_loss_or_a_duplicate_or_a_drill_without_a_row_fails_the_table(tmp_path, capsys):
    rows_file = tmp_path / "faults.jsonl"
    for name in faults.BUILT:
        faults.record_drill(row(name), rows_file)
    assert faults.main([str(rows_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| drill") and "| site down, failed over" in out
    assert ("Not built yet: " + "; ".join(faults.NOT_BUILT)) in out if faults.NOT_BUILT else "Not built" not in out
    faults.record_drill(row("worker killed mid-step", lost=2, run_id="bad"), rows_file)
    assert faults.main([str(rows_file)]) == 1
    assert "FAIL worker killed mid-step: 2 lost, 0 duplicated (run bad)" in capsys.readouterr().out
    ok, problems = faults.verdict([row("transient job failure")])
    assert not ok and "review failure, rescued: no row" in problems[0]


def test_lost_and_duplicated_count_per_dataset_type():
    expected = {"object_table": 2, "deep_coadd": 8}
    assert faults.lost_and_duplicated(expected, {"object_table": 2, "deep_coadd": 8}) == (0, 0)
    assert faults.lost_and_duplicated(expected, {"object_table": 3, "deep_coadd": 6}) == (2, 1)
    assert faults.lost_and_duplicated(expected, {"object_table": 2, "deep_coadd": 8, "stray": 1}) == (0, 1)
