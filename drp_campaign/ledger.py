"""The ledger: proof that nothing was lost between sites, and a record of what each step did.

Every hop writes one row per dataset when it is registered at the source (id, bytes, adler32)
and updates it when it arrives at the destination (bytes and adler32 measured there). A hop
balances when every registered dataset arrived with the same size and checksum. Steps write one
row per (site, step, group) with the real quantum counts and how long the pipeline ran, which the
campaign report and the overhead benchmark read.

Airflow-free; SQLAlchemy Core on PostgreSQL by default ($DRP_LEDGER_URL), SQLite works too.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa

from . import settings
from .errors import DrpError

metadata = sa.MetaData()

hop_files = sa.Table(
    "hop_files",
    metadata,
    sa.Column("run_key", sa.String(200), primary_key=True),
    sa.Column("hop", sa.String(100), primary_key=True),
    sa.Column("dst_site", sa.String(50), primary_key=True),
    sa.Column("dataset_id", sa.String(36), primary_key=True),
    sa.Column("campaign", sa.String(100), nullable=False),
    sa.Column("src_site", sa.String(50), nullable=False),
    sa.Column("dataset_type", sa.String(200), nullable=False),
    sa.Column("collection", sa.String(500), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("adler32", sa.String(8), nullable=False),
    sa.Column("dst_bytes", sa.BigInteger),
    sa.Column("dst_adler32", sa.String(8)),
    sa.Column("state", sa.String(20), nullable=False),  # registered | arrived | rejected
    sa.Column("detail", sa.Text),
    sa.Column("updated", sa.DateTime, nullable=False),
)

step_runs = sa.Table(
    "step_runs",
    metadata,
    sa.Column("run_key", sa.String(200), primary_key=True),
    sa.Column("site", sa.String(50), primary_key=True),
    sa.Column("step", sa.String(100), primary_key=True),
    sa.Column("group_label", sa.String(50), primary_key=True),
    sa.Column("campaign", sa.String(100), nullable=False),
    sa.Column("dag_run_id", sa.String(250), nullable=False),
    sa.Column("output_run", sa.String(500), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("quanta_total", sa.Integer, nullable=False),
    sa.Column("quanta_succeeded", sa.Integer, nullable=False),
    sa.Column("quanta_failed", sa.Integer, nullable=False),
    # Failed quanta the failure rules accept (a known data problem): counted, not failing the step.
    sa.Column("quanta_accepted", sa.Integer, nullable=False, server_default="0"),
    sa.Column("wms_run_id", sa.String(500), nullable=False, server_default=""),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("started", sa.DateTime, nullable=False),
    sa.Column("finished", sa.DateTime, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
)

hop_rules = sa.Table(
    "hop_rules",
    metadata,
    sa.Column("run_key", sa.String(200), primary_key=True),
    sa.Column("hop", sa.String(100), primary_key=True),
    sa.Column("src_site", sa.String(50), primary_key=True),
    sa.Column("dst_site", sa.String(50), primary_key=True),
    sa.Column("rule_id", sa.String(64), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("files_ok", sa.Integer, nullable=False),
    sa.Column("files_total", sa.Integer, nullable=False),
    sa.Column("bytes_ok", sa.BigInteger, nullable=False),
    sa.Column("updated", sa.DateTime, nullable=False),
)

site_releases = sa.Table(
    "site_releases",
    metadata,
    sa.Column("run_key", sa.String(200), primary_key=True),
    sa.Column("hop", sa.String(100), primary_key=True),  # the hop whose site copy was released
    sa.Column("site", sa.String(50), primary_key=True),
    sa.Column("rse", sa.String(100), nullable=False),
    sa.Column("files", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("rule_ids", sa.Text, nullable=False),  # the rules dropped, comma-separated
    sa.Column("released", sa.DateTime, nullable=False),
)

# The site-independence QA: one row per compared quantity of an overlap tract (drp_campaign/site_qa.py).
site_qa_checks = sa.Table(
    "site_qa_checks",
    metadata,
    sa.Column("run_key", sa.String(200), primary_key=True),
    sa.Column("tract", sa.Integer, primary_key=True),
    sa.Column("dataset_type", sa.String(200), primary_key=True),
    sa.Column("quantity", sa.String(200), primary_key=True),
    sa.Column("site_a", sa.String(50), nullable=False),  # the tract's own site: its copy is the product
    sa.Column("value_a", sa.Text, nullable=False),  # JSON: a number, null (NaN) or value counts
    sa.Column("site_b", sa.String(50), nullable=False),  # the second site
    sa.Column("value_b", sa.Text, nullable=False),
    sa.Column("tolerance", sa.String(100), nullable=False),  # e.g. "relative 0.001"
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("checked", sa.DateTime, nullable=False),
)

# Review gates: who decided on a gated step, what and when (the latest decision; a cleared gate asks again).
reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("run_key", sa.String(200), primary_key=True),
    sa.Column("step", sa.String(100), primary_key=True),
    sa.Column("decision", sa.String(20), nullable=False),  # approved | rejected | passed (gates off, dry run)
    sa.Column("decided_by", sa.String(250), nullable=False),  # the user, or why nobody was asked
    sa.Column("decided", sa.DateTime, nullable=False),
)

campaign_runs = sa.Table(
    "campaign_runs",
    metadata,
    sa.Column("run_key", sa.String(200), primary_key=True),
    sa.Column("campaign", sa.String(100), nullable=False),
    sa.Column("dag_run_id", sa.String(250), nullable=False),
    sa.Column("started", sa.DateTime, nullable=False),
    sa.Column("finished", sa.DateTime),
)


# Site failover (drp_campaign/failover.py): the tracts of a run moved from a down site to another.
# The run's operators plan their work groups from these rows (graph.plan_groups), so a moved
# tract runs at its new site only.
failovers = sa.Table(
    "failovers",
    metadata,
    sa.Column("run_key", sa.String(200), primary_key=True),
    sa.Column("tract", sa.Integer, primary_key=True),
    sa.Column("from_site", sa.String(50), nullable=False),
    sa.Column("to_site", sa.String(50), nullable=False),
    sa.Column("moved_by", sa.String(250), nullable=False),
    sa.Column("moved", sa.DateTime, nullable=False),
)


class RunKeyTaken(DrpError):
    """A campaign run's key already names another run (see Ledger.claim_run_key)."""


