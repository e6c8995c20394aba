"""Writing the config files of the local services (rucio/config.py, panda/config.py)."""

from __future__ import annotations

import configparser
import io
import os
from pathlib import Path


def ini_text(sections: dict[str, dict[str, str]]) -> str:
    """SECTIONS as an INI file, keys as written (sqlalchemy.url, ...), under a header line."""
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # keep keys as written (sqlalchemy.url, ...)
    for name, values in sections.items():
        parser[name] = values
    buf = io.StringIO()
    parser.write(buf)
    return "# Written by localservices; rewritten on every start.\n" + buf.getvalue()


def write_private(path: Path, text: str) -> None:
    """Write TEXT to PATH readable by this user only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
