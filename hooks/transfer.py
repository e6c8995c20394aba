"""TransferHook: the data-movement service a hop uses (the local one here; Rucio in production)."""

from __future__ import annotations

import os

from airflow.sdk import BaseHook

from drp_campaign.transfer import TransferService, transfer_service


class TransferHook(BaseHook):
    def __init__(self, kind: str | None = None):
        super().__init__()
        self.kind = kind or os.environ.get("DRP_TRANSFER_SERVICE", "local")

    def get_service(self) -> TransferService:
        return transfer_service(self.kind)
