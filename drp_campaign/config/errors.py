"""How a refused configuration is reported: `ConfigError`, one line that names the file, the key
path and the problem with what to do.

`KeyProblem` carries a problem from inside a pydantic validator to the key it is about; `clip`,
`one_line` and `name_list` keep each part of a message short and on one line, whatever the file held.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

# Longest parts of a message: one line, a few hundred characters, whatever the file holds.
MAX_PROBLEM_CHARS = 600
MAX_KEY_PATH_CHARS = 200
MAX_FILE_CHARS = 300


class ConfigError(ValueError):
    """A configuration file is refused: which file, where in it, what is wrong and what to do.

    Its message is one line of bounded length whatever the file held (values are clipped)."""

    def __init__(self, file: str | Path, key_path: str, problem: str) -> None:
        # args are the constructor's arguments so that the error pickles (Airflow, multiprocessing).
        super().__init__(str(file), key_path, problem)
        self.file = one_line(str(file), MAX_FILE_CHARS)
        self.key_path = one_line(key_path, MAX_KEY_PATH_CHARS)
        self.problem = one_line(problem, MAX_PROBLEM_CHARS)

    def __str__(self) -> str:
        return f"{self.file}: {self.key_path}: {self.problem}"


class KeyProblem(ValueError):
    """Raised inside a validator to report a problem at a key below the validated field."""

    def __init__(self, sub_path: tuple[str | int, ...], problem: str) -> None:
        super().__init__(problem)
        self.sub_path = sub_path
        self.problem = problem


def key_part(key: Any) -> str:
    """A mapping key as written in a key path: as is when short and printable, else clipped."""
    text = str(key) if isinstance(key, str | int | float | bool) or key is None else ""
    return text if text and len(text) <= 64 and text.isprintable() else clip(key)


# A repr bounded in time and length, however large, deep or shared the value.
_SHORT_REPR = reprlib.Repr(
    maxlevel=2,
    maxtuple=4,
    maxlist=4,
    maxarray=4,
    maxdict=4,
    maxset=4,
    maxfrozenset=4,
    maxdeque=4,
    maxstring=60,
    maxlong=40,
    maxother=60,
)


def clip(value: Any) -> str:
    """A value for a message: its repr, short and on one line."""
    return one_line(_SHORT_REPR.repr(value), 100)


def one_line(text: str, limit: int) -> str:
    """TEXT with control characters escaped, cut in the middle to at most LIMIT characters (the
    start names the problem, the end says what to do)."""
    if len(text) > 4 * limit:  # escaping below at most quadruples a character
        text = text[: 2 * limit] + text[-2 * limit :]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > limit:
        head = (limit - 5) * 2 // 3
        text = text[:head] + " ... " + text[len(text) - (limit - 5 - head) :]
    return text


def name_list(names: Any, shown: int = 12) -> str:
    """Names for a message: the first few, then how many more."""
    names = [key_part(name) for name in names]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more or "(none)"
