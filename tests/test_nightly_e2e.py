"""The nightly test campaign in real Airflow, from its schedule, on its own services.

Its own module so that pytest-xdist runs it beside the 3x3's (test_campaign_e2e.py), each with its
own Airflow, Rucio, ledger, broker database and work dir (conftest.NIGHTLY_E2E_ENV): the suite's
longest module is then the 3x3's alone. UKDF_LANCS runs on an Edge worker (sites.yaml edge_worker).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import NIGHTLY_E2E_ENV
from test_campaign_e2e import assert_each_site_worker_ran_its_sites_tasks_only, ends, look, wait_until

from drp_campaign import graph, nightly
from drp_campaign.airflow_client import AirflowClient
from drp_campaign.alerts import alerts_file
from drp_campaign.config import load_campaign
from drp_campaign.settings import CAMPAIGNS_DIR

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

E2E_STACK = NIGHTLY_E2E_ENV  # conftest's airflow_env starts these services for this module


def test_the_nightly_runs_from_its_schedule_on_four_sites_and_posts_its_summary(airflow_env, browser):
    """nightly.yaml (USDF / FRDF / UKDF_LANCS) unpaused, the scheduler
    creates tonight's run itself from the cron (catchup off: the latest 03:00), UKDF_LANCS seeded
    like every campaign site; the run ends with its nightly summary, posted through the alert
    channels and shown in the campaign view."""
    nightly_file = CAMPAIGNS_DIR / "nightly.yaml"
    subprocess.run(
        [f"{airflow_env['DRP_CONTROLLER_PREFIX']}/bin/drp-campaign", "seed", str(nightly_file)],
        check=True,
        env=airflow_env,
    )
    dag_id = load_campaign(nightly_file).dag_id()
    client = AirflowClient()
    client.wait_for_dag(dag_id)
    client.unpause(dag_id)  # (pausing it again would hold tonight's run too: the next is tomorrow 03:00)
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
