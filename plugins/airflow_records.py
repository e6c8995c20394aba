"""What the campaign view reads from Airflow and Rucio, inside the api-server: a run's task
instances and state from Airflow's metadata DB (as Airflow's own UI routes read them), earlier
runs' durations for the ETA, and Rucio's live rule states (a DAG's campaign config:
drp_campaign.config.campaign_of_dag).

Imported by the view app on its first request, never by task processes.
"""

from __future__ import annotations

import logging
import threading
import time

import sqlalchemy as sa
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance as TI
from airflow.utils.session import create_session

from drp_campaign.live_status import TaskRow

log = logging.getLogger(__name__)

HISTORY_RUNS = 5  # the ETA is the median over this many earlier successful runs
RULE_TTL_S = 10.0  # a rule's live state is asked of Rucio at most this often per api-server


def dag_runs(dag_id: str | None = None, run_id: str | None = None, limit: int = 200) -> list[dict]:
    """Campaign DAG runs, newest first: of one DAG, or the one with RUN_ID (in any campaign DAG)."""
    query = sa.select(
        DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.start_date, DagRun.end_date, DagRun.run_type, DagRun.conf
    )
    query = query.where(DagRun.dag_id.like("campaign\\_%", escape="\\"))
    if dag_id:
        query = query.where(DagRun.dag_id == dag_id)
    if run_id:
        query = query.where(DagRun.run_id == run_id)
    query = query.order_by(DagRun.start_date.desc().nulls_last()).limit(limit)
    with create_session() as session:
        return [
            {**row._asdict(), "state": str(row.state.value if hasattr(row.state, "value") else row.state)}
            for row in session.execute(query)
        ]


def _rows(query) -> list[TaskRow]:
    with create_session() as session:
        return [
            TaskRow(
                r.task_id,
                r.map_index,
                r.state.value if hasattr(r.state, "value") else r.state,
                r.start_date,
                r.end_date,
                r.try_number or 0,
                r.run_id,
                r.rendered_map_index,
            )
            for r in session.execute(query)
        ]


_TI_COLUMNS = (
    TI.task_id,
    TI.map_index,
    TI.state,
    TI.start_date,
    TI.end_date,
    TI.try_number,
    TI.run_id,
    TI.rendered_map_index,
)


def task_rows(dag_id: str, run_id: str) -> list[TaskRow]:
    return _rows(sa.select(*_TI_COLUMNS).where(TI.dag_id == dag_id, TI.run_id == run_id))


def history(dag_id: str, before_run_id: str) -> list[TaskRow]:
    """The successful and skipped task instances of the DAG's last HISTORY_RUNS successful runs
    other than BEFORE_RUN_ID: what the same steps took before."""
    runs = (
        sa.select(DagRun.run_id)
        .where(DagRun.dag_id == dag_id, DagRun.state == "success", DagRun.run_id != before_run_id)
        .order_by(DagRun.end_date.desc().nulls_last())
        .limit(HISTORY_RUNS)
    )
    return _rows(
        sa.select(*_TI_COLUMNS).where(TI.dag_id == dag_id, TI.state.in_(["success", "skipped"]), TI.run_id.in_(runs))
    )


_rules: dict[str, tuple[float, str]] = {}
_rucio = threading.local()


def _rucio_service():
    """The controller's Rucio account, from the same Airflow Connection the hops use."""
    if getattr(_rucio, "service", None) is None:
        from airflow.models.connection import Connection

        from drp_campaign.hooks.rucio import DEFAULT_CONN_ID, connection_fields
        from drp_campaign.transfer.rucio import RucioTransferService, rucio_client

        conn = Connection.get_connection_from_secrets(DEFAULT_CONN_ID)
        _rucio.service = RucioTransferService(rucio_client(connection_fields(conn)))
    return _rucio.service


def live_rule_states(rule_ids: list[str]) -> dict[str, str]:
    """{rule_id: state} as Rucio says now; a rule Rucio no longer has is GONE (dropped once its
    copy was released). Empty when Rucio cannot be asked: the view then shows the ledger's
    last-known states, marked as such."""
    now = time.monotonic()
    wanted = [r for r in rule_ids if r and (r not in _rules or now - _rules[r][0] > RULE_TTL_S)]
    if wanted:
        try:
            service = _rucio_service()
            for rule_id in wanted:
                _rules[rule_id] = (now, rule_state(service, rule_id))
        except Exception as exc:  # noqa: BLE001 - a view shows what it can; the hops' tasks alert
            log.warning("campaign view: Rucio not asked (%s); showing the ledger's rule states", exc)
            _rucio.service = None
    return {r: _rules[r][1] for r in rule_ids if r in _rules}


def rule_state(service, rule_id: str) -> str:
    from rucio.common.exception import RuleNotFound

    try:
        return service.client.get_replication_rule(rule_id)["state"]
    except RuleNotFound:
        return "GONE"


def rule_detail(rule_id: str) -> dict:
    """One rule as Rucio has it now (the view's link from a hop cell)."""
    from rucio.common.exception import RuleNotFound

    service = _rucio_service()
    try:
        rule = service.client.get_replication_rule(rule_id)
    except RuleNotFound:
        return {"rule_id": rule_id, "state": "GONE", "note": "Rucio has no such rule now (dropped or never made)"}
    keep = (
        "id",
        "scope",
        "name",
        "rse_expression",
        "state",
        "locks_ok_cnt",
        "locks_replicating_cnt",
        "locks_stuck_cnt",
        "error",
        "account",
        "created_at",
        "updated_at",
        "expires_at",
        "activity",
    )
    return {k: (str(rule[k]) if k.endswith("_at") and rule.get(k) else rule.get(k)) for k in keep}