class LedgerUnbalanced(DrpError):
    """Something sent did not arrive intact; the message lists each dataset and what is wrong."""


@dataclass
class HopEntry:
    dataset_id: str
    dataset_type: str
    collection: str
    bytes: int
    adler32: str


@dataclass
class HopBalance:
    hop: str
    src_site: str
    dst_site: str
    sent: int = 0
    sent_bytes: int = 0
    arrived: int = 0
    arrived_bytes: int = 0
    problems: list[str] = field(default_factory=list)  # one line per dataset that is not intact

    @property
    def balanced(self) -> bool:
        return not self.problems and self.sent == self.arrived


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _ensure_postgres_database(url: sa.URL) -> None:
    """Create the ledger database on first use, so a fresh machine needs no manual step."""
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database})
            if exists.scalar() is None:
                conn.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
    except (sa.exc.ProgrammingError, sa.exc.IntegrityError):  # another task created it first
        pass
    finally:
        admin.dispose()


class Ledger:
    """Reads and writes the ledger tables; safe to use from many tasks at once."""

    def __init__(self, url: str | None = None):
        self.url = sa.make_url(url or settings.ledger_url())
        if self.url.get_backend_name() == "postgresql":
            _ensure_postgres_database(self.url)
        self.engine = sa.create_engine(self.url, pool_pre_ping=True)
        with self.engine.begin() as conn:
            if self.url.get_backend_name() == "postgresql":
                # Many tasks start at once on a fresh database: one creates the tables.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(724201)"))
            metadata.create_all(conn, checkfirst=True)
            _add_missing_columns(conn)

    # -- campaign runs ---------------------------------------------------------------------
    def claim_run_key(self, run_key: str, campaign: str, dag_run_id: str) -> None:
        """Record that RUN_KEY names this campaign run, or check that it already does.

        Every path, collection, Rucio dataset and ledger row of a run is named by its key, and
        different run ids can map to one key (graph.run_key): a second run on a key would attach
        to the first run's work and report it as its own. Refused, naming both runs."""
        with self.engine.begin() as conn:
            if self.url.get_backend_name() == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(724202)"))  # one claim at a time
            row = conn.execute(sa.select(campaign_runs).where(campaign_runs.c.run_key == run_key)).first()
            if row is None:
                conn.execute(
                    campaign_runs.insert().values(
                        run_key=run_key, campaign=campaign, dag_run_id=dag_run_id, started=_now()
                    )
                )
                return
        if (row.campaign, row.dag_run_id) != (campaign, dag_run_id):
            raise RunKeyTaken(
                f"run {dag_run_id!r} of campaign {campaign} maps to run key {run_key!r}, which already names run "
                f"{row.dag_run_id!r} of campaign {row.campaign} (since {row.started:%Y-%m-%d %H:%M} UTC): its "
                "collections, files and ledger rows would be taken for this run's. Trigger the run again with "
                "a run id that differs in letters or digits (or leave the run id to Airflow)."
            )

    def finish_campaign_run(self, run_key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(campaign_runs.update().where(campaign_runs.c.run_key == run_key).values(finished=_now()))

    def campaign_run(self, run_id_or_key: str) -> dict | None:
        """Look a run up by its key or by the raw Airflow run id an operator copies from the UI."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(campaign_runs).where(
                    sa.or_(campaign_runs.c.run_key == run_id_or_key, campaign_runs.c.dag_run_id == run_id_or_key)
                )
            ).first()
        return dict(row._mapping) if row else None

    # -- hops --------------------------------------------------------------------------------
    def record_registered(
        self, *, run_key: str, campaign: str, hop: str, src_site: str, dst_site: str, entries: Iterable[HopEntry]
    ) -> int:
        """Record what the source registered; re-registering the same dataset changes nothing."""
        key = {"run_key": run_key, "hop": hop, "dst_site": dst_site}
        with self.engine.begin() as conn:
            known = set(
                conn.execute(
                    sa.select(hop_files.c.dataset_id).where(*(hop_files.c[k] == v for k, v in key.items()))
                ).scalars()
            )
            rows = [
                dict(
                    key,
                    dataset_id=e.dataset_id,
                    campaign=campaign,
                    src_site=src_site,
                    dataset_type=e.dataset_type,
                    collection=e.collection,
                    bytes=e.bytes,
                    adler32=e.adler32,
                    state="registered",
                    updated=_now(),
                )
                for e in entries
                if e.dataset_id not in known
            ]
            if rows:
                conn.execute(hop_files.insert(), rows)
        return len(rows)

    def record_arrived(self, *, run_key: str, hop: str, dst_site: str, entries: Iterable[HopEntry]) -> None:
        """Record what the destination measured for each dataset it ingested (or already had)."""
        self._update_arrivals(
            run_key, hop, dst_site, [(e.dataset_id, e.bytes, e.adler32, "arrived", None) for e in entries]
        )

    def record_rejected(self, *, run_key: str, hop: str, dst_site: str, rejected: Iterable[tuple[str, str]]) -> None:
        """Record datasets the destination refused (missing file, wrong checksum), with why."""
        self._update_arrivals(run_key, hop, dst_site, [(d, None, None, "rejected", why) for d, why in rejected])

    def _update_arrivals(self, run_key: str, hop: str, dst_site: str, updates: list[tuple]) -> None:
        if not updates:
            return
        stmt = (
            hop_files.update()
            .where(
                hop_files.c.run_key == run_key,
                hop_files.c.hop == hop,
                hop_files.c.dst_site == dst_site,
                hop_files.c.dataset_id == sa.bindparam("b_id"),
            )
            .values(
                dst_bytes=sa.bindparam("b_bytes"),
                dst_adler32=sa.bindparam("b_adler"),
                state=sa.bindparam("b_state"),
                detail=sa.bindparam("b_detail"),
                updated=_now(),
            )
        )
        with self.engine.begin() as conn:
            conn.execute(
                stmt,
                [{"b_id": d, "b_bytes": b, "b_adler": a, "b_state": s, "b_detail": why} for d, b, a, s, why in updates],
            )

    def hop_balances(
        self, run_key: str, hop: str | None = None, dst_site: str | None = None, src_site: str | None = None
    ) -> list[HopBalance]:
        """Per (hop, source, destination): what was sent, what arrived intact, and every problem."""
        query = _pair_rows(sa.select(hop_files), run_key, hop, dst_site, src_site)
        balances: dict[tuple[str, str, str], HopBalance] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query.order_by(hop_files.c.hop, hop_files.c.src_site, hop_files.c.dataset_id)):
                bal = balances.setdefault(
                    (row.hop, row.src_site, row.dst_site), HopBalance(row.hop, row.src_site, row.dst_site)
                )
                bal.sent += 1
                bal.sent_bytes += row.bytes
                intact = row.state == "arrived" and row.dst_bytes == row.bytes and row.dst_adler32 == row.adler32
                if intact:
                    bal.arrived += 1
                    bal.arrived_bytes += row.dst_bytes
                else:
                    bal.problems.append(_describe_problem(row))
        return list(balances.values())

    def check_balanced(
        self,
        run_key: str,
        hop: str | None = None,
        dst_site: str | None = None,
        src_site: str | None = None,
        expected: Iterable[HopEntry] | None = None,
    ) -> list[HopBalance]:
        """Return the balances, or raise LedgerUnbalanced naming every dataset not intact and, given
        what the hop registered (EXPECTED), every one of those with no row: rows that were never
        written balance as well as rows that arrived."""
        balances = self.hop_balances(run_key, hop, dst_site, src_site)
        bad = [b for b in balances if not b.balanced]
        lines = [f"{b.hop} {b.src_site}->{b.dst_site}: {b.arrived}/{b.sent} intact" for b in bad]
        lines += [f"  {p}" for b in bad for p in b.problems[:20]]
        unrecorded = self._unrecorded(run_key, hop, dst_site, src_site, expected) if expected is not None else []
        if unrecorded:
            lines.append(
                f"{hop} {src_site}->{dst_site}: {len(unrecorded)} datasets registered for the hop have no row "
                "(never recorded as sent: registering the hop again records them)"
            )
            lines += [f"  {e.dataset_type} {e.dataset_id} ({e.collection}): no row" for e in unrecorded[:20]]
        if lines:
            raise LedgerUnbalanced("ledger does not balance for run " + run_key + ":\n" + "\n".join(lines))
        return balances

    def _unrecorded(self, run_key: str, hop, dst_site, src_site, expected: Iterable[HopEntry]) -> list[HopEntry]:
        query = _pair_rows(sa.select(hop_files.c.dataset_id), run_key, hop, dst_site, src_site)
        with self.engine.connect() as conn:
            recorded = set(conn.execute(query).scalars())
        return [e for e in expected if e.dataset_id not in recorded]

    def record_rule(self, *, run_key: str, hop: str, src_site: str, dst_site: str, status) -> None:
        """The replication rule of one hop pair and where it stands (a RuleStatus)."""
        key = dict(run_key=run_key, hop=hop, src_site=src_site, dst_site=dst_site)
        values = dict(
            rule_id=status.rule_id,
            state=status.state,
            files_ok=status.files_ok,
            files_total=status.files_total,
            bytes_ok=status.bytes_ok,
            updated=_now(),
        )
        where = [hop_rules.c[k] == v for k, v in key.items()]
        with self.engine.begin() as conn:
            if conn.execute(sa.select(hop_rules.c.rule_id).where(*where)).first():
                conn.execute(hop_rules.update().where(*where).values(**values))
            else:
                conn.execute(hop_rules.insert().values(**key, **values))

    def rules(self, run_key: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(hop_rules).where(hop_rules.c.run_key == run_key).order_by(hop_rules.c.hop))
            return [dict(r._mapping) for r in rows]

    # -- releases ------------------------------------------------------------------------------
    def record_release(
        self, *, run_key: str, hop: str, site: str, rse: str, files: int, nbytes: int, rule_ids: list[str]
    ) -> None:
        """A site copy was released; a re-run that dropped no rule keeps the first record's rules."""
        where = [site_releases.c.run_key == run_key, site_releases.c.hop == hop, site_releases.c.site == site]
        with self.engine.begin() as conn:
            if conn.execute(sa.select(site_releases.c.hop).where(*where).with_for_update()).first():
                if rule_ids:
                    conn.execute(
                        site_releases.update().where(*where).values(rule_ids=",".join(rule_ids), released=_now())
                    )
                return
            conn.execute(
                site_releases.insert().values(
                    run_key=run_key,
                    hop=hop,
                    site=site,
                    rse=rse,
                    files=files,
                    bytes=nbytes,
                    rule_ids=",".join(rule_ids),
                    released=_now(),
                )
            )

    def releases(self, run_key: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(site_releases)
                .where(site_releases.c.run_key == run_key)
                .order_by(site_releases.c.site, site_releases.c.hop)
            )
            return [dict(r._mapping) for r in rows]

    # -- steps -------------------------------------------------------------------------------
    def record_step(
        self,
        *,
        run_key: str,
        campaign: str,
        dag_run_id: str,
        site: str,
        step: str,
        group_label: str,
        output_run: str,
        status: str,
        quanta: dict,
        started: dt.datetime,
        finished: dt.datetime,
        duration_s: float,
        wms_run_id: str = "",
    ) -> None:
        """Upsert the latest outcome of one group of one step; attempts counts the tries."""
        key = dict(run_key=run_key, site=site, step=step, group_label=group_label)
        values = dict(
            campaign=campaign,
            dag_run_id=dag_run_id,
            output_run=output_run,
            status=status,
            quanta_total=int(quanta.get("total", 0)),
            quanta_succeeded=int(quanta.get("succeeded", 0)),
            quanta_failed=int(quanta.get("failed", 0)),
            quanta_accepted=int(quanta.get("accepted", 0)),
            wms_run_id=wms_run_id,
            started=started,
            finished=finished,
            duration_s=duration_s,
        )
        where = [step_runs.c[k] == v for k, v in key.items()]
        with self.engine.begin() as conn:
            previous = conn.execute(sa.select(step_runs.c.attempts).where(*where).with_for_update()).scalar()
            if previous is None:
                conn.execute(step_runs.insert().values(**key, **values, attempts=1))
            else:
                conn.execute(step_runs.update().where(*where).values(**values, attempts=previous + 1))

    def step_records(self, run_key: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(step_runs).where(step_runs.c.run_key == run_key).order_by(step_runs.c.started)
            )
            return [dict(r._mapping) for r in rows]

    # -- review gates --------------------------------------------------------------------------
    def record_review(self, *, run_key: str, step: str, decision: str, decided_by: str) -> None:
        where = [reviews.c.run_key == run_key, reviews.c.step == step]
        values = dict(decision=decision, decided_by=decided_by, decided=_now())
        with self.engine.begin() as conn:
            if conn.execute(sa.select(reviews.c.step).where(*where).with_for_update()).first():
                conn.execute(reviews.update().where(*where).values(**values))
            else:
                conn.execute(reviews.insert().values(run_key=run_key, step=step, **values))

    def reviews(self, run_key: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(reviews).where(reviews.c.run_key == run_key).order_by(reviews.c.decided))
            return [dict(r._mapping) for r in rows]

    # -- site-independence QA ------------------------------------------------------------------
    def record_site_qa(self, run_key: str, tracts: Iterable[int], checks: Iterable[dict]) -> None:
        """Replace the QA rows of TRACTS with CHECKS (a re-run after a fix says what holds now)."""
        rows = [
            dict(
                run_key=run_key,
                tract=int(c["tract"]),
                dataset_type=c["dataset_type"],
                quantity=c["quantity"],
                site_a=c["site_a"],
                value_a=json.dumps(c["value_a"]),
                site_b=c["site_b"],
                value_b=json.dumps(c["value_b"]),
                tolerance=c["tolerance"],
                ok=bool(c["ok"]),
                note=c.get("note") or "",
                checked=_now(),
            )
            for c in checks
        ]
        with self.engine.begin() as conn:
            conn.execute(
                site_qa_checks.delete().where(
                    site_qa_checks.c.run_key == run_key, site_qa_checks.c.tract.in_([int(t) for t in tracts])
                )
            )
            if rows:
                conn.execute(site_qa_checks.insert(), rows)

    def site_qa_verdicts(self, run_keys: Iterable[str]) -> dict[str, str]:
        """Run key -> "pass" or "fail" (any quantity beyond its tolerance), for the runs of RUN_KEYS
        whose site QA has compared something: one query, for a list of runs."""
        failed = sa.func.sum(sa.case((site_qa_checks.c.ok, 0), else_=1))
        query = (
            sa.select(site_qa_checks.c.run_key, failed)
            .where(site_qa_checks.c.run_key.in_(list(run_keys)))
            .group_by(site_qa_checks.c.run_key)
        )
        with self.engine.connect() as conn:
            return {key: "fail" if n else "pass" for key, n in conn.execute(query)}

    def site_qa(self, run_key: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(site_qa_checks)
                .where(site_qa_checks.c.run_key == run_key)
                .order_by(site_qa_checks.c.tract, site_qa_checks.c.dataset_type, site_qa_checks.c.quantity)
            )
            return [{**r._mapping, "value_a": json.loads(r.value_a), "value_b": json.loads(r.value_b)} for r in rows]

    # -- failover --------------------------------------------------------------------------
    def record_failover(self, run_key: str, from_site: str, to_site: str, tracts: Iterable[int], by: str) -> None:
        """Record that TRACTS of the run now run at TO_SITE. A tract moves once: moving it again (the
        command repeated after a crash) to the same site changes nothing, to another is refused."""
        tracts = sorted(set(tracts))
        with self.engine.begin() as conn:
            moved = {
                r.tract: r.to_site
                for r in conn.execute(
                    sa.select(failovers).where(failovers.c.run_key == run_key, failovers.c.tract.in_(tracts))
                )
            }
            elsewhere = {t: s for t, s in moved.items() if s != to_site}
            if elsewhere:
                raise DrpError(
                    f"run {run_key}: tracts {', '.join(f'{t} (to {s})' for t, s in sorted(elsewhere.items()))} "
                    f"were already moved elsewhere; not moving them to {to_site}"
                )
            new = [t for t in tracts if t not in moved]
            if new:
                conn.execute(
                    failovers.insert(),
                    [
                        {"run_key": run_key, "tract": t, "from_site": from_site, "to_site": to_site}
                        | {"moved_by": by, "moved": _now()}
                        for t in new
                    ],
                )

    def failovers(self, run_key: str) -> list[dict]:
        """The run's moved tracts, one row each (tract, from_site, to_site, moved_by, moved)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(failovers).where(failovers.c.run_key == run_key).order_by(failovers.c.tract))
            return [dict(r._mapping) for r in rows]

    def moved_tracts(self, run_key: str) -> dict[int, str]:
        """Tract -> the site it was moved to, for the run's failed-over tracts."""
        return {r["tract"]: r["to_site"] for r in self.failovers(run_key)}


def _pair_rows(query, run_key: str, hop: str | None, dst_site: str | None, src_site: str | None):
    """QUERY on hop_files narrowed to a run and, where given, a hop, destination and source."""
    query = query.where(hop_files.c.run_key == run_key)
    for column, value in (("hop", hop), ("dst_site", dst_site), ("src_site", src_site)):
        if value:
            query = query.where(hop_files.c[column] == value)
    return query


def _add_missing_columns(conn) -> None:
    """A ledger made by an older version gets the columns added since (with their defaults)."""
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=conn.dialect)
                default = column.server_default.arg if column.server_default is not None else None
                clause = f" NOT NULL DEFAULT '{default}'" if default is not None else ""
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}{clause}"))


def _describe_problem(row) -> str:
    where = f"{row.dataset_type} {row.dataset_id} ({row.collection})"
    if row.state == "registered":
        return f"{where}: sent, never arrived"
    if row.state == "rejected":
        return f"{where}: refused at {row.dst_site}: {row.detail}"
    return f"{where}: arrived as {row.dst_bytes} B adler32 {row.dst_adler32}, sent {row.bytes} B adler32 {row.adler32}"
