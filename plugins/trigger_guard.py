"""Refuse a second trigger of a campaign while a run with the same choices is queued or running.

An ASGI middleware of the api-server (registered by campaign_view.py as a root middleware), in
front of Airflow's `POST /api/v2/dags/{dag_id}/dagRuns`, which the UI's Trigger button, the REST
API and `drp-campaign run` all call. The rule is drp_campaign.trigger_guard's. Only a caller who
may trigger the DAG hears of the other run; anyone else goes on to Airflow's own 401/403. Two
triggers at the same instant are checked one after the other: a PostgreSQL advisory lock per DAG
is held from the check until Airflow has committed the first one's run.

Every process that loads plugins imports this module: what it needs is imported on first use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import zlib
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

TRIGGER_PATH = re.compile(r"^/api/v2/dags/(?P<dag_id>campaign_[^/]+)/dagRuns/?$")
LOCK_NAMESPACE = 724203  # with the DAG's crc32: one advisory lock per DAG (ledger.claim_run_key uses 724202)
LOCK_WAIT_S = 30.0


class OneRunPerChoice:
    """See the module docstring."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        match = scope["type"] == "http" and scope["method"] == "POST" and TRIGGER_PATH.match(scope["path"])
        if not match:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        replay = _replaying(body, receive)
        dag_id = match["dag_id"]
        try:
            conf = json.loads(body or b"{}").get("conf") or {}
            campaign = await asyncio.to_thread(_campaign_of, dag_id) if isinstance(conf, dict) else None
        except (ValueError, AttributeError):  # not JSON, or not an object: Airflow's route answers it
            campaign = None
        if campaign is None or not await _may_trigger(scope, dag_id):
            await self.app(scope, replay, send)
            return
        async with _dag_lock(dag_id):
            twin = await asyncio.to_thread(_twin, campaign, dag_id, conf)
            if twin is not None:
                from drp_campaign.trigger_guard import refusal

                message = refusal(dag_id, twin)
                log.warning("trigger refused: %s", message)
                await _answer(send, 409, {"detail": message})
                return
            await self.app(scope, replay, send)


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replaying(body: bytes, receive):
    """A receive() that hands the app the body already read, then the rest of the connection's messages."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _campaign_of(dag_id: str):
    from drp_campaign.config import campaign_of_dag

    return campaign_of_dag(dag_id)


async def _may_trigger(scope, dag_id: str) -> bool:
    """The caller's token (Bearer, else the UI's cookie) names a user who may trigger this DAG."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from starlette.requests import Request

    request = Request(scope)
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get("_token")
    if not token:
        return False
    try:
        user = await get_auth_manager().get_user_from_token(token)
    except Exception:  # noqa: BLE001 - expired or invalid: Airflow's route says which
        return False
    return get_auth_manager().is_authorized_dag(
        method="POST", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
    )


def _twin(campaign, dag_id: str, conf: dict):
    import sqlalchemy as sa
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from drp_campaign.trigger_guard import ActiveRun, twin_run

    query = sa.select(DagRun.run_id, DagRun.state, DagRun.conf, DagRun.triggering_user_name).where(
        DagRun.dag_id == dag_id, DagRun.state.in_(["queued", "running"])
    )
    with create_session() as session:
        active = [
            ActiveRun(r.run_id, str(getattr(r.state, "value", r.state)), r.conf, r.triggering_user_name)
            for r in session.execute(query)
        ]
    return twin_run(campaign, conf, active)


@asynccontextmanager
async def _dag_lock(dag_id: str):
    """A PostgreSQL advisory lock for DAG_ID on a connection of its own, asked for without blocking
    the event loop (the other trigger's request runs on it). Not PostgreSQL: no lock."""
    from airflow import settings

    engine = settings.engine
    if engine.dialect.name != "postgresql":
        yield
        return
    import sqlalchemy as sa

    key = zlib.crc32(dag_id.encode()) - 2**31  # a signed int4
    conn = await asyncio.to_thread(engine.connect)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while not await asyncio.to_thread(
            lambda: conn.execute(
                sa.text("SELECT pg_try_advisory_lock(:n, :k)"), {"n": LOCK_NAMESPACE, "k": key}
            ).scalar()
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"another trigger of {dag_id} held its lock for over {LOCK_WAIT_S:.0f} s")
            await asyncio.sleep(0.05)
        try:
            yield
        finally:
            await asyncio.to_thread(
                lambda: conn.execute(sa.text("SELECT pg_advisory_unlock(:n, :k)"), {"n": LOCK_NAMESPACE, "k": key})
            )
    finally:
        await asyncio.to_thread(conn.close)
