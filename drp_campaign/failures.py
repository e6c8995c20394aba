"""Failure classification: what to do with the failed quanta of a step run (issue #4, item 3).
(Faults injected on purpose, for drills and tests, come from drills.py.)

When a (site, step, group) run ends with failed quanta, each failed quantum's error
("ExceptionClass: message"), exit code, task label and status are matched against the rules of
`configs/failure-rules.yaml`, in file order; the first rule that matches gives its class:

* ``transient``: the node, network or a shared service failed, not the data; the task is retried
  automatically, at most the rule's ``max_retries`` times;
* ``accepted``: a known data problem; recorded and counted in the campaign report, the campaign
  goes on without those quanta;
* ``review``: everything else (and every error no rule matches); the task fails for a person.

`Classification.verdict` turns the classes into one decision for the task: "retry", "accept" or
"fail"; `Classification.message` is the text the failed task shows.

Pure Python (pydantic, re, yaml): imported by the controller and the stack side alike, and by
DAG files, so no Airflow, no LSST stack, no I/O beyond reading the rules file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from pydantic import Field

from drp_campaign import settings
from drp_campaign.config import (
    ConfigError,
    ConfigModel,
    absolute_path,
    name_list,
    read_mapping,
    validate_mapping,
)

__all__ = [
    "DEFAULT_RULES_FILE",
    "Classification",
    "ClassifiedFailure",
    "FailureClass",
    "FailureRule",
    "FailureRules",
    "format_data_id",
    "load_rules",
]

DEFAULT_RULES_FILE = settings.CONFIGS_DIR / "failure-rules.yaml"

FailureClass = Literal["transient", "accepted", "review"]
CLASSES: tuple[str, ...] = get_args(FailureClass)
VERDICTS = ("retry", "accept", "fail")
# How many failed quanta a message or an XCom lists; the rest are counted.
LIST_LIMIT = 20
ERROR_CHARS = 300  # an error is cut to this many characters where it is listed
MATCH_KEYS = ("error", "exit_codes", "tasks", "statuses")

# What the operator should do, per class, at the end of a failure message.
ACTIONS: dict[str, str] = {
    "transient": "infrastructure failures (memory, signals, database, network, timeouts): the "
    "task is retried automatically, redoing only the failed quanta, as long as no "
    "failure needs review and the rules' max_retries allow; if they persist, check the "
    "site's health and the resources the step asks for (bps.request_memory_mb), then "
    "clear the task",
    "accepted": "known data problems: recorded and counted in the campaign report; the campaign "
    "goes on without these quanta; nothing to do unless there are unexpectedly many",
    "review": "unknown or non-retryable errors: read the pipetask log, fix the cause and clear the "
    "task (the retry redoes only the failed quanta); if it is a known data problem, add "
    "a rule of class accepted to configs/failure-rules.yaml",
}


# --- the rules file ----------------------------------------------------------------------------


class FailureRule(ConfigModel):
    """One rule: a name, a class, and criteria that must ALL hold for a failed quantum."""

    name: str
    # `class` is a Python keyword, so the field is declared through the annotations dict (the YAML
    # key and error messages read `class`); read it as `rule.failure_class`.
    __annotations__["class"] = FailureClass
    error: str | None = None  # regular expression, searched in "ExceptionClass: message"
    exit_codes: list[int] | None = None
    tasks: list[str] | None = None  # task labels
    statuses: list[str] | None = None  # quantum status from the summary: failure, timeout
    max_retries: int | None = Field(default=None, gt=0)  # transient only; else the file default
    note: str = ""  # shown to the operator with the rule's failures

    @property
    def failure_class(self) -> str:
        return getattr(self, "class")

    def matches(self, quantum: Mapping[str, Any]) -> bool:
        """True when every criterion the rule sets holds for the quantum."""
        if self.tasks is not None and quantum.get("task") not in self.tasks:
            return False
        if self.statuses is not None and quantum.get("status") not in self.statuses:
            return False
        if self.exit_codes is not None and quantum.get("exit_code") not in self.exit_codes:
            return False
        if self.error is not None and not re.search(self.error, str(quantum.get("error") or "")):
            return False
        return True


class FailureRules(ConfigModel):
    """The rules file, checked; `classify` applies it to a run's failed quanta."""

    loader_filled: ClassVar[frozenset[str]] = frozenset({"file"})

    file: Path = Field(strict=False)
    default_max_retries: int = Field(default=2, gt=0)
    rules: list[FailureRule] = Field(min_length=1)

    def retries_for(self, rule: FailureRule) -> int | None:
        """How often a failure of this rule may be retried (None: not retried)."""
        if rule.failure_class != "transient":
            return None
        return self.default_max_retries if rule.max_retries is None else rule.max_retries

    def match(self, quantum: Mapping[str, Any]) -> FailureRule | None:
        """The first rule that matches the quantum, or None."""
        return next((rule for rule in self.rules if rule.matches(quantum)), None)

    def classify(self, failed_quanta: Iterable[Mapping[str, Any]]) -> Classification:
        """Classify each failed quantum (keys task, data_id, error, exit_code, status)."""
        results = []
        for quantum in failed_quanta:
            rule = self.match(quantum)
            results.append(
                ClassifiedFailure(
                    quantum=dict(quantum),
                    rule=rule.name if rule else None,
                    failure_class=rule.failure_class if rule else "review",
                    max_retries=self.retries_for(rule) if rule else None,
                    note=rule.note if rule else "",
                )
            )
        return Classification(results)


