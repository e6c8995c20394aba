"""Sites in real Airflow, on services of their own: a site down failed over, and the nightly.

1. A slice of the 3x3 campaign (FRDF's tract 3, FRDF and UKDF_RAL) with FRDF's worker dead: failed
   over to UKDF_RAL from the campaign view's form; FRDF's worker back; nothing ran twice. The same
   run carries more fault drills: triggered twice at once, the metadata DB down for 10 s, Airflow's
   services killed during the fan-in and the fan-out.
2. The nightly campaign from its schedule on USDF, FRDF and UKDF_LANCS (an Edge worker: sites.yaml
   edge_worker), its summary posted and shown.

Its own module so that pytest-xdist runs it beside the 3x3's (test_campaign_e2e.py), each with its
own Airflow, Rucio, ledger, broker database and work dir (conftest.NIGHTLY_E2E_ENV): the suite's
longest module is then shorter.
"""

from __future__ import annotations

import functools
import json
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from conftest import NIGHTLY_E2E_ENV
from private_postgres import PrivatePostgres
from test_campaign_e2e import (
    CAMPAIGN_FILE,
    DAG_ID,
    assert_each_site_worker_ran_its_sites_tasks_only,
    ends,
    expected_products,
    hub_counts,
    kill_service,
    look,
    record_drills,
    seeded,
    states_by_task,
    unpaused,
    wait_until,
)

from drp_campaign import bps, graph, nightly
from drp_campaign.airflow_client import AirflowApiError, AirflowClient
from drp_campaign.alerts import alerts_file
from drp_campaign.config import load_campaign
from drp_campaign.ledger import Ledger
from drp_campaign.settings import CAMPAIGNS_DIR, PROJECT_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

E2E_STACK = NIGHTLY_E2E_ENV  # conftest's airflow_env starts these services for this module


def rules_made_twice(airflow_env, campaign, key) -> dict[tuple[str, str], int]:
    """Each hop dataset of the run with more than one Rucio rule toward one RSE expression (a hop
    task run again after a kill must find its rule, not make another)."""
    from drp_campaign.transfer.rucio import rucio_client

    rucio = rucio_client(json.loads((Path(airflow_env["DRP_WORK_DIR"]) / "rucio" / "connection.json").read_text()))
    counts = Counter(
        (did, rule["rse_expression"])
        for did in rucio.list_dids(campaign.name, [{"name": f"{key}/*"}], did_type="dataset")
        for rule in rucio.list_did_rules(campaign.name, did)
    )
    return {k: n for k, n in counts.items() if n > 1}


def trigger_twice_at_once(conf: dict) -> tuple[str, AirflowApiError]:
    """Two triggers of the same choices at the same instant, from two clients (a double click, two
    people on call): the run made, and the other trigger's refusal."""
    clients, barrier = [AirflowClient(), AirflowClient()], threading.Barrier(2)

    def trigger(client):
        barrier.wait()
        try:
            return client.trigger(DAG_ID, conf)
        except AirflowApiError as exc:
            return exc

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(trigger, clients))
    made = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, AirflowApiError)]
    assert len(made) == 1 and len(refused) == 1, outcomes
    return made[0], refused[0]


def restart_what_died(airflow_env) -> None:
    """As a supervisor (systemd, Kubernetes) would: start every service that is not running."""
    subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "airflow-services.sh"), "start"], env=airflow_env, check=True
    )


DB_DOWN_S = 10  # the metadata DB's server stopped this long, then started again
# Each UKDF_RAL transfer of the fan-in to USDF and of the fan-out back is held in flight (the local
# transfer tool's `hold_while` fault) until the drill has killed the services and started them
# again: the wait is deferred on a rule still replicating, however slow the machine is.
HELD_HOPS = {
    "gather_for_step2c": ("isolated_star", "USDF_DISK"),
    "distribute_step2c": ("fgcm_photo_calib", "UKDF_RAL_DISK"),
}


