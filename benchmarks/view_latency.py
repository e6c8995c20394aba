"""How fast the campaign view answers (issue #15: the page and the JSON under 1 s), for the 3x3
and for a DR1-shaped run record (thousands of groups), and how it scales.

    make bench-view     # scripts/with-env.sh python benchmarks/view_latency.py [--base-url URL --run-id RUN]

1. A DR1-shaped record, built in memory: the 3x3's sites and steps, each step mapped over G
   groups per site (G = 100, 700, 2,500: up to 60,000 task instances, as many ledger step rows),
   timed through each part of a request: reading the task instances from PostgreSQL (a scratch
   table shaped and indexed like Airflow's task_instance, in database drp_viewbench, dropped
   after), building the matrix (drp_campaign/live_status.py), rendering the page and the JSON.
2. With --base-url/--run-id, the real thing: GET /drp/run and /drp/api/status of a run in a
   running Airflow (e.g. the demo's finished 3x3), as the viewer, median of 5.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time

import sqlalchemy as sa

from drp_campaign.config import load_campaign
from drp_campaign.live_status import TaskRow, build_status
from drp_campaign.settings import CAMPAIGNS_DIR

SITE_STEPS = ("step1", "step2a", "step2b", "step2d", "step2e", "step3", "step4", "step5")
T0 = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
REPEATS = 5


def median_s(fn, repeats: int = REPEATS) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def synthetic_run(campaign, groups: int) -> tuple[list[TaskRow], dict]:
    sites = campaign.campaign_sites()
    tasks, steps = [], []
    for site in sites:
        for step in SITE_STEPS:
            for g in range(groups):
                state = "failed" if (site, step, g) == ("FRDF", "step3", 7) else "success"
                tasks.append(TaskRow(f"{site}.{step}", g, state, T0, T0 + dt.timedelta(minutes=5), 1, "r", f"g{g:04d}"))
                steps.append(
                    {
                        "site": site,
                        "step": step,
                        "group_label": f"g{g:04d}",
                        "status": "succeeded" if state == "success" else "failed",
                        "quanta_succeeded": 16,
                        "quanta_total": 16,
                        "quanta_failed": 0,
                        "quanta_accepted": 0,
                        "attempts": 1,
                        "duration_s": 300.0,
                        "wms_run_id": f"{site}-{step}-{g}",
                        "output_run": f"drp/x/{site}/{step}/g{g:04d}",
                        "started": str(T0),
                        "finished": str(T0),
                    }
                )
    hops = [
        {
            "hop": hop,
            "from": src,
            "to": dst,
            "sent": 1000 * groups,
            "arrived": 1000 * groups,
            "bytes": 10**9,
            "problems": [],
            "rule_id": f"rule-{hop}-{src}",
            "rule_state": "OK",
        }
        for site in sites
        if site != "USDF"
        for hop, src, dst in (
            ("place_inputs", "USDF", site),
            ("gather_for_step2c", site, "USDF"),
            ("distribute_step2c", "USDF", site),
            ("return_products", site, "USDF"),
        )
    ]
    report = {"run_key": "r", "ledger_balanced": True, "steps": steps, "hops": hops, "released": [], "reviews": []}
    return tasks, report


def read_from_postgres(tasks: list[TaskRow]) -> float:
    """Median seconds to read one run's task instances from a table shaped like Airflow's."""
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS drp_viewbench WITH (FORCE)"))
        conn.execute(sa.text("CREATE DATABASE drp_viewbench"))
    engine = sa.create_engine(f"{PG}/drp_viewbench")
    try:
        meta = sa.MetaData()
        ti = sa.Table(
            "task_instance",
            meta,
            sa.Column("dag_id", sa.String(250), primary_key=True),
            sa.Column("run_id", sa.String(250), primary_key=True),
            sa.Column("task_id", sa.String(250), primary_key=True),
            sa.Column("map_index", sa.Integer, primary_key=True),
            sa.Column("state", sa.String(20)),
            sa.Column("start_date", sa.DateTime(timezone=True)),
            sa.Column("end_date", sa.DateTime(timezone=True)),
            sa.Column("try_number", sa.Integer),
            sa.Column("rendered_map_index", sa.String(250)),
        )
        meta.create_all(engine)
        rows = [
            dict(
                dag_id="campaign_dr1",
                run_id=f"run-{r}",
                task_id=t.task_id,
                map_index=t.map_index,
                state=t.state,
                start_date=t.start_date,
                end_date=t.end_date,
                try_number=1,
                rendered_map_index=t.group,
            )
            for r in range(3)
            for t in tasks
        ]  # this run and two others in the same table
        with engine.begin() as conn:
            conn.execute(ti.insert(), rows)
            conn.execute(sa.text("ANALYZE task_instance"))
        query = sa.select(
            ti.c.task_id,
            ti.c.map_index,
            ti.c.state,
            ti.c.start_date,
            ti.c.end_date,
            ti.c.try_number,
            ti.c.run_id,
            ti.c.rendered_map_index,
        ).where(ti.c.dag_id == "campaign_dr1", ti.c.run_id == "run-1")

        def read():
            with engine.connect() as conn:
                return [TaskRow(*r) for r in conn.execute(query)]

        seconds, read_rows = median_s(read)
        assert len(read_rows) == len(tasks)
        return seconds
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text("DROP DATABASE IF EXISTS drp_viewbench WITH (FORCE)"))


def in_memory(campaign) -> None:
    from drp_campaign.plugins.campaign_view_app import _ledger_html, _matrix_html

    run = {"dag_id": "campaign_dr1", "run_id": "run-1", "state": "running", "start_date": T0}
    print(
        f"{'groups/site/step':>16} {'task inst.':>10} {'read PG':>8} {'build':>7} {'page':>7} {'JSON':>7} "
        f"{'total page':>10} {'page KB':>8}"
    )
    for groups in (100, 700, 2500):
        tasks, report = synthetic_run(campaign, groups)
        read_s = read_from_postgres(tasks)
        build_s, status = median_s(lambda: build_status(campaign, run, tasks, report, {}, {}, now=T0))
        page_s, page = median_s(lambda: _matrix_html(status) + _ledger_html(report, status))
        json_s, body = median_s(lambda: json.dumps(status, default=str))
        print(
            f"{groups:>16} {len(tasks):>10} {read_s:>7.3f}s {build_s:>6.3f}s {page_s:>6.3f}s {json_s:>6.3f}s "
            f"{read_s + build_s + page_s:>9.3f}s {len(page) / 1e3:>8.0f}"
        )


def over_http(base_url: str, run_id: str) -> None:
    from drp_campaign.airflow_client import AirflowClient

    viewer = AirflowClient(base_url=base_url, username="viewer")
    for path in ("/drp/run", "/drp/api/status"):

        def get(path=path):
            answer = viewer.session.get(f"{base_url}{path}", params={"run_id": run_id}, timeout=60)
            answer.raise_for_status()
            return answer

        seconds, answer = median_s(get)
        print(f"GET {path:<16} {seconds:.3f} s (median of {REPEATS}), {len(answer.content) / 1e3:.0f} kB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="a running Airflow with the campaign view (e.g. http://127.0.0.1:8090)")
    parser.add_argument("--run-id", help="a run of it to ask for")
    args = parser.parse_args()
    campaign = load_campaign(CAMPAIGNS_DIR / "test-3x3.yaml")
    print("DR1-shaped run records (3 sites x 8 mapped steps x G groups), median of 5:")
    in_memory(campaign)
    if args.base_url and args.run_id:
        print(f"\nThe real view of run {args.run_id} at {args.base_url}:")
        over_http(args.base_url, args.run_id)


if __name__ == "__main__":
    main()
