"""Where the local iDDS and the PanDA relay keep their state, and the files they need.

All under `$DRP_WORK_DIR/idds/` (`LocalIdds.home`), rewritten by every start (cheap):

    idds.cfg          iDDS server config ($IDDS_CONFIG): database, REST host, log dir
    auth.cfg          iDDS auth config ($IDDS_AUTH_CONFIG): allowed VO, allow_users/super_users
    alembic.ini       what build_database stamps the schema with ($ALEMBIC_CONFIG)
    secrets.json      generated once, 0600: the bearer token of the controller's user, and the
                      key the relay shows iDDS (idds_app.py answers no one else)
    relay.json        the relay's settings: iDDS URL, its DN, token -> user, the iDDS key; 0600
    connection.json   what the Airflow Connection `drp_panda_<site>` holds for this relay
                      (see drp_campaign/panda_connection.py); 0600
    relay-proxy.pem   a placeholder: iDDS's ClientManager insists on an x509 proxy file even
                      over plain HTTP, where it is never presented (the DN goes in a header)
    client/ cache/    the relay ClientManager's local config root and request cache
    logs/ pids/       gunicorn logs and pid files (scripts/idds-server.sh)

Settings from the environment (scripts/env.sh): DRP_WORK_DIR, DRP_IDDS_PORT (8092),
DRP_PANDA_RELAY_PORT (8093), DRP_IDDS_DB (drp_idds), DRP_PG_HOST, DRP_PG_USER.
Imports nothing from iDDS.
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
from localservices.panda import RELAY_DN, RELAY_USER, USER, VO

RELAY_PATH = "/server/panda"  # PANDA_URL's path at a real PanDA server
RELAY_KEY_HEADER = "X-DRP-Relay-Key"  # the relay -> iDDS key (LocalIdds.idds_key)
SCHEMA = "doma_idds"  # lower case: PostgreSQL folds the unquoted name in iDDS's SQL


@dataclass(frozen=True)
class LocalIdds:
    home: Path
    idds_port: int
    relay_port: int
    db: str
    pg_host: str
    pg_user: str

    @classmethod
    def from_env(cls) -> LocalIdds:
        return cls(
            home=settings.work_dir() / "idds",
            idds_port=int(os.environ.get("DRP_IDDS_PORT") or 8092),
            relay_port=int(os.environ.get("DRP_PANDA_RELAY_PORT") or 8093),
            db=os.environ.get("DRP_IDDS_DB") or "drp_idds",
            pg_host=os.environ.get("DRP_PG_HOST") or "127.0.0.1",
            pg_user=os.environ.get("DRP_PG_USER") or "postgres",
        )

    # --- URLs and files ----------------------------------------------------------------------
    @property
    def idds_url(self) -> str:
        return f"http://127.0.0.1:{self.idds_port}/idds"

    @property
    def relay_url(self) -> str:
        return f"http://127.0.0.1:{self.relay_port}{RELAY_PATH}"

    @property
    def db_url(self) -> str:
        return f"postgresql+psycopg2://{self.pg_user}@{self.pg_host}:5432/{self.db}"

    def path(self, name: str) -> Path:
        return self.home / name

    def _secret(self, name: str) -> str:
        """A secret of secrets.json, generated on first use and kept there."""
        stored = self.path("secrets.json")
        kept = json.loads(stored.read_text()) if stored.is_file() else {}
        if not kept.get(name):
            kept.update({name: secrets.token_urlsafe(32), "user": USER})
            write_private(stored, json.dumps(kept, indent=1) + "\n")
        return kept[name]

    def token(self) -> str:
        """The controller user's bearer token for the relay."""
        return self._secret("token")

    def idds_key(self) -> str:
        """What the relay sends iDDS in RELAY_KEY_HEADER: iDDS's front (idds_app.py) refuses any
        request without it, so only the relay can claim RELAY_DN in the identity header."""
        return self._secret("idds_key")

    def connection(self) -> dict:
        """The Airflow Connection for this relay, in panda_connection's format."""
        return {"conn_type": "http", "host": self.relay_url, "password": self.token(), "extra": {"vo": VO}}

    def environment(self) -> dict[str, str]:
        """What iDDS's server code and the relay read (set before importing idds)."""
        return {
            "IDDS_CONFIG": str(self.path("idds.cfg")),
            "IDDS_AUTH_CONFIG": str(self.path("auth.cfg")),
            "ALEMBIC_CONFIG": str(self.path("alembic.ini")),
            "IDDS_LOCAL_CONFIG_ROOT": str(self.path("client")),
            "X509_USER_PROXY": str(self.path("relay-proxy.pem")),
            "DRP_PANDA_RELAY_CONFIG": str(self.path("relay.json")),
        }

    # --- writing the files -------------------------------------------------------------------
    def write_configs(self) -> None:
        for sub in ("logs", "pids", "client", "cache"):
            self.path(sub).mkdir(parents=True, exist_ok=True)
        self.path("idds.cfg").write_text(ini_text(self._idds_sections()))
        self.path("auth.cfg").write_text(ini_text(self._auth_sections()))
        self.path("alembic.ini").write_text(ini_text(self._alembic_sections()))
        proxy = self.path("relay-proxy.pem")
        if not proxy.exists():
            write_private(proxy, "# placeholder, see localservices/panda/config.py\n")
        relay = {
            "idds_host": self.idds_url,
            "relay_dn": RELAY_DN,
            "vo": VO,
            "tokens": {self.token(): USER},
            "idds_key": self.idds_key(),
        }
        write_private(self.path("relay.json"), json.dumps(relay, indent=1) + "\n")
        write_private(self.path("connection.json"), json.dumps(self.connection(), indent=1) + "\n")

    def _idds_sections(self) -> dict[str, dict[str, str]]:
        return {
            "common": {"logdir": str(self.path("logs")), "loglevel": "INFO", "request_cache": str(self.path("cache"))},
            # iDDS needs a named schema: its stored procedures are written as `<schema>.contents`.
            "database": {
                "default": self.db_url,
                "schema": SCHEMA,
                "pool_size": "5",
                "pool_recycle": "3600",
                "echo": "0",
                "pool_reset_on_return": "rollback",
            },
            "rest": {"host": self.idds_url, "cacher_dir": str(self.path("cache"))},
            # The one iDDS agent scripts/idds-server.sh runs (IDDS_AGENTS=clerk): it turns the
            # commands that abort/retry register into request states. Its update poll stays long
            # (iDDS's default): a request it is updating is locked, and a command that finds its
            # request locked stays unprocessed until clean_locks, minutes later.
            "main": {"agents": "clerk"},
            "eventbus": {"backend": "default"},
            "clerk": {
                "num_threads": "2",
                "max_number_workers": "4",
                "poll_period": "1",
                "new_poll_period": "1",
                "update_poll_period": "300",
                "new_command_poll_period": "1",
                "update_command_poll_period": "1",
                "retrieve_bulk_size": "32",
                "pending_time": "30",
            },
        }

    def _auth_sections(self) -> dict[str, dict[str, str]]:
        return {
            "common": {"allow_vos": VO},
            # allow_users is matched as a substring of the DN; super_users against the user
            # name iDDS derives from it (or a substring of the DN). No ban_users: an empty one bans all.
            "Users": {"allow_users": RELAY_DN, "super_users": RELAY_USER},
        }

    def _alembic_sections(self) -> dict[str, dict[str, str]]:
        # iDDS's etc/idds/alembic.ini.template with our URL and schema.
        return {
            "alembic": {
                "script_location": "idds.orm.base:alembic",
                "timezone": "UTC",
                "sqlalchemy.url": self.db_url,
                "version_table_schema": SCHEMA,
            },
            "loggers": {"keys": "root,sqlalchemy,alembic"},
            "handlers": {"keys": "console"},
            "formatters": {"keys": "generic"},
            "logger_root": {"level": "WARN", "handlers": "console", "qualname": ""},
            "logger_sqlalchemy": {"level": "WARN", "handlers": "", "qualname": "sqlalchemy.engine"},
            "logger_alembic": {"level": "WARN", "handlers": "", "qualname": "alembic"},
            "handler_console": {
                "class": "StreamHandler",
                "args": "(sys.stderr,)",
                "level": "NOTSET",
                "formatter": "generic",
            },
            "formatter_generic": {"format": "%(levelname)-5.5s [%(name)s] %(message)s", "datefmt": "%H:%M:%S"},
        }


def main(argv: list[str] | None = None) -> int:
    """`python -m localservices.panda.config [write|connection|env]`."""
    args = sys.argv[1:] if argv is None else argv
    local = LocalIdds.from_env()
    if not args or args[0] == "write":
        local.write_configs()
        print(local.path("idds.cfg"))
    elif args[0] == "connection":
        print(json.dumps(local.connection(), indent=1))
    elif args[0] == "env":  # for the shell script: export lines
        for key, value in local.environment().items():
            print(f"export {key}={value}")
    else:
        print("usage: python -m localservices.panda.config [write|connection|env]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