def load_rules(path: Path | None = None) -> FailureRules:
    """Load and check a rules file (default: configs/failure-rules.yaml).

    Raises `ConfigError` naming the file, the rule (index and name), the key and what to do.
    """
    file = absolute_path(DEFAULT_RULES_FILE if path is None else path)
    raw = read_mapping(file)
    try:
        rules = validate_mapping(FailureRules, raw, file, {"file": file})
        _check_rules(rules)
    except ConfigError as exc:
        raise _with_rule_name(exc, raw) from None
    return rules


def _check_rules(rules: FailureRules) -> None:
    """What the models cannot say: criteria present, regexes valid, retries where they belong."""
    file = rules.file
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules.rules):
        where = f"rules[{i}]"
        if rule.name in seen:
            raise ConfigError(
                file,
                f"{where}.name",
                f"rule name {rule.name!r} is already used by rules[{seen[rule.name]}]; give each rule its own name",
            )
        seen[rule.name] = i
        if all(getattr(rule, key) is None for key in MATCH_KEYS):
            raise ConfigError(
                file,
                where,
                f"the rule has no match criteria, so it would match "
                f"every failure; add at least one of: {name_list(MATCH_KEYS)}",
            )
        for key in ("exit_codes", "tasks", "statuses"):
            if getattr(rule, key) == []:
                raise ConfigError(
                    file, f"{where}.{key}", f"empty list: it can match nothing; list at least one value or remove {key}"
                )
        if rule.error is not None:
            try:
                re.compile(rule.error)
            except re.error as err:
                raise ConfigError(
                    file,
                    f"{where}.error",
                    f"invalid regular expression "
                    f"{rule.error!r}: {err}; fix it (Python `re` syntax; in YAML, "
                    "single-quote it so backslashes stay as written)",
                ) from None
        if rule.max_retries is not None and rule.failure_class != "transient":
            raise ConfigError(
                file,
                f"{where}.max_retries",
                f"only transient rules are retried, "
                f"this one is {rule.failure_class}; remove max_retries or make the "
                "rule class: transient",
            )


_RULE_PATH = re.compile(r"^rules\[(\d+)\]")


def _with_rule_name(exc: ConfigError, raw: dict[str, Any]) -> ConfigError:
    """Name the rule an error is in (its index is in the key path) so the operator finds it."""
    found = _RULE_PATH.match(exc.key_path)
    rules = raw.get("rules")
    if not found or not isinstance(rules, list) or int(found.group(1)) >= len(rules):
        return exc
    entry = rules[int(found.group(1))]
    name = entry.get("name") if isinstance(entry, dict) else None
    label = f"rule {name!r}" if isinstance(name, str) else "unnamed rule"
    return ConfigError(exc.file, exc.key_path, f"{label}: {exc.problem}")


