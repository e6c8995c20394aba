"""RucioHook: a rucio Client configured from an Airflow Connection, never from code.

The Connection (default id `rucio_default`): host = the Rucio server URL, login/password for
userpass, and in extra: auth_host, account, auth_type (userpass, oidc, x509), vo.
`make demo` and the tests create it from the local Rucio's connection.json.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from drp_campaign.errors import DrpError
from drp_campaign.transfer.rucio import rucio_client

DEFAULT_CONN_ID = "rucio_default"


class RucioConnectionMissing(DrpError):
    """The Airflow Connection the Rucio hook needs is not defined."""


def connection_fields(conn) -> dict[str, Any]:
    extra = conn.extra_dejson or {}
    host = conn.host or ""
    if conn.port and "://" in host and host.count(":") < 2:
        host = f"{host}:{conn.port}"
    return {
        "rucio_host": host,
        "auth_host": extra.get("auth_host") or host,
        "account": extra.get("account") or conn.login,
        "auth_type": extra.get("auth_type", "userpass"),
        "username": conn.login,
        "password": conn.password,
        "vo": extra.get("vo", "def"),
    }


def missing_connection(conn_id: str) -> RucioConnectionMissing:
    return RucioConnectionMissing(
        f"Airflow connection {conn_id!r} is not defined: add it (Admin > Connections, or "
        f'`airflow connections add {conn_id} --conn-json \'{{"conn_type": "generic", "host": "https://rucio.example", '
        '"login": "ACCOUNT", "password": "...", '
        '"extra": {"account": "ACCOUNT", "auth_type": "userpass", "vo": "def"}}\'`) '
        "and clear this task"
    )


class RucioHook(BaseHook):
    conn_name_attr = "rucio_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "generic"
    hook_name = "Rucio"

    def __init__(self, rucio_conn_id: str = DEFAULT_CONN_ID):
        super().__init__()
        self.rucio_conn_id = rucio_conn_id

    def get_conn(self):
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.rucio_conn_id)
        except AirflowNotFoundException:
            raise missing_connection(self.rucio_conn_id) from None
        fields = connection_fields(conn)
        self.log.info("Rucio %s as account %s (%s)", fields["rucio_host"], fields["account"], fields["auth_type"])
        return rucio_client(fields)
