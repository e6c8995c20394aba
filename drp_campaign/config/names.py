"""The safe-name table: what a name or value that reaches a shell, a query or a path may look like.

Each `NameRule` says its characters and length in words, for the message. The field types at the
end (`RunPrefix`, `QueryWord`, ...) apply one rule to a model field and say why it holds there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator

from .errors import KeyProblem, clip


@dataclass(frozen=True)
class NameRule:
    """What a name or value that reaches a shell, a query or a path may look like.

    Checked with `fullmatch` (`re.match` with `$` accepts a trailing newline). The characters
    allowed are safe unquoted in a shell word, in a Butler query and in a file path; a part may
    not start with '.', so no `..` either."""

    pattern: re.Pattern[str]
    max_length: int
    allowed: str  # the pattern in words, for the message
    example: str

    def accepts(self, value: str) -> bool:
        return len(value) <= self.max_length and self.pattern.fullmatch(value) is not None

    def problem(self, value: str, why: str, refused: str = "may use only") -> str:
        """Why VALUE is refused, and what to write instead (empty when it is accepted)."""
        if self.accepts(value):
            return ""
        shown = "is empty; use" if not value else f"{clip(value)} {refused}"
        return f"{shown} {self.allowed}, at most {self.max_length} characters ({why}); e.g. {self.example!r}"


_WORD = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
# Campaign names become the Airflow DAG id and part of every BPS run name.
CAMPAIGN_NAME = NameRule(
    re.compile(r"[a-z0-9][a-z0-9-]*"),
    64,
    "lowercase letters, digits and '-', starting with a letter or digit",
    "test-3x3",
)
# Site, step, hop and IDAC names become parts of Airflow task ids (`site.step.group`) and RUNs.
NODE_NAME = NameRule(
    re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*"),
    64,
    "letters, digits, '_' and '-', starting with a letter or digit",
    "UKDF_RAL",
)
# Skymap, instrument, stack version, queue names: single words in queries and commands.
WORD = NameRule(
    re.compile(_WORD), 64, "letters, digits, '_', '.' and '-', starting with a letter or digit", "drp_mock_rings"
)
# Collections (and the prefix of every RUN): '/'-separated words, no empty or '..' part.
COLLECTION = NameRule(
    re.compile(rf"{_WORD}(?:/{_WORD})*"),
    128,
    "words of letters, digits, '_', '.' and '-' separated by '/', each starting with a letter or digit",
    "drp/test-3x3",
)
# Dataset types, task labels, dimensions: Python-identifier-like, as the Butler has them.
IDENTIFIER = NameRule(
    re.compile(r"[A-Za-z_][A-Za-z0-9_]*"), 64, "letters, digits and '_', not starting with a digit", "deep_coadd"
)
# Rucio's own RSE name rule.
RSE_NAME = NameRule(
    re.compile(r"[A-Z0-9]+(?:[_-][A-Z0-9]+)*"),
    64,
    "upper-case letters and digits joined by '_' or '-' (Rucio's RSE names)",
    "USDF_DISK",
)
# A Rucio activity (an FTS share) names a kind of transfer in words.
ACTIVITY = NameRule(
    re.compile(r"[A-Za-z0-9][A-Za-z0-9 _-]*"), 64, "letters, digits, spaces, '_' and '-'", "User Subscriptions"
)
# A repo path: safe characters and $VAR / ${VAR} references (expanded when a task runs there).
_VAR = r"[A-Za-z_][A-Za-z0-9_]*"
PATH_TEMPLATE = NameRule(
    re.compile(rf"(?:[A-Za-z0-9_.@%+=:,/-]|\${_VAR}|\$\{{{_VAR}\}})+"),
    256,
    "letters, digits, '_.@%+=:,/-' and $VAR or ${VAR}",
    "$DRP_WORK_DIR/repos/USDF",
)
# Where PanDA jobs fetch the quantum graph: BPS pastes it unquoted in front of the graph's path.
URL_DIRECTORY = NameRule(
    re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9_.@%+=:,/-]*/"),
    256,
    "a URL ending in '/' of letters, digits and '_.@%+=:,/-'",
    "s3://rubin-usdf-panda/qgraphs/",
)
# Display text (a facility's name): one line.
LABEL = NameRule(re.compile(r"[^\x00-\x1f\x7f-\x9f]+"), 100, "printable characters on one line", "CC-IN2P3")


def _checked(rule: NameRule, why: str) -> Any:
    """A string field type that refuses what RULE does not accept, saying why the rule holds here."""

    def check(value: str) -> str:
        problem = rule.problem(value, why)
        if problem:
            raise KeyProblem((), problem)
        return value

    return Annotated[str, AfterValidator(check)]


IN_TASK_IDS = "it becomes part of Airflow task ids and RUN collection names"
IN_GRAPHS = "it names datasets and quanta in file names, data queries and commands"
IN_RUNS = "it starts every RUN collection name, which becomes part of file names and of commands"
IN_COMMANDS = "it is passed to pipetask and BPS commands"
IN_QUERIES = "it is used in data queries and commands"
RunPrefix = _checked(COLLECTION, IN_RUNS)
CollectionName = _checked(COLLECTION, IN_COMMANDS)
QueryWord = _checked(WORD, IN_QUERIES)
CommandWord = _checked(WORD, "it is used in commands and batch-system requests")
Identifier = _checked(IDENTIFIER, IN_GRAPHS)
RseName = _checked(RSE_NAME, "Rucio refuses other RSE names")
ActivityName = _checked(ACTIVITY, "it is a Rucio activity")
RepoPath = _checked(PATH_TEMPLATE, "BPS pastes it unquoted into the commands of every job")
UrlDirectory = _checked(URL_DIRECTORY, "BPS pastes it unquoted into the commands of every job")
Label = _checked(LABEL, "it is shown in the UI and the report")