# --- classification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifiedFailure:
    """One failed quantum with the rule that matched it (None: no rule) and its class."""

    quantum: dict[str, Any]
    rule: str | None
    failure_class: str
    max_retries: int | None = None  # transient only
    note: str = ""

    def line(self) -> str:
        """`[class] task data_id: error (rule name)`, one line."""
        error = _cut(str(self.quantum.get("error") or "(no error reported)"))
        exit_code = self.quantum.get("exit_code")
        code = f" [exit {exit_code}]" if exit_code not in (None, 0) else ""
        rule = f"rule {self.rule}" if self.rule else "no rule matched"
        return (
            f"[{self.failure_class}] {self.quantum.get('task')} "
            f"{format_data_id(self.quantum.get('data_id'))}: {error}{code} ({rule})"
        )

    def as_xcom(self) -> dict[str, Any]:
        return {
            "task": self.quantum.get("task"),
            "data_id": _jsonable(self.quantum.get("data_id")),
            "class": self.failure_class,
            "rule": self.rule,
            "error": _cut(str(self.quantum.get("error") or "")),
            "exit_code": self.quantum.get("exit_code"),
        }


class Classification:
    """The classified failed quanta of one run, and what the task should do about them."""

    def __init__(self, results: list[ClassifiedFailure]) -> None:
        self.results = list(results)

    def __len__(self) -> int:
        return len(self.results)

    def _of(self, failure_class: str) -> list[ClassifiedFailure]:
        return [result for result in self.results if result.failure_class == failure_class]

    @property
    def transient(self) -> list[ClassifiedFailure]:
        return self._of("transient")

    @property
    def accepted(self) -> list[ClassifiedFailure]:
        return self._of("accepted")

    @property
    def review(self) -> list[ClassifiedFailure]:
        return self._of("review")

    def counts(self) -> dict[str, int]:
        return {failure_class: len(self._of(failure_class)) for failure_class in CLASSES}

    def retries_left(self, attempts_so_far: int) -> int:
        """Retries left for the transient failures: the smallest max_retries among their rules."""
        limits = [result.max_retries or 0 for result in self.transient]
        return max(0, min(limits) - attempts_so_far) if limits else 0

    def retry_allowed(self, attempts_so_far: int) -> bool:
        """Nothing needs review, something is transient, and its rules allow another attempt.

        `attempts_so_far` is how many times the run was already retried (0 after the first run).
        """
        return not self.review and bool(self.transient) and self.retries_left(attempts_so_far) > 0

    def failing_class(self) -> str:
        """The class that fails the task when the verdict is 'fail': review if any quantum needs it,
        else transient (retries used up)."""
        return "review" if self.review or not self.transient else "transient"

    def verdict(self, attempts_so_far: int) -> str:
        """'retry', 'accept' (every failure accepted, or none failed) or 'fail'."""
        if self.retry_allowed(attempts_so_far):
            return "retry"
        if len(self.accepted) == len(self.results):
            return "accept"
        return "fail"

    def message(self, site: str, step: str, group: str, output_run: str, limit: int = LIST_LIMIT) -> str:
        """The failed quanta (at most `limit` listed, review first) and what to do per class."""
        counts = self.counts()
        shown = ", ".join(f"{counts[c]} {c}" for c in CLASSES if counts[c]) or "none"
        lines = [
            f"site {site} step {step} group {group}: {len(self.results)} failed "
            f"quant{'um' if len(self.results) == 1 else 'a'} ({shown}); output run {output_run}"
        ]
        ordered = [result for c in reversed(CLASSES) for result in self._of(c)]
        lines += [f"  {result.line()}" for result in ordered[:limit]]
        if len(ordered) > limit:
            lines.append(f"  ... and {len(ordered) - limit} more")
        lines.append("What to do:")
        for failure_class in CLASSES:
            if counts[failure_class]:
                lines.append(f"  {failure_class} ({counts[failure_class]}): {ACTIONS[failure_class]}")
                notes = dict.fromkeys((r.rule, r.note) for r in self._of(failure_class) if r.note)
                lines += [f"    rule {rule}: {note}" for rule, note in notes]
        return "\n".join(lines)

    def as_xcom(self, limit: int = LIST_LIMIT) -> dict[str, Any]:
        """Counts and at most `limit` entries (review first), small and JSON-able."""
        ordered = [result for c in reversed(CLASSES) for result in self._of(c)]
        return {
            "counts": self.counts(),
            "failures": [result.as_xcom() for result in ordered[:limit]],
            "more": max(0, len(ordered) - limit),
        }


def format_data_id(data_id: Any) -> str:
    """{'visit': 12, 'detector': 3} -> '{visit: 12, detector: 3}' (as Butler prints them)."""
    if isinstance(data_id, Mapping):
        return "{" + ", ".join(f"{key}: {value}" for key, value in data_id.items()) + "}"
    return "{}" if data_id is None else str(data_id)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