@pytest.fixture(scope="module")
def campaign(airflow_env):
    return seeded(airflow_env)  # the 3x3's


@pytest.fixture(scope="module")
def client(airflow_env, campaign):
    return unpaused()


@pytest.mark.drill
def test_a_site_down_fails_over_and_its_coming_back_runs_nothing_twice(client, campaign, airflow_env, browser):
    """FRDF is down (its worker killed) when a slice of FRDF and UKDF_RAL with FRDF's tract 3 starts.
    Failed over to UKDF_RAL from the campaign view's form (the same as `drp-campaign failover RUN
    --from FRDF --to UKDF_RAL`): tract 3's inputs are placed at UKDF_RAL through Rucio, its steps run
    there (group FRDF-g000), its products come home from there; FRDF's tasks are skipped. While
    UKDF_RAL runs its first step, the PostgreSQL server of the metadata DB and the ledger is
    restarted, down for 10 s; whatever of Airflow
    died meanwhile is started again, FRDF's worker with it: nothing runs there. During the fan-in
    and again during the fan-out (their transfers held in flight), the scheduler, the triggerer and
    the workers of USDF and UKDF_RAL are killed by pid and started again.
    The slice is triggered twice at the same instant: one run is made, the other trigger refused."""
    faults_file = Path(airflow_env["DRP_RUCIO_TRANSFER_FAULTS"])
    held = {hop: faults_file.with_name(f"hold-{hop}") for hop in HELD_HOPS}
    for release in held.values():
        release.touch()
    faults_file.write_text(
        json.dumps(
            [{"name": f"*{kind}*", "rse": rse, "hold_while": str(held[hop])} for hop, (kind, rse) in HELD_HOPS.items()]
        )
    )
    kill_service(airflow_env, "worker-frdf")
    try:
        run_id, refused = trigger_twice_at_once({"sites": ["FRDF", "UKDF_RAL"], "tracts": [3], "review_gates": False})
        assert refused.status == 409 and f"run {run_id!r} of {DAG_ID}" in str(refused), str(refused)
        active = client._get(f"/api/v2/dags/{DAG_ID}/dagRuns", state=["queued", "running"])["dag_runs"]
        assert [r["dag_run_id"] for r in active] == [run_id], "one run made"
        key = graph.run_key(run_id)
        wait_until(
            "FRDF's first task queued for its (dead) worker, UKDF_RAL with nothing to do",
            lambda: (
                (s := states_by_task(client, run_id)).get("FRDF.check_software") == ["queued"]
                and s.get("UKDF_RAL.check_inputs") == ["skipped"]
            ),
        )
        look(
            browser,
            client,
            f"/drp/failover?run_id={quote(run_id)}",
            ["Fail a site over", "Down site", "moves its work to"],
            "view-failover.png",
        )
        # From the campaign view's form, as the operator (the page posts this; a cross-site post is refused).
        token = AirflowClient(username="operator").session.headers["Authorization"].removeprefix("Bearer ")
        form = {"run_id": run_id, "from_site": "FRDF", "to_site": "UKDF_RAL"}
        post = functools.partial(requests.post, f"{client.base_url}/drp/failover", cookies={"_token": token})
        assert post(data=form, headers={"Origin": "http://elsewhere.example"}, timeout=60).status_code == 403
        viewer = AirflowClient(username="viewer").session.headers["Authorization"].removeprefix("Bearer ")
        refused = requests.post(f"{client.base_url}/drp/failover", data=form, cookies={"_token": viewer}, timeout=60)
        assert refused.status_code == 400 and "refused user &#x27;viewer&#x27;" in refused.text, refused.text
        assert Ledger().failovers(graph.run_key(run_id)) == [], "a viewer's failover changes nothing"
        page = post(data=form, timeout=300)
        assert page.status_code == 200 and "tracts [3] of FRDF now run at UKDF_RAL" in page.text, page.text
        wait_until(
            "UKDF_RAL's step1 under way",
            lambda: {"running", "deferred"} & set(states_by_task(client, run_id).get("UKDF_RAL.step1", [])),
            poll_s=0.5,
        )
        # This stack's own PostgreSQL (conftest.NIGHTLY_E2E_ENV), holding the metadata DB and the ledger.
        assert PrivatePostgres(int(airflow_env["DRP_AIRFLOW_DB_PORT"])).down_for(DB_DOWN_S) >= DB_DOWN_S
        restart_what_died(airflow_env)  # FRDF's worker comes back too
        for hop, release in held.items():
            wait_until(
                f"UKDF_RAL.{hop}.wait deferred on its held transfers",
                lambda hop=hop: states_by_task(client, run_id).get(f"UKDF_RAL.{hop}.wait") == ["deferred"],
                timeout_s=900,
            )
            for service in ("scheduler", "triggerer", "worker-usdf", "worker-ukdf_ral"):
                kill_service(airflow_env, service)
            restart_what_died(airflow_env)
            release.unlink()  # the transfers land now
        ends(client, run_id, "success", timeout_s=1200)
    finally:
        faults_file.unlink(missing_ok=True)
        for release in held.values():
            release.unlink(missing_ok=True)
        restart_what_died(airflow_env)
    states = states_by_task(client, run_id)
    assert {s for t, ss in states.items() if t.startswith("FRDF.") for s in ss} == {"skipped"}
    moved = [t for t in client.task_states(DAG_ID, run_id) if t.task_id == "UKDF_RAL.step5"]
    assert [(t.state, t.rendered_map_index) for t in moved] == [("success", "FRDF-g000")]
    assert [(f["tract"], f["from_site"], f["to_site"]) for f in Ledger().failovers(key)] == [(3, "FRDF", "UKDF_RAL")]
    records = Ledger().step_records(key)
    assert {(r["site"], r["group_label"]) for r in records if r["site"] != "USDF"} == {("UKDF_RAL", "FRDF-g000")}
    balances = Ledger().hop_balances(key)
    assert all(b.balanced for b in balances), [b.problems for b in balances]
    placed = {(b.hop, b.dst_site) for b in balances if b.sent}
    assert ("place_inputs", "UKDF_RAL") in placed and ("return_products", "USDF") in placed
    assert not any("FRDF" in (b.src_site, b.dst_site) for b in balances), "nothing moved to or from FRDF"
    assert hub_counts(campaign, key) == expected_products(campaign, tracts=1), "tract 3's products, once"
    assert rules_made_twice(airflow_env, campaign, key) == {}
    inventory = subprocess.run(  # from Rucio and the Butlers, outside Airflow and the ledger
        [f"{airflow_env['DRP_CONTROLLER_PREFIX']}/bin/drp-campaign", "inventory", str(CAMPAIGN_FILE)]
        + ["--run", run_id, "--json"],
        capture_output=True,
        text=True,
        env=airflow_env,
        timeout=600,
    )
    assert inventory.returncode == 0, inventory.stdout[-3000:] + inventory.stderr[-3000:]
    rows = json.loads(inventory.stdout)["rows"]
    assert {r["site_or_rse"] for r in rows} >= {"USDF", "UKDF_RAL"} and "FRDF" not in {r["site_or_rse"] for r in rows}
    report = client._get("/drp/api/run", run_id=run_id)
    assert report["ledger_balanced"] and report["failovers"][0]["by"] == "operator"
    again = subprocess.run(
        [f"{airflow_env['DRP_CONTROLLER_PREFIX']}/bin/drp-campaign", "failover", run_id, "--from", "FRDF"]
        + ["--to", "UKDF_RAL"],
        capture_output=True,
        text=True,
        env=airflow_env,
        timeout=300,
    )
    assert again.returncode == 1 and "has finished (success): nothing left to move" in again.stderr, again.stderr
    # FRDF's worker is back and takes the task message queued before: Airflow refuses it (skipped).
    time.sleep(15)
    assert set(states_by_task(client, run_id)["FRDF.check_software"]) == {"skipped"}
    assert not bps.run_dir(campaign, key, "FRDF", "step1", "g000").exists(), "no BPS run at FRDF"
    record_drills(
        campaign,
        key,
        run_id,
        [
            (
                "site down, failed over",
                "FRDF's worker killed before the run (tract 3); failed over to UKDF_RAL from the view",
                "tract 3 placed, run and returned from UKDF_RAL; FRDF's worker back: its queued task refused",
            ),
            (
                "metadata database down",
                f"the server of the metadata DB and the ledger restarted, down {DB_DOWN_S} s, UKDF_RAL step1 running",
                "what died was started again; services and tasks reconnected; the run went on and succeeded",
            ),
            (
                "same campaign triggered twice at once",
                "two triggers of the slice's choices at the same instant (two API clients)",
                "one run made; the other trigger refused (409) naming it; that run went on as above",
            ),
            (
                "services killed during a fan-in and a fan-out",
                f"scheduler, triggerer, USDF's and UKDF_RAL's workers (SIGKILL) while UKDF_RAL's "
                f"{' and '.join(HELD_HOPS)} transfers were in flight (held until then)",
                "started again; each hop's wait found its rule and went on; one rule per hop, every dataset once",
            ),
        ],
        tracts=1,
        extra_runs=len(active) - 1,
    )


