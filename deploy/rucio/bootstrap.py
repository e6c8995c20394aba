"""rucio-init of docker-compose.yml: the Rucio database made ready for the controller; idempotent.

Runs in the rucio/rucio-server image (rucio 41, as requirements/rucio.lock) once its rucio.cfg was
written from the RUCIO_CFG_* environment. For whatever is missing: the schema (what Rucio's
build_database does, with the alembic stamp as a row: no alembic.ini needed), the base VO, `root`,
and the controller's account RUCIO_ACCOUNT (SERVICE, attribute admin: it makes each campaign's
scope on the first hop), each with a userpass identity of its own name and the password of
RUCIO_ROOT_PASSWORD / RUCIO_ACCOUNT_PASSWORD; a password changed in .env replaces the stored one on
the next `up` (and the old one stops working).

Not Rucio's create_root_account: besides the userpass identity it gives root, by default, the
x509, GSS and SSH identities of Rucio's development setup (CERN's DDMLAB certificate DN, Kerberos
principal and an SSH public key), so root would accept whoever holds those. A database at another
Rucio's schema revision is refused, not migrated. RSEs, their protocols and distances, and the FTS
servers are the sites': the Rucio admins register them (rucio-admin rse add ...).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

from rucio.alembicrevision import ALEMBIC_REVISION
from rucio.common.exception import IdentityError, IdentityNotFound
from rucio.common.types import InternalAccount
from rucio.core import account as account_core
from rucio.core import identity as identity_core
from rucio.db.sqla import models
from rucio.db.sqla.constants import AccountType, DatabaseOperationType, IdentityType
from rucio.db.sqla.session import db_session, get_engine, get_session
from rucio.db.sqla.util import create_base_vo
from sqlalchemy import insert, inspect, select

VO = "def"


def need(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"rucio-init: error: {name} is not set: set it in .env (see deploy/env.example)")
    return value


def ensure_schema() -> bool:
    """Rucio's schema and base VO unless there; True if the schema was built now."""
    engine = get_engine()
    inspector = inspect(engine)
    version = None
    if inspector.has_table(models.AlembicVersion.__tablename__):
        with engine.connect() as conn:
            version = conn.execute(select(models.AlembicVersion.version_num)).scalar()
    built = not inspector.has_table(models.Account.__tablename__)
    if built:  # Rucio's build_database and `alembic stamp head`, in one transaction
        with engine.begin() as conn:
            models.BASE.metadata.create_all(conn)
            conn.execute(insert(models.AlembicVersion).values(version_num=ALEMBIC_REVISION))
    elif version != ALEMBIC_REVISION:
        sys.exit(
            f"rucio-init: error: the Rucio database is at schema revision {version}, rucio "
            f"{ALEMBIC_REVISION}: upgrade it with Rucio's alembic (alembic upgrade head) first"
        )
    with get_session()() as session:
        has_vo = session.execute(select(models.VO.vo).where(models.VO.vo == VO)).first()
    if not has_vo:
        create_base_vo()
    return built


def ensure_userpass(name: str, account: InternalAccount, password: str, session) -> str:
    """The userpass identity NAME, with PASSWORD, mapped to ACCOUNT: "kept", "changed" or "set"."""
    try:
        identity_core.verify_identity(name, IdentityType.USERPASS, password, session=session)
        state = "kept"
    except IdentityNotFound:  # there with another password: the one in .env wins. Rucio has no call
        # for it (del_identity only marks the row deleted), so the hash is set as add_identity makes it.
        row = session.execute(
            select(models.Identity).where(
                models.Identity.identity == name, models.Identity.identity_type == IdentityType.USERPASS
            )
        ).scalar_one()
        salt = os.urandom(255)
        row.update({"salt": salt, "password": hashlib.sha256(salt + password.encode()).hexdigest(), "deleted": False})
        state = "changed"
    except IdentityError:  # not there
        identity_core.add_identity(name, IdentityType.USERPASS, f"{name}@localhost", password=password, session=session)
        state = "set"
    if not identity_core.exist_identity_account(name, IdentityType.USERPASS, account, session=session):
        identity_core.add_account_identity(
            name, IdentityType.USERPASS, account, f"{name}@localhost", default=True, session=session
        )
    return state


def ensure_account(name: str, password: str, admin: bool, session) -> str:
    account = InternalAccount(name, vo=VO)
    if not account_core.account_exists(account, session=session):
        account_core.add_account(account, AccountType.SERVICE, f"{name}@localhost", session=session)
    if admin:
        attrs = {a["key"]: a["value"] for a in account_core.list_account_attributes(account, session=session)}
        if str(attrs.get("admin")).lower() != "true":
            account_core.add_account_attribute(account, "admin", True, session=session)
    return ensure_userpass(name, account, password, session)


def main() -> int:
    root_password, account, password = (
        need("RUCIO_ROOT_PASSWORD"),
        need("RUCIO_ACCOUNT"),
        need("RUCIO_ACCOUNT_PASSWORD"),
    )
    built = ensure_schema()
    with db_session(DatabaseOperationType.WRITE) as session:  # one transaction
        done = {
            "root": ensure_account("root", root_password, admin=False, session=session),
            account: ensure_account(account, password, admin=True, session=session),
        }
    print(json.dumps({"schema_built": built, "identities": done}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
