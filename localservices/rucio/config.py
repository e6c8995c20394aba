"""Where the local Rucio keeps its state, and the config files it needs (rucio.cfg, alembic.ini).

All under `$DRP_WORK_DIR/rucio/` (`LocalRucio.home`):

    rucio.cfg          server + daemons config (RUCIO_CONFIG of gunicorn and the daemons); 0600
    alembic.ini        what rucio.cfg `[alembic] cfg` points at (schema stamping at bootstrap)
    client.cfg         a rucio-clients config for the controller account (RUCIO_CONFIG for the
                       `rucio` CLI or `rucio.client.Client()` without arguments); 0600
    connection.json    the same as JSON: rucio_host, auth_host, account, auth_type, username,
                       password, vo (what an Airflow Connection for the Rucio hook needs); 0600
    secrets.json       passwords generated once for root and the controller account; 0600
    logs/ pids/        gunicorn and daemon logs and pid files (scripts/rucio-server.sh)
    transfers/         results of the local transfertool, one JSON file per submitted job
    tokens/            auth token cache of the clients configured here

Settings come from the environment (scripts/env.sh): DRP_WORK_DIR, DRP_RUCIO_PORT (8080),
DRP_RUCIO_DB (drp_rucio), DRP_PG_HOST (127.0.0.1), DRP_PG_USER (postgres).

This module does not import rucio: it can be used before RUCIO_CONFIG is set.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from drp_campaign import settings
from localservices.files import ini_text, write_private
from localservices.rucio import CONTROLLER_ACCOUNT, TRANSFERTOOL_NAME

DEFAULT_VO = "def"


@dataclass(frozen=True)
class LocalRucio:
    home: Path
    port: int
    db: str
    pg_host: str
    pg_user: str

    @classmethod
    def from_env(cls) -> LocalRucio:
        return cls(
            home=settings.local_rucio_home(),
            port=int(os.environ.get("DRP_RUCIO_PORT") or 8080),
            db=os.environ.get("DRP_RUCIO_DB") or "drp_rucio",
            pg_host=os.environ.get("DRP_PG_HOST") or "127.0.0.1",
            pg_user=os.environ.get("DRP_PG_USER") or "postgres",
        )

    # --- paths and URLs ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_url(self) -> str:
        return f"postgresql+psycopg://{self.pg_user}@{self.pg_host}:5432/{self.db}"

    @property
    def server_cfg(self) -> Path:
        return self.home / "rucio.cfg"

    @property
    def alembic_ini(self) -> Path:
        return self.home / "alembic.ini"

    @property
    def client_cfg(self) -> Path:
        return self.home / "client.cfg"

    @property
    def connection_json(self) -> Path:
        return self.home / "connection.json"

    @property
    def secrets_json(self) -> Path:
        return self.home / "secrets.json"

    @property
    def transfers_dir(self) -> Path:
        return self.home / "transfers"

    # --- secrets -----------------------------------------------------------------------------
    def passwords(self) -> dict[str, str]:
        """{"root": ..., "drp": ...}, generated on first use and kept in secrets.json."""
        if self.secrets_json.is_file():
            stored = json.loads(self.secrets_json.read_text())
            if {"root", CONTROLLER_ACCOUNT} <= stored.keys():
                return stored
        stored = {"root": secrets.token_urlsafe(18), CONTROLLER_ACCOUNT: secrets.token_urlsafe(18)}
        write_private(self.secrets_json, json.dumps(stored, indent=1) + "\n")
        return stored

    def connection(self) -> dict[str, str]:
        """What a client of the controller account needs (see connection.json)."""
        return {
            "rucio_host": self.url,
            "auth_host": self.url,
            "account": CONTROLLER_ACCOUNT,
            "auth_type": "userpass",
            "username": CONTROLLER_ACCOUNT,
            "password": self.passwords()[CONTROLLER_ACCOUNT],
            "vo": DEFAULT_VO,
            "client_config": str(self.client_cfg),
        }

    # --- writing the files -------------------------------------------------------------------
    def write_configs(self) -> None:
        """(Re)write rucio.cfg, alembic.ini, client.cfg and connection.json; cheap and idempotent."""
        for sub in ("logs", "pids", "transfers", "tokens"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        pw = self.passwords()
        write_private(self.server_cfg, ini_text(self._server_sections(pw)))
        self.alembic_ini.write_text(ini_text(self._alembic_sections()))
        write_private(self.client_cfg, ini_text(self._client_sections(pw)))
        write_private(self.connection_json, json.dumps(self.connection(), indent=1) + "\n")

    def _server_sections(self, pw: dict[str, str]) -> dict[str, dict[str, str]]:
        return {
            # No `multi_vo` key at all: create_root_account reads it with bool(str), so even
            # "False" would make it create `super_root` instead of `root`.
            "common": {"logdir": str(self.home / "logs"), "loglevel": "INFO"},
            # The root account's client settings: for `rucio-admin` with RUCIO_CONFIG=rucio.cfg.
            "client": {
                "rucio_host": self.url,
                "auth_host": self.url,
                "auth_type": "userpass",
                "username": "root",
                "password": pw["root"],
                "account": "root",
                "request_retries": "2",
                "auth_token_file_path": str(self.home / "tokens" / "root" / "token"),
            },
            "database": {
                "default": self.db_url,
                "pool_size": "5",
                "max_overflow": "5",
                "pool_reset_on_return": "rollback",
                "echo": "0",
            },
            # Read by rucio.db.sqla.util.create_root_account (tools/bootstrap.py).
            "bootstrap": {"userpass_identity": "root", "userpass_pwd": pw["root"], "userpass_email": "root@localhost"},
            "alembic": {"cfg": str(self.alembic_ini)},
            "policy": {
                "permission": "generic",
                "schema": "generic",
                "lfn2pfn_module": "localservices.rucio.lfn2pfn",
                "lfn2pfn_algorithm_default": "hash",
                "support": "local demo",
                "support_rucio": "https://github.com/rucio/rucio/issues",
            },
            "conveyor": {
                "transfertool": TRANSFERTOOL_NAME,
                "scheme": "file",
                "local_transfer_dir": str(self.transfers_dir),
            },
            # No memcached for this server: point at a port nothing listens on, so a memcached
            # that appears on 11211 one day is never shared between a test and a demo server.
            "cache": {"url": "127.0.0.1:1"},
            "monitor": {"enable_metrics": "False"},
            "messaging-hermes": {"send_email": "False"},
        }

    def _alembic_sections(self) -> dict[str, dict[str, str]]:
        import importlib.util

        spec = importlib.util.find_spec("rucio")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"the rucio server package is not importable by {sys.executable}")
        rucio_dir = Path(list(spec.submodule_search_locations)[0])
        # The template's [alembic] section (rucio etc/alembic.ini.template) and its logging
        # sections, which migrate_repo/env.py hands to logging.config.fileConfig (which reads
        # them raw: single % signs, as in the template). No version_table_schema: the tables
        # live in the database's default schema, as rucio.cfg sets no [database] schema.
        return {
            "alembic": {
                "sqlalchemy.url": self.db_url,
                "script_location": str(rucio_dir / "db" / "sqla" / "migrate_repo") + "/",
            },
            "loggers": {"keys": "root,sqlalchemy,alembic"},
            "handlers": {"keys": "console"},
            "formatters": {"keys": "generic"},
            "logger_root": {"level": "WARN", "handlers": "console", "qualname": ""},
            "logger_sqlalchemy": {"level": "WARN", "handlers": "", "qualname": "sqlalchemy.engine"},
            "logger_alembic": {"level": "INFO", "handlers": "", "qualname": "alembic"},
            "handler_console": {
                "class": "StreamHandler",
                "args": "(sys.stderr,)",
                "level": "NOTSET",
                "formatter": "generic",
            },
            "formatter_generic": {"format": "%(levelname)-5.5s [%(name)s] %(message)s", "datefmt": "%H:%M:%S"},
        }

    def _client_sections(self, pw: dict[str, str]) -> dict[str, dict[str, str]]:
        return {
            "common": {"logdir": str(self.home / "logs"), "loglevel": "INFO"},
            "client": {
                "rucio_host": self.url,
                "auth_host": self.url,
                "auth_type": "userpass",
                "username": CONTROLLER_ACCOUNT,
                "password": pw[CONTROLLER_ACCOUNT],
                "account": CONTROLLER_ACCOUNT,
                "vo": DEFAULT_VO,
                "request_retries": "2",
                "auth_token_file_path": str(self.home / "tokens" / CONTROLLER_ACCOUNT / "token"),
            },
        }


def main(argv: list[str] | None = None) -> int:
    """`python -m localservices.rucio.config [write|connection]`."""
    args = sys.argv[1:] if argv is None else argv
    local = LocalRucio.from_env()
    if not args or args[0] == "write":
        local.write_configs()
        print(local.server_cfg)
    elif args[0] == "connection":
        print(json.dumps(local.connection(), indent=1))
    else:
        print("usage: python -m localservices.rucio.config [write|connection]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
