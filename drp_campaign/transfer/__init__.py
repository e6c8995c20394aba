"""Data movement between sites behind a Rucio-shaped interface (see base.py).

Two implementations: `local` (files and directories, the embedded fallback) and `rucio` (a real
Rucio server; its client comes from an Airflow Connection through hooks/rucio.py).
$DRP_TRANSFER_SERVICE picks one.
"""

from __future__ import annotations

import os

from .base import TransferService

KINDS = ("local", "rucio")


def service_kind(kind: str | None = None) -> str:
    kind = kind or os.environ.get("DRP_TRANSFER_SERVICE", "local")
    if kind not in KINDS:
        raise ValueError(
            f"unknown transfer service {kind!r} ($DRP_TRANSFER_SERVICE): the choices are: {', '.join(KINDS)}"
        )
    return kind


def transfer_service(kind: str | None = None, client=None, activity: str = "User Subscriptions") -> TransferService:
    """The service of that kind; `rucio` needs a rucio Client (the hook or trigger makes it)."""
    if service_kind(kind) == "rucio":
        from .rucio import RucioTransferService

        if client is None:
            raise ValueError("the rucio transfer service needs a client: build it with hooks.rucio.RucioHook")
        return RucioTransferService(client, activity)
    from .local import LocalTransferService

    return LocalTransferService()
