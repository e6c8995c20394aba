"""Data movement between sites behind a Rucio-shaped interface (see base.py)."""

from __future__ import annotations

import os

from .base import TransferService


def transfer_service(kind: str | None = None) -> TransferService:
    """The service named by $DRP_TRANSFER_SERVICE (default: local)."""
    kind = kind or os.environ.get("DRP_TRANSFER_SERVICE", "local")
    if kind == "local":
        from .local import LocalTransferService

        return LocalTransferService()
    raise ValueError(f"unknown transfer service {kind!r} ($DRP_TRANSFER_SERVICE): the choices are: local")
