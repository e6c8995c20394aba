"""TransferHook: the data-movement service a hop uses ($DRP_TRANSFER_SERVICE: rucio or local)."""

from __future__ import annotations

from airflow.sdk import BaseHook

from drp_campaign.transfer import TransferService, service_kind, transfer_service

from .rucio import DEFAULT_CONN_ID, RucioHook


class TransferHook(BaseHook):
    def __init__(self, kind: str | None = None, rucio_conn_id: str = DEFAULT_CONN_ID):
        super().__init__()
        self.kind = service_kind(kind)
        self.rucio_conn_id = rucio_conn_id

    def get_service(self, activity: str = "User Subscriptions") -> TransferService:
        client = RucioHook(self.rucio_conn_id).get_conn() if self.kind == "rucio" else None
        return transfer_service(self.kind, client, activity)
