"""The fault table (`make faults`): each fault drill, where it was injected, how it ended, and how
many datasets it lost or duplicated.

The drills are scenarios of the end-to-end suite (tests/test_campaign_e2e.py,
tests/test_sites_e2e.py) and of the local Rucio's (tests/test_rucio_local.py), marked `drill`.
Each one, once its run has ended, writes its row here (`record_drill`) with numbers measured from
the data, not written by hand: products at the hub against what the campaign must make (a product
missing is lost, one too many a duplicate), BPS submissions per step group (a second submission of
a group is duplicated work), files at a transfer's destination, rules per dataset.

    python -m drp_campaign.faults [ROWS_FILE]   print the table; exit 1 if a row lost or duplicated
                                                anything, or a drill has no row

Drills the issue asks for that are not built yet are listed as such under the table.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .settings import PROJECT_ROOT

ROWS_FILE = PROJECT_ROOT / "var" / "faults.jsonl"  # both e2e modules' rows (their work dirs differ)

# The drills the e2e suite runs, in the table's order (name -> what it shows).
BUILT = {
    "review failure, rescued": "a quantum fails for review; after the fix a retry rescues only it",
    "transient job failure": "a step's jobs die once (exit 137); the operator restarts the run",
    "worker killed mid-step": "a site's worker killed by pid while its tasks wait on their BPS runs",
    "scheduler and triggerer killed": "both killed by pid while a step waits deferred on its BPS run",
    "calibration missing at the hub": "the place hop refuses a site's inputs with a calibration gap",
    "site down, failed over": "a site's worker dead from the start; its tract moved to another site",
    "metadata database down": "the metadata DB and the ledger refuse connections for a while, mid-step",
    "services killed during a fan-in and a fan-out": "scheduler, triggerer and workers killed while transfers fly",
    "STUCK rule boosted": "a transfer failing past Rucio's retries; the hop's wait boosts the rule",
    "corrupt replica re-transferred": "a copy damaged on its way; found at the destination, copied again",
    "same campaign triggered twice at once": "two triggers of the same choices at one instant: one run made",
}
NOT_BUILT: tuple[str, ...] = ()


@dataclass(frozen=True)
class DrillRow:
    drill: str  # a key of BUILT
    injected: str  # where: site, step or service
    outcome: str
    lost: int  # datasets the campaign must make that are not at the hub
    duplicates: int  # datasets at the hub beyond those, plus second BPS submissions of a group
    run_id: str


def record_drill(row: DrillRow, rows_file: Path = ROWS_FILE) -> None:
    """Append ROW (one line: appends of one short line do not interleave between processes)."""
    if row.drill not in BUILT:
        raise ValueError(f"unknown drill {row.drill!r}: add it to faults.BUILT first")
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    with rows_file.open("a") as out:
        out.write(json.dumps(asdict(row)) + "\n")


def read_rows(rows_file: Path = ROWS_FILE) -> list[DrillRow]:
    """The latest row of each drill, in BUILT's order."""
    latest: dict[str, DrillRow] = {}
    if rows_file.exists():
        for line in rows_file.read_text().splitlines():
            if line.strip():
                row = DrillRow(**json.loads(line))
                latest[row.drill] = row
    return [latest[name] for name in BUILT if name in latest]


def lost_and_duplicated(expected: dict[str, int], found: dict[str, int]) -> tuple[int, int]:
    """Datasets missing from FOUND and datasets beyond EXPECTED, per dataset type, summed."""
    lost = sum(max(0, n - found.get(t, 0)) for t, n in expected.items())
    extra = sum(max(0, n - expected.get(t, 0)) for t, n in found.items())
    return lost, extra


def format_table(rows: list[DrillRow]) -> list[str]:
    headers = ("drill", "injected at", "outcome", "lost", "duplicates")
    cells = [(r.drill, r.injected, r.outcome, str(r.lost), str(r.duplicates)) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)]


def verdict(rows: list[DrillRow]) -> tuple[bool, list[str]]:
    """Whether every drill ran and ended with nothing lost or duplicated, and what is wrong if not."""
    problems = [
        f"{r.drill}: {r.lost} lost, {r.duplicates} duplicated (run {r.run_id})" for r in rows if r.lost or r.duplicates
    ]
    ran = {r.drill for r in rows}
    problems += [
        f"{name}: no row (the drill did not run, or failed before its end)" for name in BUILT if name not in ran
    ]
    return not problems, problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    rows = read_rows(Path(args[0]) if args else ROWS_FILE)
    print("\n".join(format_table(rows)))
    if NOT_BUILT:
        print("\nNot built yet: " + "; ".join(NOT_BUILT) + ".")
    ok, problems = verdict(rows)
    for problem in problems:
        print(f"FAIL {problem}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
