"""Bootstrap the local Rucio: database, schema, root, the controller account, RSEs, scopes.

    python -m localservices.rucio.bootstrap      (in .venvs/rucio; scripts/rucio-server.sh start)

Idempotent, and cheap when everything is already there (~1 s, most of it importing rucio):

1. write rucio.cfg / alembic.ini / client.cfg / connection.json (`config.LocalRucio`), and set
   RUCIO_CONFIG to rucio.cfg before rucio is imported (rucio reads its config at import time);
2. create the PostgreSQL database `$DRP_RUCIO_DB` if it is missing;
3. if the schema is not there: what Rucio's tools/bootstrap.py does, `build_database()` (tables,
   then `alembic stamp head` through `[alembic] cfg`), `create_base_vo()`,
   `create_root_account()` (its userpass identity from rucio.cfg `[bootstrap]`);
   if it is there but at another alembic revision: stop, the database belongs to another Rucio;
4. ensure, through rucio.core: the root and controller (`drp`) userpass identities carry the
   passwords of secrets.json; account `drp` (SERVICE, attribute admin=True); for every RSE of
   sites.yaml (`rse_specs`) the RSE (DISK or TAPE), its `file` protocol at the prefix, its
   attributes, its directory; distances between every ordered pair (1 within a site, 2 between
   sites; to an IDAC's RSE only from the hub's disk, and none from it); the controller account's
   local limit per RSE (storage_tb, unlimited on tape); one scope per campaign file, owned by
   `drp`.

Prints one JSON line: what it did and how long it took.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from drp_campaign import settings
from localservices.rucio import CONTROLLER_ACCOUNT, LFN2PFN_ALGORITHM, RseSpec, campaign_scopes, rse_specs
from localservices.rucio.config import DEFAULT_VO, LocalRucio

POSIX_IMPL = "rucio.rse.protocols.posix.Default"
ALL_OPS = {"read": 1, "write": 1, "delete": 1}
DOMAINS = {"lan": dict(ALL_OPS), "wan": dict(ALL_OPS, third_party_copy_read=1, third_party_copy_write=1)}


def prepare_environment(local: LocalRucio | None = None) -> LocalRucio:
    """Write the config files and point RUCIO_CONFIG at rucio.cfg; call before importing rucio."""
    local = local or LocalRucio.from_env()
    local.write_configs()
    if "rucio" in sys.modules and os.environ.get("RUCIO_CONFIG") != str(local.server_cfg):
        raise RuntimeError("rucio was imported before RUCIO_CONFIG was set to " + str(local.server_cfg))
    os.environ["RUCIO_CONFIG"] = str(local.server_cfg)
    return local


def ensure_database(local: LocalRucio) -> bool:
    """Create the database if it is missing; True if it was created."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=local.pg_host, user=local.pg_user, dbname="postgres", autocommit=True, connect_timeout=10
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (local.db,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(local.db)))
        return True


def ensure_schema() -> bool:
    """Rucio's tools/bootstrap.py for whatever of it is missing; True if the schema was built."""
    from rucio import alembicrevision
    from rucio.common.types import InternalAccount
    from rucio.core.account import account_exists
    from rucio.db.sqla import models
    from rucio.db.sqla.session import get_engine, get_session
    from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
    from sqlalchemy import inspect, select

    built = False
    inspector = inspect(get_engine())
    if inspector.has_table(models.AlembicVersion.__tablename__):
        with get_session()() as session:
            versions = session.execute(select(models.AlembicVersion.version_num)).scalars().all()
        if versions and versions[0] != alembicrevision.ALEMBIC_REVISION:
            raise RuntimeError(
                f"the Rucio database is at alembic revision {versions[0]}, this "
                f"rucio wants {alembicrevision.ALEMBIC_REVISION}: use another "
                "DRP_RUCIO_DB or drop that database"
            )
    if not inspector.has_table(models.Account.__tablename__):
        build_database()
        built = True
    with get_session()() as session:
        has_vo = session.execute(select(models.VO.vo).where(models.VO.vo == DEFAULT_VO)).first()
    if not has_vo:
        create_base_vo()
    with get_session()() as session:
        has_root = account_exists(InternalAccount("root", vo=DEFAULT_VO), session=session)
    if not has_root:
        create_root_account()
    return built


def _ensure_userpass(identity: str, account, password: str, email: str, session) -> str:
    from rucio.common.exception import IdentityError, IdentityNotFound
    from rucio.core import identity as identity_core
    from rucio.db.sqla.constants import IdentityType

    try:
        identity_core.verify_identity(identity, IdentityType.USERPASS, password, session=session)
        if identity_core.exist_identity_account(identity, IdentityType.USERPASS, account, session=session):
            return "kept"
    except IdentityNotFound:  # exists with another password (secrets.json was replaced)
        identity_core.del_identity(identity, IdentityType.USERPASS, session=session)
    except IdentityError:  # does not exist
        pass
    identity_core.add_account_identity(
        identity, IdentityType.USERPASS, account, email, default=True, password=password, session=session
    )
    return "set"


def ensure_accounts(local: LocalRucio, session) -> dict[str, str]:
    from rucio.common.types import InternalAccount
    from rucio.core import account as account_core
    from rucio.db.sqla.constants import AccountType

    pw = local.passwords()
    done = {}
    root = InternalAccount("root", vo=DEFAULT_VO)
    done["root"] = _ensure_userpass("root", root, pw["root"], "root@localhost", session)
    drp = InternalAccount(CONTROLLER_ACCOUNT, vo=DEFAULT_VO)
    if not account_core.account_exists(drp, session=session):
        account_core.add_account(drp, AccountType.SERVICE, "drp@localhost", session=session)
    attrs = {a["key"]: a["value"] for a in account_core.list_account_attributes(drp, session=session)}
    if str(attrs.get("admin")).lower() != "true":
        account_core.add_account_attribute(drp, "admin", True, session=session)
    done[CONTROLLER_ACCOUNT] = _ensure_userpass(
        CONTROLLER_ACCOUNT, drp, pw[CONTROLLER_ACCOUNT], "drp@localhost", session
    )
    return done


