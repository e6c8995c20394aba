"""Failure classification (issue #4, item 3): the shipped rules, the verdicts, the messages, and
every kind of bad rules file refused with one message naming the file, the rule and the key.

Fast unit tests: no services, no stack; the errors are the texts pipetask's quantum reports give
(see drp_campaign/stackside/step.py: "ExceptionClass: message", or "<status>:" for a quantum whose
process died without reporting).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from drp_campaign import settings
from drp_campaign.config import ConfigError
from drp_campaign.failures import DEFAULT_RULES_FILE, Classification, load_rules

SHIPPED = yaml.safe_load(DEFAULT_RULES_FILE.read_text())


def quantum(
    task: str = "isr", error: str = "failure:", exit_code: int | None = 1, status: str = "failure", **data_id: Any
) -> dict[str, Any]:
    return {
        "task": task,
        "data_id": data_id or {"instrument": "LSSTCam", "visit": 2025120100042, "detector": 94},
        "error": error,
        "exit_code": exit_code,
        "status": status,
    }


@pytest.fixture(scope="module")
def rules():
    return load_rules()


def write_rules(tmp_path: Path, document: Any, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# --- the shipped rules -------------------------------------------------------------------------


def test_default_rules_file_loads_from_configs(rules):
    assert DEFAULT_RULES_FILE == settings.CONFIGS_DIR / "failure-rules.yaml"
    assert rules.file == DEFAULT_RULES_FILE
    assert [rule.name for rule in rules.rules] == [rule["name"] for rule in SHIPPED["rules"]]
    assert {rule.failure_class for rule in rules.rules} == {"transient", "accepted", "review"}
    assert load_rules(DEFAULT_RULES_FILE).rules == rules.rules


@pytest.mark.parametrize(
    ("failed", "rule", "failure_class", "max_retries"),
    [
        # transient
        (quantum(error="failure:", exit_code=-9), "killed-sigkill", "transient", 1),
        (quantum(error="failure:", exit_code=137), "killed-sigkill", "transient", 1),
        (quantum(error="failure:", exit_code=143), "killed-sigterm", "transient", 2),
        (quantum(error="timeout:", exit_code=-15, status="timeout"), "killed-sigterm", "transient", 2),
        (quantum(error="timeout:", exit_code=None, status="timeout"), "quantum-timeout", "transient", 1),
        (
            quantum(
                error="sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) server closed the "
                "connection unexpectedly"
            ),
            "registry-database",
            "transient",
            2,
        ),
        (quantum(error="sqlite3.OperationalError: database is locked"), "registry-database", "transient", 2),
        (
            quantum(
                error="botocore.exceptions.ReadTimeoutError: Read timeout on endpoint URL: "
                '"https://s3dfrgw.slac.stanford.edu/rubin-main"'
            ),
            "network-or-storage",
            "transient",
            2,
        ),
        (
            quantum(error="ConnectionResetError: [Errno 104] Connection reset by peer"),
            "network-or-storage",
            "transient",
            2,
        ),
        # accepted: known data problems, for the tasks they are known in
        (
            quantum(
                "calibrateImage",
                "lsst.pipe.tasks.calibrateImage.AllCentroidsFlaggedError: All "
                "source centroids (out of 412) flagged during PSF fitting.",
            ),
            "single-frame-psf-or-sources",
            "accepted",
            None,
        ),
        (
            quantum("calibrateImage", "RuntimeError: PSF determination failed: Not enough good sources"),
            "single-frame-psf-or-sources",
            "accepted",
            None,
        ),
        (
            quantum(
                "subtractImages",
                "lsst.ip.diffim.detectAndMeasure.BadSubtractionError: The "
                "ratio of residual power in source footprints is 0.93",
            ),
            "difference-imaging",
            "accepted",
            None,
        ),
        (
            quantum("isr", "lsst.pipe.base.RepeatableQuantumError: amplifier C10 is saturated"),
            "repeatable-per-detector",
            "accepted",
            None,
        ),
        (quantum("calibrateImage", "failure:", exit_code=20), "repeatable-exit-per-detector", "accepted", None),
        # review: known, but not retryable
        (
            quantum(error="OSError: [Errno 28] No space left on device: '/sdf/scratch/rubin/x.fits'"),
            "storage-full",
            "review",
            None,
        ),
        (
            quantum(error="lsst.pipe.base.InvalidQuantumError: connection 'calexp' has no dimensions"),
            "invalid-quantum",
            "review",
            None,
        ),
        (quantum(error="failure:", exit_code=21), "invalid-quantum-exit", "review", None),
        (
            quantum(error="PermissionError: [Errno 13] Permission denied: '/repo/main/butler.yaml'"),
            "permission-denied",
            "review",
            None,
        ),
        # review: nothing matches
        (quantum("makeObjectTable", "ValueError: operands could not be broadcast together"), None, "review", None),
    ],
)
def test_each_class_is_reached_by_a_realistic_error(rules, failed, rule, failure_class, max_retries):
    [result] = rules.classify([failed]).results
    assert (result.rule, result.failure_class, result.max_retries) == (rule, failure_class, max_retries)
    assert result.quantum == failed


def test_first_matching_rule_wins_in_the_shipped_file(rules):
    # Matches both storage-full (review) and registry-database (transient): the earlier wins.
    error = "sqlite3.OperationalError: database or disk is full"
    names = [rule.name for rule in rules.rules if rule.matches(quantum(error=error))]
    assert names[:2] == ["storage-full", "registry-database"]
    [result] = rules.classify([quantum(error=error)]).results
    assert (result.rule, result.failure_class) == ("storage-full", "review")


def test_first_matching_rule_wins_whatever_the_class(tmp_path):
    broad = {"name": "any-runtime", "class": "transient", "error": "RuntimeError"}
    narrow = {"name": "psf", "class": "accepted", "error": "RuntimeError: PSF fit failed"}
    failed = quantum(error="RuntimeError: PSF fit failed on 3 stars")
    first = load_rules(write_rules(tmp_path, {"rules": [broad, narrow]}, "a.yaml"))
    second = load_rules(write_rules(tmp_path, {"rules": [narrow, broad]}, "b.yaml"))
    assert first.classify([failed]).results[0].rule == "any-runtime"
    assert second.classify([failed]).results[0].rule == "psf"


def test_tasks_filter_limits_a_rule_to_its_task_labels(rules):
    psf_error = (
        "lsst.pipe.tasks.calibrateImage.NoPsfStarsToStarsMatchError: No psf stars out of 12 matched 0 calib stars"
    )
    assert rules.classify([quantum("calibrateImage", psf_error)]).results[0].failure_class == "accepted"
    # The same error in a task no accepted rule names is for review.
    assert rules.classify([quantum("makeObjectTable", psf_error)]).results[0].rule is None
    # A repeatable error is accepted per detector, never in the global calibration.
    repeatable = "lsst.pipe.base.RepeatableQuantumError: fit did not converge"
    by_task = {
        task: rules.classify([quantum(task, repeatable)]).results[0].failure_class
        for task in ("isr", "makeDirectWarp", "fgcmFitCycle", "assembleDeepCoadd")
    }
    assert by_task == {
        "isr": "accepted",
        "makeDirectWarp": "accepted",
        "fgcmFitCycle": "review",
        "assembleDeepCoadd": "review",
    }


def test_every_criterion_of_a_rule_must_hold(tmp_path):
    rules = load_rules(
        write_rules(
            tmp_path,
            {
                "rules": [
                    {
                        "name": "oom-in-warp",
                        "class": "transient",
                        "tasks": ["makeDirectWarp"],
                        "exit_codes": [-9],
                        "error": "^failure:",
                    }
                ]
            },
        )
    )
    assert rules.classify([quantum("makeDirectWarp", "failure:", -9)]).results[0].rule == "oom-in-warp"
    for other in (
        quantum("isr", "failure:", -9),
        quantum("makeDirectWarp", "failure:", 1),
        quantum("makeDirectWarp", "MemoryError: ", -9),
    ):
        assert rules.classify([other]).results[0].rule is None


def test_exit_codes(rules):
    # An exit-code rule needs the code: a quantum without one (None) never matches it.
    assert rules.classify([quantum(error="failure:", exit_code=None)]).results[0].rule is None
    assert rules.classify([quantum("fgcmFitCycle", "failure:", exit_code=20)]).results[0].rule is None
    assert rules.classify([quantum("isr", "failure:", exit_code=20)]).results[0].rule == "repeatable-exit-per-detector"
    assert rules.classify([quantum(error="failure:", exit_code=-15)]).results[0].rule == "killed-sigterm"


def test_a_quantum_missing_keys_is_classified_not_crashed(rules):
    [result] = rules.classify([{"task": "isr", "data_id": None}]).results
    assert (result.rule, result.failure_class) == (None, "review")
    assert "isr {}: (no error reported)" in result.line()


# --- verdicts ----------------------------------------------------------------------------------


SIGTERM = quantum(error="failure:", exit_code=143)  # max_retries 2 (default)
SIGKILL = quantum(error="failure:", exit_code=-9, visit=7, detector=1)  # max_retries 1
ACCEPTED = quantum("calibrateImage", "RuntimeError: PSF fit failed")
REVIEW = quantum("makeObjectTable", "KeyError: 'coord_ra'")


def test_transient_is_retried_until_max_retries_then_fails(rules):
    result = rules.classify([SIGTERM, dict(SIGTERM, data_id={"visit": 3, "detector": 5})])
    assert [result.verdict(n) for n in range(4)] == ["retry", "retry", "fail", "fail"]
    assert [result.retry_allowed(n) for n in range(3)] == [True, True, False]


def test_the_smallest_max_retries_of_the_matched_transient_rules_wins(rules):
    result = rules.classify([SIGTERM, SIGKILL])
    assert [rule.max_retries for rule in result.transient] == [2, 1]
    assert [result.verdict(n) for n in range(3)] == ["retry", "fail", "fail"]


def test_default_max_retries_comes_from_the_file(tmp_path):
    path = write_rules(
        tmp_path,
        {"default_max_retries": 4, "rules": [{"name": "db", "class": "transient", "error": "OperationalError"}]},
    )
    result = load_rules(path).classify([quantum(error="OperationalError: database is locked")])
    assert [result.verdict(n) for n in (0, 3, 4)] == ["retry", "retry", "fail"]


def test_transient_with_accepted_is_retried_then_fails(rules):
    result = rules.classify([SIGTERM, ACCEPTED])
    assert [result.verdict(n) for n in (0, 1, 2)] == ["retry", "retry", "fail"]


def test_all_accepted_is_accepted(rules):
    result = rules.classify([ACCEPTED, quantum("subtractImages", "PsfDiscontinuityError: 3% ok")])
    assert result.counts() == {"transient": 0, "accepted": 2, "review": 0}
    assert not result.retry_allowed(0)
    assert result.verdict(0) == "accept"
    assert result.verdict(5) == "accept"


def test_any_review_fails_at_once(rules):
    for failed in ([REVIEW], [SIGTERM, REVIEW], [ACCEPTED, REVIEW], [SIGTERM, ACCEPTED, REVIEW]):
        result = rules.classify(failed)
        assert not result.retry_allowed(0)
        assert result.verdict(0) == "fail"


def test_no_failures_is_nothing_to_retry_or_fail(rules):
    result = rules.classify([])
    assert result.counts() == {"transient": 0, "accepted": 0, "review": 0}
    assert (result.retry_allowed(0), result.verdict(0)) == (False, "accept")


def test_class_lists_and_counts(rules):
    result = rules.classify([SIGTERM, REVIEW, ACCEPTED, SIGKILL])
    assert isinstance(result, Classification)
    assert [r.quantum for r in result.transient] == [SIGTERM, SIGKILL]
    assert [r.quantum for r in result.accepted] == [ACCEPTED]
    assert [r.quantum for r in result.review] == [REVIEW]
    assert result.counts() == {"transient": 2, "accepted": 1, "review": 1}


# --- messages and XCom -------------------------------------------------------------------------


def test_message_names_data_ids_tasks_errors_classes_and_what_to_do(rules):
    text = rules.classify([SIGKILL, ACCEPTED, REVIEW]).message(
        "FRDF", "step1", "g001", "LSSTCam/runs/DRP/test/step1/g001/20261126T1000"
    )
    lines = text.splitlines()
    assert lines[0] == (
        "site FRDF step step1 group g001: 3 failed quanta (1 transient, 1 accepted, "
        "1 review); output run LSSTCam/runs/DRP/test/step1/g001/20261126T1000"
    )
    # Review first: the one a person must look at is never cut off the list.
    assert (
        lines[1] == "  [review] makeObjectTable {instrument: LSSTCam, visit: 2025120100042, "
        "detector: 94}: KeyError: 'coord_ra' [exit 1] (no rule matched)"
    )
    assert lines[2].startswith(
        "  [accepted] calibrateImage {instrument: LSSTCam, visit: "
        "2025120100042, detector: 94}: RuntimeError: PSF fit failed"
    )
    assert lines[2].endswith("(rule single-frame-psf-or-sources)")
    assert lines[3] == "  [transient] isr {visit: 7, detector: 1}: failure: [exit -9] (rule killed-sigkill)"
    todo = text.split("What to do:\n", 1)[1]
    assert [line.split(" (")[0].strip() for line in todo.splitlines() if not line.startswith("    ")] == [
        "transient",
        "accepted",
        "review",
    ]
    assert "rule killed-sigkill: killed by SIGKILL, usually out of memory" in todo
    assert "configs/failure-rules.yaml" in todo


def test_message_says_only_what_applies(rules):
    text = rules.classify([ACCEPTED]).message("UKDF", "step1", "g000", "run")
    assert "1 failed quantum (1 accepted)" in text
    todo = text.split("What to do:\n", 1)[1]
    assert todo.startswith("  accepted (1): known data problems")
    assert "transient" not in todo and "review" not in todo


def test_message_truncates_the_list(rules):
    failed = [dict(SIGTERM, data_id={"visit": 100 + i, "detector": i}) for i in range(25)]
    text = rules.classify(failed).message("USDF", "step1", "g000", "run")
    listed = [line for line in text.splitlines() if line.startswith("  [transient]")]
    assert len(listed) == 20
    assert "{visit: 119, detector: 19}" in text and "{visit: 120, detector: 20}" not in text
    assert "  ... and 5 more" in text
    short = rules.classify(failed).message("USDF", "step1", "g000", "run", limit=3)
    assert "  ... and 22 more" in short
    assert "... and" not in rules.classify(failed[:20]).message("USDF", "step1", "g000", "run")


def test_message_cuts_long_errors_to_one_line(rules):
    error = "RuntimeError: " + "x" * 1000 + "\nTraceback line"
    [line] = [
        ln
        for ln in rules.classify([quantum("makeObjectTable", error)])
        .message("USDF", "step5", "g000", "run")
        .splitlines()
        if ln.startswith("  [review]")
    ]
    assert "x" * 200 in line and "x" * 400 not in line and "Traceback" not in line


def test_as_xcom_is_small_and_json(rules):
    failed = [dict(SIGTERM, data_id={"visit": i, "detector": 1}) for i in range(30)] + [REVIEW]
    xcom = rules.classify(failed).as_xcom()
    assert json.loads(json.dumps(xcom)) == xcom
    assert xcom["counts"] == {"transient": 30, "accepted": 0, "review": 1}
    assert len(xcom["failures"]) == 20 and xcom["more"] == 11
    assert xcom["failures"][0] == {
        "task": "makeObjectTable",
        "data_id": REVIEW["data_id"],
        "class": "review",
        "rule": None,
        "error": "KeyError: 'coord_ra'",
        "exit_code": 1,
    }
    assert xcom["failures"][1]["rule"] == "killed-sigterm"


# --- bad rules files ---------------------------------------------------------------------------


def _set(index: int, **changes: Any) -> Callable[[dict], None]:
    def edit(document: dict) -> None:
        document["rules"][index].update(changes)

    return edit


def _drop(index: int, *keys: str) -> Callable[[dict], None]:
    def edit(document: dict) -> None:
        for key in keys:
            del document["rules"][index][key]

    return edit


def _index(name: str) -> int:
    return next(i for i, rule in enumerate(SHIPPED["rules"]) if rule["name"] == name)


NET, SIGKILL_RULE, PSF = _index("network-or-storage"), _index("killed-sigkill"), _index("single-frame-psf-or-sources")


@pytest.mark.parametrize(
    ("edit", "key_path", "rule", "fragments"),
    [
        (
            _set(NET, error="Timeout|(Connection reset"),
            f"rules[{NET}].error",
            "network-or-storage",
            ["invalid regular expression", "missing ), unterminated subpattern", "fix it"],
        ),
        (
            _set(PSF, **{"class": "known"}),
            f"rules[{PSF}].class",
            "single-frame-psf-or-sources",
            ["'known' (a string) is not allowed", "'transient', 'accepted' or 'review'"],
        ),
        (
            _set(SIGKILL_RULE, max_retries=0),
            f"rules[{SIGKILL_RULE}].max_retries",
            "killed-sigkill",
            ["must be greater than 0", "set a positive value"],
        ),
        (
            _set(SIGKILL_RULE, max_retries=-1),
            f"rules[{SIGKILL_RULE}].max_retries",
            "killed-sigkill",
            ["must be greater than 0"],
        ),
        (
            _set(SIGKILL_RULE, max_retries="twice"),
            f"rules[{SIGKILL_RULE}].max_retries",
            "killed-sigkill",
            ["expected a whole number", "'twice'"],
        ),
        (
            _set(PSF, max_retries=3),
            f"rules[{PSF}].max_retries",
            "single-frame-psf-or-sources",
            ["only transient rules are retried", "this one is accepted"],
        ),
        (
            _drop(NET, "error"),
            f"rules[{NET}]",
            "network-or-storage",
            ["no match criteria", "error, exit_codes, tasks, statuses"],
        ),
        (
            _set(NET, retries=3),
            f"rules[{NET}].retries",
            "network-or-storage",
            [
                "unknown key 'retries'",
                "allowed keys here: name, class, error, exit_codes, tasks, statuses, max_retries, note",
            ],
        ),
        (_set(NET, exit_codes="137"), f"rules[{NET}].exit_codes", "network-or-storage", ["expected a list"]),
        (
            _set(NET, exit_codes=[]),
            f"rules[{NET}].exit_codes",
            "network-or-storage",
            ["empty list", "can match nothing"],
        ),
        (
            _set(NET, name="killed-sigkill"),
            f"rules[{NET}].name",
            "killed-sigkill",
            [f"already used by rules[{SIGKILL_RULE}]"],
        ),
        (
            _drop(PSF, "class"),
            f"rules[{PSF}].class",
            "single-frame-psf-or-sources",
            ["required key 'class' is missing"],
        ),
        (_drop(PSF, "name"), f"rules[{PSF}].name", "unnamed rule", ["required key 'name' is missing"]),
    ],
)
def test_bad_rule_is_refused_naming_file_rule_and_key(tmp_path, edit, key_path, rule, fragments):
    document = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    edit(document)
    path = write_rules(tmp_path, document)
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    error = caught.value
    assert (error.file, error.key_path) == (str(path), key_path)
    label = "unnamed rule" if rule == "unnamed rule" else f"rule {rule!r}"
    assert error.problem.startswith(f"{label}: ")
    for fragment in fragments:
        assert fragment in error.problem
    assert str(error).startswith(f"{path}: {key_path}: {label}: ")


@pytest.mark.parametrize(
    ("document", "key_path", "fragment"),
    [
        ({"rules": []}, "rules", "must have at least 1 entry"),
        ({"default_max_retries": 2}, "rules", "required key 'rules' is missing"),
        ({"default_max_retries": 0, "rules": SHIPPED["rules"]}, "default_max_retries", "must be greater than 0"),
        (
            {"rules": SHIPPED["rules"], "fallback": "review"},
            "fallback",
            "unknown key 'fallback'; allowed keys here: default_max_retries, rules",
        ),
        ({"rules": {"oom": {"class": "transient"}}}, "rules", "expected a list"),
        (["not", "a", "mapping"], "<root>", "expected a mapping of keys"),
    ],
)
def test_bad_file_is_refused(tmp_path, document, key_path, fragment):
    path = write_rules(tmp_path, document)
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert (caught.value.file, caught.value.key_path) == (str(path), key_path)
    assert fragment in caught.value.problem


def test_missing_file_and_bad_yaml_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="file does not exist"):
        load_rules(tmp_path / "nope.yaml")
    path = tmp_path / "dup.yaml"
    path.write_text("rules:\n  - {name: a, class: review, error: x}\nrules: []\n")
    with pytest.raises(ConfigError, match=r"line 3, column 1: invalid YAML: duplicate key 'rules'"):
        load_rules(path)


# --- where it may be imported ------------------------------------------------------------------


@pytest.mark.parametrize(
    "python", [Path(sys.executable), settings.stack_prefix() / "bin" / "python"], ids=["controller", "stack"]
)
def test_imports_without_airflow_or_the_stack(python):
    if not python.exists():
        pytest.skip(f"{python} is not built")
    code = (
        "import sys, drp_campaign.failures as f; f.load_rules(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'airflow', 'lsst'}))"
    )
    out = subprocess.run(
        [str(python), "-c", code], cwd=settings.PROJECT_ROOT, check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"
