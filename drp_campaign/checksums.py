"""File checksums as Rucio keeps them: adler32, 8 lowercase hex digits."""

from __future__ import annotations

import zlib
from pathlib import Path

_CHUNK = 4 * 1024 * 1024


def adler32(path: str | Path) -> str:
    value = 1
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            value = zlib.adler32(chunk, value)
    return f"{value & 0xFFFFFFFF:08x}"