def _protocol(spec: RseSpec) -> dict:
    return {
        "scheme": "file",
        "hostname": "localhost",
        "port": 0,
        "prefix": str(spec.prefix).rstrip("/") + "/",
        "impl": POSIX_IMPL,
        "domains": json.loads(json.dumps(DOMAINS)),
        "extended_attributes": None,
    }


def ensure_rse(spec: RseSpec, session) -> str:
    """The RSE with its protocol, attributes, directory and the controller's limit; its id."""
    from rucio.common.types import InternalAccount
    from rucio.core import account_limit
    from rucio.core import rse as rse_core
    from rucio.db.sqla.constants import RSEType

    spec.prefix.mkdir(parents=True, exist_ok=True)
    if spec.rse_type == "DISK":  # $DRP_WORK_DIR/rse/<RSE> -> the site's repo root
        link = settings.work_dir() / "rse" / spec.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and Path(os.readlink(link)) != spec.prefix:
            link.unlink()
        if not link.exists() and not link.is_symlink():
            link.symlink_to(spec.prefix, target_is_directory=True)
    if rse_core.rse_exists(spec.name, vo=DEFAULT_VO, session=session):
        rse_id = rse_core.get_rse_id(spec.name, vo=DEFAULT_VO, session=session)
    else:
        rse_id = rse_core.add_rse(
            spec.name, vo=DEFAULT_VO, deterministic=True, rse_type=RSEType[spec.rse_type], session=session
        )
    wanted = _protocol(spec)
    protocols = rse_core.get_rse_protocols(rse_id, session=session).get("protocols", [])
    current = [p for p in protocols if p["scheme"] == "file"]
    if not (
        len(current) == 1
        and current[0]["prefix"] == wanted["prefix"]
        and current[0]["hostname"] == wanted["hostname"]
        and current[0]["impl"] == POSIX_IMPL
    ):
        if current:
            rse_core.del_protocols(rse_id, "file", session=session)
        rse_core.add_protocol(rse_id, wanted, session=session)
    attributes = {
        "lfn2pfn_algorithm": LFN2PFN_ALGORITHM,
        "site": spec.site,
        "verify_checksum": True,
        "istape": spec.rse_type == "TAPE",
        "greedyDeletion": spec.rse_type == "DISK",
    }
    have = rse_core.list_rse_attributes(rse_id, session=session)
    for key, value in attributes.items():
        if have.get(key) != value:
            rse_core.add_rse_attribute(rse_id, key, value, session=session)
    account_limit.set_local_account_limit(
        InternalAccount(CONTROLLER_ACCOUNT, vo=DEFAULT_VO), rse_id, spec.quota_bytes, session=session
    )
    return rse_id


def ensure_distances(specs: list[RseSpec], ids: dict[str, str], session) -> int:
    from rucio.core import distance as distance_core

    n = 0
    for src in specs:
        for dst in specs:
            if (
                src.name == dst.name
                or src.sources is not None
                or (dst.sources is not None and src.name not in dst.sources)
            ):
                continue
            wanted = 1 if src.site == dst.site else 2
            have = distance_core.get_distances(src_rse_id=ids[src.name], dest_rse_id=ids[dst.name], session=session)
            if not have:
                distance_core.add_distance(ids[src.name], ids[dst.name], distance=wanted, session=session)
            elif have[0]["distance"] != wanted:
                distance_core.update_distances(ids[src.name], ids[dst.name], distance=wanted, session=session)
            n += 1
    return n


def ensure_scopes(names: list[str], session) -> list[str]:
    from rucio.common.types import InternalAccount, InternalScope
    from rucio.core import scope as scope_core

    added = []
    for name in names:
        scope = InternalScope(name, vo=DEFAULT_VO)
        if not scope_core.check_scope(scope, session=session):
            scope_core.add_scope(scope, InternalAccount(CONTROLLER_ACCOUNT, vo=DEFAULT_VO), session=session)
            added.append(name)
    return added


def bootstrap(local: LocalRucio | None = None) -> dict:
    t0 = time.monotonic()
    local = prepare_environment(local)
    created_db = ensure_database(local)
    t_db = time.monotonic()
    built = ensure_schema()
    t_schema = time.monotonic()
    from rucio.db.sqla.constants import DatabaseOperationType
    from rucio.db.sqla.session import db_session

    specs = rse_specs()
    scopes = campaign_scopes()
    with db_session(DatabaseOperationType.WRITE) as session:  # one transaction
        accounts = ensure_accounts(local, session)
        ids = {spec.name: ensure_rse(spec, session) for spec in specs}
        n_distances = ensure_distances(specs, ids, session)
        added_scopes = ensure_scopes(scopes, session)
    return {
        "database": local.db,
        "created_database": created_db,
        "built_schema": built,
        "accounts": accounts,
        "rses": {s.name: {"type": s.rse_type, "prefix": str(s.prefix)} for s in specs},
        "distances": n_distances,
        "scopes": scopes,
        "added_scopes": added_scopes,
        "seconds": {
            "database": round(t_db - t0, 2),
            "schema": round(t_schema - t_db, 2),
            "total": round(time.monotonic() - t0, 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    del argv
    try:
        result = bootstrap()
    except Exception as exc:  # one clear line for the shell script; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        print(f"error: Rucio bootstrap failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
