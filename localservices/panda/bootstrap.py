"""Bootstrap the local iDDS: config files, the PostgreSQL database, iDDS's schema.

    python -m localservices.panda.bootstrap     (in .venvs/idds; scripts/idds-server.sh start)

Idempotent and cheap when everything is there:
1. write idds.cfg / auth.cfg / alembic.ini / relay.json / connection.json (`config.LocalIdds`)
   and set IDDS_CONFIG, IDDS_AUTH_CONFIG, ALEMBIC_CONFIG before idds is imported (iDDS reads its
   config at import time);
2. create the database `$DRP_IDDS_DB` if it is missing;
3. if iDDS's tables are missing: iDDS's own `build_database()` (what its
   tools/env/create_database.py runs: the tables, then `alembic stamp head`).
Prints one JSON line: what it did and how long it took.
"""

from __future__ import annotations

import json
import os
import sys
import time

from localservices.panda.config import SCHEMA, LocalIdds


def prepare_environment(local: LocalIdds | None = None) -> LocalIdds:
    """Write the config files and export their paths; call before importing idds."""
    local = local or LocalIdds.from_env()
    local.write_configs()
    if "idds" in sys.modules and os.environ.get("IDDS_CONFIG") != str(local.path("idds.cfg")):
        raise RuntimeError("idds was imported before IDDS_CONFIG was set to " + str(local.path("idds.cfg")))
    os.environ.update(local.environment())
    return local


def ensure_database(local: LocalIdds) -> bool:
    """Create the database if it is missing; True if it was created."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(host=local.pg_host, user=local.pg_user, dbname="postgres", connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (local.db,))
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(local.db)))
            return True
    finally:
        conn.close()


def ensure_schema(local: LocalIdds) -> bool:
    """iDDS's build_database() if its tables are missing; True if it built them."""
    import psycopg2

    conn = psycopg2.connect(host=local.pg_host, user=local.pg_user, dbname=local.db, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                (f"{SCHEMA}.requests", f"{SCHEMA}.alembic_version"),
            )
            has_requests, has_version = cur.fetchone()
    finally:
        conn.close()
    if has_requests and has_version:
        return False
    if has_requests:
        raise RuntimeError(
            f"database {local.db} has iDDS tables but no alembic_version: it was not "
            "built by this bootstrap; drop it (dropdb -h 127.0.0.1 -U postgres "
            f"{local.db}) or set DRP_IDDS_DB"
        )
    from contextlib import redirect_stdout

    from idds.orm.base.utils import build_database

    with redirect_stdout(sys.stderr):  # it prints its progress; our stdout is the JSON line
        build_database(echo=False)
    return True


def main() -> int:
    t0 = time.monotonic()
    local = prepare_environment()
    created_db = ensure_database(local)
    built = ensure_schema(local)
    print(
        json.dumps(
            {
                "database": local.db,
                "created_database": created_db,
                "built_schema": built,
                "home": str(local.home),
                "seconds": round(time.monotonic() - t0, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