def test_the_nightly_runs_from_its_schedule_on_four_sites_and_posts_its_summary(airflow_env, browser):
    """nightly.yaml (USDF / FRDF / UKDF_LANCS) unpaused, the scheduler
    creates tonight's run itself from the cron (catchup off: the latest 03:00), UKDF_LANCS seeded
    like every campaign site; the run ends with its nightly summary, posted through the alert
    channels and shown in the campaign view."""
    nightly_file = CAMPAIGNS_DIR / "nightly.yaml"
    dag_id = seeded(airflow_env, nightly_file).dag_id()
    client = unpaused(dag_id)  # (pausing it again would hold tonight's run too: the next is tomorrow 03:00)
    wait_until(
        "the scheduler's run of the nightly",
        lambda: client._get(f"/api/v2/dags/{dag_id}/dagRuns", run_type="scheduled")["dag_runs"],
        timeout_s=120,
    )
    [run] = client._get(f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
    assert (
        run["run_type"] == "scheduled"
        and run["dag_run_id"].startswith("scheduled__")
        and "T03:00:00" in run["dag_run_id"]
    )
    ends(client, run["dag_run_id"], "success", dag_id=dag_id)
    # UKDF_LANCS (edge_worker in sites.yaml) ran on its Edge worker, which had no metadata DB or broker.
    assert_each_site_worker_ran_its_sites_tasks_only(client, load_campaign(nightly_file), run["dag_run_id"], dag_id)

    key = graph.run_key(run["dag_run_id"])
    summary = json.loads(nightly.summary_file(key).read_text())
    assert summary["verdict"] == "PASS" and list(summary["sites"]) == ["USDF", "FRDF", "UKDF_LANCS"]
    assert all(s["verdict"] == "PASS" and s["duration_s"] > 0 for s in summary["sites"].values())
    assert summary["hops"] and all(h["verdict"] == "PASS" for h in summary["hops"].values())
    posted = [json.loads(line) for line in alerts_file().read_text().splitlines()]
    [alert] = [a for a in posted if a["kind"] == "nightly_summary" and a["run_id"] == run["dag_run_id"]]
    assert alert["detail"].startswith(f"Nightly nightly {run['dag_run_id']}: PASS") and alert["summary"] == summary
    look(browser, client, f"/drp/run?run_id={key}", ["Nightly summary: PASS", "UKDF_LANCS"], "view-nightly.png")
