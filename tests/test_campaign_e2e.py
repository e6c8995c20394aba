"""The whole 3x3 campaign in real Airflow, with real Butler repos and the real stack.

The full 3x3 runs once, with its drills inside it:
1. A fault: one quantum of step2b at FRDF fails. FRDF's task fails naming that quantum; the other
   sites run up to the fan-in barrier and step2c does not start; UKDF_RAL's step2a jobs die once
   (a transient fault) and the operator restarts their BPS runs by itself.
2. With the fault removed, a retry (clearing the failed tasks) rescues the failed group into a
   new RUN; the review gate before step2c asks, the operator approves, and the campaign
   completes: every task succeeds, the ledger balances, USDF holds exactly the expected products
   (no duplicate), and datasets keep their UUIDs across sites;
   products reach USDF_TAPE, and only then are the sites' copies released (their Butler forgets
   them, Rucio's reaper deletes the files); the inventory balances.
3. On that same run: re-running finished hop, tape and release tasks changes nothing.
Everything runs on CeleryExecutor, one worker per site queue; the full run proves from the task
instances' hostnames and queues that each site's tasks ran on that site's worker only.
The other scenarios run on slices: FRDF's worker killed by pid mid-step comes back and the
retried step finds its BPS run, a cancel from the UI really stops a BPS run, and a scheduler
and triggerer killed while another run is in flight come back to exactly that one run (FRDF
alone, step1); the trigger form's choices and a dry run (USDF + FRDF, one tract each); a
calibration missing at the hub (UKDF_RAL, one tract); a site running another task config, which
the site-independence QA catches (FRDF and UKDF_RAL, tract 2). The full run also proves the site QA
on its two overlap tracts (2 at UKDF_RAL, 4 at the hub). The nightly and a site failed over run
beside this module, on their own services (test_sites_e2e.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import sqlalchemy as sa
import yaml
from conftest import E2E_ENV

from drp_campaign import bps, faults, graph, live_status, workers
from drp_campaign.airflow_client import AirflowClient
from drp_campaign.alerts import alerts_file
from drp_campaign.config import load_campaign
from drp_campaign.drills import RELEASE_JOBS, faults_file
from drp_campaign.ledger import Ledger, campaign_runs, hop_files, site_releases
from drp_campaign.settings import CAMPAIGNS_DIR, PROJECT_ROOT, stack_env_allowed
from drp_campaign.stack import run_stack

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CAMPAIGN_FILE = CAMPAIGNS_DIR / "test-3x3.yaml"
DAG_ID = "campaign_test_3x3"


def seeded(airflow_env, campaign_file=CAMPAIGN_FILE):
    """The campaign, its sites' Butler repos seeded (inputs at the hub only)."""
    subprocess.run(
        [f"{airflow_env['DRP_CONTROLLER_PREFIX']}/bin/drp-campaign", "seed", str(campaign_file)],
        check=True,
        env=airflow_env,
    )
    return load_campaign(campaign_file)


def unpaused(dag_id=DAG_ID) -> AirflowClient:
    """A client (as the operator), once Airflow has the DAG, unpaused."""
    c = AirflowClient()
    c.wait_for_dag(dag_id)
    c.unpause(dag_id)
    return c


@pytest.fixture(scope="module")
def campaign(airflow_env):
    return seeded(airflow_env)


@pytest.fixture(scope="module")
def client(airflow_env, campaign):
    return unpaused()


def expected_products(campaign, tracts: int | None = None) -> dict[str, int]:
    """What USDF must hold after a run of TRACTS tracts (default: all the campaign's), from the
    synthetic sky's size: one per data ID."""
    sky = campaign.data.synthetic
    tracts = sum(len(t) for t in campaign.tracts.values()) if tracts is None else tracts
    visits = tracts * sky.visits_per_tract
    return {
        "isolated_star": tracts,
        "preliminary_visit_summary": visits,
        "fgcm_fit": 1,
        "fgcm_photo_calib": 1,
        "deep_coadd": tracts * sky.patches_per_tract * len(sky.bands),
        "visit_summary": visits,
        "object_table": tracts,
        "qa_metrics": tracts,
        "campaign_qa_summary": 1,
    }


def stack(campaign, site, subcommand, *args):
    return run_stack(campaign.sites_config.sites[site], subcommand, list(args), log=lambda line: None)


def hub_counts(campaign, key):
    """Every dataset (not just the first found) in every RUN of the hub's chain: duplicates would show."""
    hub = campaign.sites_config.sites["USDF"]
    types = ",".join(expected_products(campaign))
    return stack(
        campaign,
        "USDF",
        "count-datasets",
        "--repo",
        str(hub.butler_repo_path()),
        "--collections",
        graph.site_chain(campaign, key),
        "--dataset-types",
        types,
    )


def second_submissions(campaign, key) -> int:
    """BPS submissions of a step group beyond its first, over the whole run (a restart or a
    rescue is not one: it reruns what failed, in the same run or into a new RUN)."""
    records = (bps.run_dir(campaign, key, "x", "x", "x").parents[2]).glob(f"*/*/*/{bps.RECORD}")
    return sum(max(0, [a["kind"] for a in json.loads(r.read_text())["attempts"]].count("submit") - 1) for r in records)


def record_drills(
    campaign, key, run_id, drills: list[tuple[str, str, str]], tracts: int | None = None, extra_runs: int = 0
) -> None:
    """The fault table's rows (drp_campaign/faults.py) of the drills in one run, from what it left:
    products at the hub against what TRACTS tracts must make, second BPS submissions, and runs made
    beyond this one for the same work (EXTRA_RUNS)."""
    lost, extra = faults.lost_and_duplicated(expected_products(campaign, tracts), hub_counts(campaign, key))
    duplicated = extra + second_submissions(campaign, key) + extra_runs
    for drill, injected, outcome in drills:
        faults.record_drill(faults.DrillRow(drill, injected, outcome, lost, duplicated, run_id))


def dataset_ids(campaign, site, key, runs_of, types, tmp_path):
    """UUIDs of `types` at `site` in the RUNs that `runs_of` produced, read from that site's Butler."""
    manifest = tmp_path / f"{site}-{runs_of}.json"
    stack(
        campaign,
        site,
        "export-hop",
        "--repo",
        str(campaign.sites_config.sites[site].butler_repo_path()),
        "--collections",
        graph.site_runs_pattern(campaign, key, runs_of),
        "--dataset-types",
        types,
        "--manifest",
        str(manifest),
    )
    return {e["dataset_id"] for e in json.loads(manifest.read_text())["entries"]}


def states_by_task(client, run_id):
    states: dict[str, list[str | None]] = {}
    for t in client.task_states(DAG_ID, run_id):
        states.setdefault(t.task_id, []).append(t.state)
    return states


def ends(client, run_id, expected: str, timeout_s: float = 1800, dag_id: str = DAG_ID) -> None:
    """Follow the run to its end; if it ends otherwise than EXPECTED, fail naming the tasks that
    failed and the last lines of their logs (CI keeps nothing else)."""
    state = client.follow(dag_id, run_id, timeout_s=timeout_s, on_progress=None)
    if state == expected:
        return
    lines = [f"run {run_id} ended {state}, expected {expected}"]
    for t in client.task_states(dag_id, run_id):
        if t.state == "failed":
            tail = client.task_log(dag_id, run_id, t.task_id, t.map_index).splitlines()[-40:]
            lines += [f"--- {t.task_id}[{t.map_index}] failed; log tail:", *tail]
    pytest.fail("\n".join(lines))


FRDF_QUANTUM_FAULT = {"site": "FRDF", "step": "step2b", "task": "isolatedStarAssociation", "where": "tract = 2"}
UKDF_RAL_TRANSIENT = {"site": "UKDF_RAL", "step": "step2a", "job": "transient"}


@pytest.mark.drill
def test_the_3x3_with_its_drills_fails_for_review_and_a_retry_completes_it_clean(
    client, campaign, tmp_path, airflow_env
):
    """The one full 3x3 of the suite, with its drills inside: FRDF's step2b quantum fails for
    review and holds the fan-in barrier, UKDF_RAL's step2a jobs die once and are restarted by the
    operator; with the fault removed, a retry rescues FRDF's group and the campaign completes with
    everything a clean run must show (ledger, products, UUIDs, tape, releases, inventory)."""
    faults_file().parent.mkdir(parents=True, exist_ok=True)
    faults_file().write_text(yaml.safe_dump([FRDF_QUANTUM_FAULT, UKDF_RAL_TRANSIENT]))
    try:
        run_id = client.trigger(DAG_ID)
        ends(client, run_id, "failed", timeout_s=1800)
    finally:
        faults_file().unlink()
    key = graph.run_key(run_id)
    assert_the_drills_stopped_frdf_alone_and_ukdf_ral_restarted(client, campaign, run_id, key)

    client.clear_failed(DAG_ID, run_id)
    approve_when_asked(client, run_id, "USDF.review_step2c")
    ends(client, run_id, "success", timeout_s=1800)
    assert_the_retry_rescued_only_what_failed(campaign, key)
    assert_a_complete_clean_run(client, campaign, run_id, key, tmp_path, airflow_env)
    assert_each_site_worker_ran_its_sites_tasks_only(client, campaign, run_id)
    record_drills(
        campaign,
        key,
        run_id,
        [
            (
                "review failure, rescued",
                "FRDF step2b (isolatedStarAssociation, tract 2)",
                "failed for review, the barrier held; after the fix a clear rescued it into a new RUN; run succeeded",
            ),
            (
                "transient job failure",
                "UKDF_RAL step2a, every job once (exit 137)",
                "classified transient; each group's run restarted by the operator; run succeeded",
            ),
        ],
    )


def approve_when_asked(client, run_id: str, gate: str) -> None:
    """What the reviewer does (#15 review gates): once the gate awaits input, approve it as the
    operator user, through the same API the UI's Required Actions page uses."""
    wait_until(
        f"{gate} awaiting a decision",
        lambda: states_by_task(client, run_id).get(gate) == ["awaiting_input"],
        timeout_s=900,
    )
    client.decide(DAG_ID, run_id, gate, approve=True)


def assert_the_drills_stopped_frdf_alone_and_ukdf_ral_restarted(client, campaign, run_id, key):
    states = states_by_task(client, run_id)
    # FRDF's group with tract 2 failed, its other group succeeded; nothing after it at FRDF ran.
    assert sorted(states["FRDF.step2b"]) == ["failed", "success"], "a failure for review is not retried by Airflow"
    assert states["FRDF.gather_for_step2c.register"] == ["upstream_failed"]
    # The other sites ran up to the fan-in barrier, and the barrier held.
    # Each runs its two tracts and one of another site's for the site QA (USDF: 4, UKDF_RAL: 2).
    assert states["USDF.step2b"] == states["UKDF_RAL.step2b"] == ["success"] * 3
    assert states["UKDF_RAL.gather_for_step2c.verify"] == ["success"]
    assert states["USDF.review_step2c"] == states["USDF.step2c"] == ["upstream_failed"], "nobody asked in vain"
    # UKDF_RAL's step2a jobs died once (exit 137): classified transient, restarted, succeeded.
    for group in ("g000", "g001", "overlap-t2"):  # its own two tracts, and FRDF's tract 2
        attempts = bps.read_record(bps.run_dir(campaign, key, "UKDF_RAL", "step2a", group))["attempts"]
        assert [a["kind"] for a in attempts] == ["submit", "restart"]
    assert "transient failures, restarting the run" in client.task_log(DAG_ID, run_id, "UKDF_RAL.step2a", map_index=0)

    # The failure names the quantum: in the task's log and in the ledger's step record.
    [failed] = [r for r in Ledger().step_records(key) if r["status"] == "failed"]
    assert (failed["site"], failed["step"], failed["quanta_failed"]) == ("FRDF", "step2b", 1)
    log = client.task_log(DAG_ID, run_id, "FRDF.step2b", map_index=0)
    assert "isolatedStarAssociation" in log and "tract: 2" in log and "[review]" in log


def assert_the_retry_rescued_only_what_failed(campaign, key):
    [retried] = [
        r for r in Ledger().step_records(key) if (r["site"], r["step"], r["group_label"]) == ("FRDF", "step2b", "g000")
    ]
    assert retried["status"] == "succeeded" and retried["attempts"] >= 2
    # The fix changed the step's definition: the clear rescued the group into a new RUN that
    # made only what had failed; the first RUN and the rescue together hold exactly one.
    attempts = bps.read_record(bps.run_dir(campaign, key, "FRDF", "step2b", "g000"))["attempts"]
    assert [a["kind"] for a in attempts] == ["submit", "rescue"]
    first_run = graph.output_run(campaign, key, "FRDF", "step2b", "g000")
    frdf = campaign.sites_config.sites["FRDF"]
    counts = {
        run: stack(
            campaign,
            "FRDF",
            "count-datasets",
            "--repo",
            str(frdf.butler_repo_path()),
            "--collections",
            run,
            "--dataset-types",
            "isolated_star",
        )["isolated_star"]
        for run in (first_run, attempts[-1]["output_run"])
    }
    assert counts == {first_run: 0, attempts[-1]["output_run"]: 1}


def assert_a_complete_clean_run(client, campaign, run_id, key, tmp_path, airflow_env):
    states = states_by_task(client, run_id)
    assert all(s == ["success"] * len(s) for s in states.values()), states
    assert len(states["FRDF.step1"]) == 2, "two tract groups at FRDF, one mapped task each"

    balances = Ledger().check_balanced(key)
    assert {(b.hop, b.src_site, b.dst_site) for b in balances} == {
        (hop, src, dst)
        for site in ("FRDF", "UKDF_RAL")
        for hop, src, dst in (
            ("place_inputs", "USDF", site),
            ("gather_for_step2c", site, "USDF"),
            ("distribute_step2c", "USDF", site),
            ("return_products", site, "USDF"),
        )
    } | {("archive_products", "USDF", "USDF_TAPE"), ("archive_products", "USDF", "IDAC_UK_DISK")}
    assert all(b.sent > 0 and b.arrived == b.sent for b in balances)
    # The sites started empty: what they processed was placed from USDF, by their tracts only.
    placed = {b.dst_site: b.sent for b in balances if b.hop == "place_inputs"}
    # UKDF_RAL's are for its two tracts and FRDF's tract 2, which it processes too (site QA).
    assert placed == {"FRDF": 2 * 4 * 2 + 2 + 16, "UKDF_RAL": 3 * 4 * 2 + 6 + 24}, (
        "raws + biases (per day) + ref_cat shards"
    )

    assert hub_counts(campaign, key) == expected_products(campaign), "a retry must not duplicate datasets"

    sent = dataset_ids(campaign, "FRDF", key, "FRDF", "isolated_star", tmp_path)
    received = dataset_ids(campaign, "USDF", key, "FRDF", "isolated_star", tmp_path)
    assert len(sent) == 2 and sent == received, "UUIDs are kept across the hop (the rescued one too)"

    report = json.loads((PROJECT_ROOT / "var" / "test-e2e" / "reports" / f"{key}.json").read_text())
    assert report["ledger_balanced"] is True
    assert all(h["rule_id"] and h["rule_state"] == "OK" for h in report["hops"]), "each hop shows its Rucio rule"
    assert {s["step"] for s in report["steps"]} == set(campaign.steps)
    [review] = report["reviews"]
    assert (review["step"], review["decision"], review["by"]) == ("step2c", "approved", "operator")
    assert_site_copies_released_after_tape(campaign, key, report, tmp_path)
    assert_the_overlap_tracts_were_compared_and_counted_once(campaign, key, report)
    assert_inventory_balances(campaign, run_id, airflow_env)
    assert_no_secret_left_the_controller(airflow_env)
    # Airflow lists at most 100 task instances a page; the run has more, and the client read them all.
    assert sum(len(s) for s in states.values()) > 100
    assert all(len(states[f"{site}.step5"]) == len(graph.plan_groups(campaign, site)) for site in campaign.tracts), (
        "the last groups are on page two"
    )


def assert_the_overlap_tracts_were_compared_and_counted_once(campaign, key, report):
    """Tract 2 (FRDF's) was processed at UKDF_RAL too, and tract 4 (UKDF_RAL's) at USDF, the hub;
    both results came home, the same stack made the same numbers (site QA passed), and only the
    own site's copy is a product (chained, counted, archived)."""
    qa = report["site_qa"]
    assert qa["verdict"] == "pass"
    assert [(t["tract"], t["site_a"], t["site_b"], t["failed"]) for t in qa["tracts"]] == [
        (2, "FRDF", "UKDF_RAL", []),
        (4, "UKDF_RAL", "USDF", []),
    ]
    checks = Ledger().site_qa(key)
    assert len(checks) == sum(t["compared"] for t in qa["tracts"]) > 40 and all(c["ok"] for c in checks)
    assert {c["dataset_type"] for c in checks} == {"object_table", "visit_summary", "qa_metrics"}
    for tract in (2, 4):
        assert (Path(qa["report_dir"]) / f"site_qa_tract{tract}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The second copies are at the hub in their own RUNs, outside the chain the products are
    # counted in (hub_counts above equals the one-per-data-ID expectation) and outside what went
    # to tape: UKDF_RAL sent home only the compared types; USDF keeps everything its group made.
    sky = campaign.data.synthetic
    coadds = sky.patches_per_tract * len(sky.bands)
    for second, deep_coadd in (("UKDF_RAL", 0), ("USDF", coadds)):
        second_copy = stack(
            campaign,
            "USDF",
            "count-datasets",
            "--repo",
            str(campaign.sites_config.sites["USDF"].butler_repo_path()),
            "--collections",
            graph.overlap_runs_pattern(campaign, key, second),
            "--dataset-types",
            "object_table,qa_metrics,visit_summary,deep_coadd",
        )
        assert second_copy == {
            "object_table": 1,
            "qa_metrics": 1,
            "visit_summary": sky.visits_per_tract,
            "deep_coadd": deep_coadd,
        }, second
    with Ledger().engine.connect() as conn:
        archived = conn.execute(
            sa.select(hop_files.c.collection).where(hop_files.c.run_key == key, hop_files.c.hop == "archive_products")
        ).scalars()
        assert not [c for c in archived if c.startswith(graph.overlap_root(campaign, key))]


def assert_no_secret_left_the_controller(airflow_env):
    """The canaries planted in the services' environment (E2E_ENV) and Airflow's JWT secret are in
    no file the run wrote (repos, BPS submit dirs and their environment dumps, task logs, reports,
    manifests), no XCom and no ledger row (issue #12 finding 1)."""
    jwt_file = Path(airflow_env["AIRFLOW_HOME"]) / "jwt_secret"
    secrets = [E2E_ENV["SITE_SERVICE_TOKEN"], "canary-ledger-5e2d", jwt_file.read_text().strip()]
    for secret in secrets:
        found = subprocess.run(
            ["grep", "-rlaF", "--exclude", jwt_file.name, secret, E2E_ENV["DRP_WORK_DIR"]],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert found == [], f"{secret[:12]}... written to {found[:5]}"
    dumps = list((Path(E2E_ENV["DRP_WORK_DIR"]) / "bps").rglob("*.env.info.yaml"))
    assert dumps, "bps submit's environment dumps are among the files searched"
    assert all(stack_env_allowed(name) for path in dumps for name in yaml.safe_load(path.read_text()))
    for db in (E2E_ENV["DRP_AIRFLOW_DB"], "drp_ledger_test"):
        dump = subprocess.run(
            ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--data-only", db],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "COPY public.xcom " in dump or "COPY public.hop_files " in dump, "the tables searched are there"
        assert not [s for s in secrets if s in dump], f"a secret is in database {db}"


def assert_inventory_balances(campaign, run_id, airflow_env):
    """From outside Airflow, Rucio and the Butlers agree: inputs verified at the sites, products at
    USDF, tape and the IDAC; the sites' released copies shown as released; every other copy Rucio
    holds (each site's fan-in outputs, the hub's inputs) listed and verified."""
    proc = subprocess.run(
        [
            f"{airflow_env['DRP_CONTROLLER_PREFIX']}/bin/drp-campaign",
            "inventory",
            str(CAMPAIGN_FILE),
            "--run",
            run_id,
            "--json",
        ],
        capture_output=True,
        text=True,
        env=airflow_env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    inventory = json.loads(proc.stdout)
    assert inventory["balanced"] is True
    rows = {(r["site_or_rse"], r["hop"], r["dataset_type"]): r for r in inventory["rows"]}
    # UKDF_RAL's inputs are for its two tracts and FRDF's tract 2, which it processes too.
    for site, raws, biases, shards in (("FRDF", 16, 2, 16), ("UKDF_RAL", 24, 6, 24)):
        placed = {t: rows[(site, "place_inputs", t)] for t in ("raw", "bias", "ref_cat")}
        assert {t: (r["expected"], r["verified"], r["state"]) for t, r in placed.items()} == {
            "raw": (raws, raws, "ok"),
            "bias": (biases, biases, "ok"),
            "ref_cat": (shards, shards, "ok"),
        }
        assert rows[(site, "distribute_step2c", "fgcm_photo_calib")]["state"] == "released"
        # The site's own copy of what it sent to step2c: Rucio holds it for the hop's 30 days (#12 finding 5).
        held = {t: rows[(site, "gather_for_step2c", t)] for t in ("isolated_star", "preliminary_visit_summary")}
        assert {t: (r["expected"], r["verified"], r["rucio_available"], r["state"]) for t, r in held.items()} == {
            "isolated_star": (2, 2, 2, "ok"),
            "preliminary_visit_summary": (8, 8, 8, "ok"),
        }
    assert rows[("USDF", "archive_products", "object_table")]["verified"] == 6, "the hub's copy of what went to tape"
    assert {r["state"] for (where, hop, _), r in rows.items() if (where, hop) == ("USDF", "place_inputs")} == {"ok"}
    for rse in ("USDF_TAPE", "IDAC_UK_DISK"):
        assert rows[(rse, "archive_products", "object_table")]["verified"] == 6


def assert_site_copies_released_after_tape(campaign, key, report, tmp_path):
    """Products went to tape; then FRDF's Butler forgot its copies and Rucio's reaper deleted the files."""
    [tape] = [h for h in report["hops"] if h["to"] == "USDF_TAPE"]
    assert (
        tape["arrived"]
        == tape["sent"]
        == sum(
            n for t, n in expected_products(campaign).items() if t in campaign.hops["archive_products"].dataset_types
        )
    ), "every product and metric of the run is on tape"
    assert {(r["site"], r["hop"]) for r in report["released"]} == {
        (site, hop) for site in ("FRDF", "UKDF_RAL") for hop in ("return_products", "distribute_step2c")
    }
    assert all(r["files"] > 0 and r["rules"] for r in report["released"])

    with Ledger().engine.connect() as conn:
        sent_products = set(
            conn.execute(
                sa.select(hop_files.c.dataset_id).where(
                    hop_files.c.run_key == key,
                    hop_files.c.hop == "return_products",
                    hop_files.c.src_site == "FRDF",
                    hop_files.c.dataset_type == "object_table",
                )
            ).scalars()
        )
    assert len(sent_products) == 2
    assert dataset_ids(campaign, "FRDF", key, "FRDF", "object_table", tmp_path) == set(), (
        "FRDF's Butler forgot its copy"
    )
    assert dataset_ids(campaign, "USDF", key, "FRDF", "object_table", tmp_path) == sent_products, (
        "USDF keeps them, same UUIDs"
    )

    # Rucio's reaper (in the daemon loop) deletes the released files at FRDF; USDF's and tape's stay.
    manifests = PROJECT_ROOT / "var" / "test-e2e" / "transfers" / "manifests" / key
    released = [e for e in json.loads((manifests / "return_products" / "FRDF-USDF.source.json").read_text())["entries"]]
    usdf_root = campaign.sites_config.sites["USDF"].butler_repo_path()
    deadline = time.monotonic() + 120
    while any(Path(e["path"]).exists() for e in released) and time.monotonic() < deadline:
        time.sleep(2)
    assert not any(Path(e["path"]).exists() for e in released), "the reaper deletes released site copies"
    assert all((usdf_root / e["relpath"]).is_file() for e in released)
    assert all((PROJECT_ROOT / "var" / "test-e2e" / "rse" / "USDF_TAPE" / e["relpath"]).is_file() for e in released)


def assert_each_site_worker_ran_its_sites_tasks_only(client, campaign, run_id, dag_id=DAG_ID) -> None:
    """From Airflow's task instances: each ran on the worker of the queue it was sent to (the
    worker's hostname ends with its queue), every queue is one site's, a site's steps went to that
    site's queue, an Edge site's tasks to the Edge executor (the others to the default, Celery),
    and every site's worker took part."""
    sites = campaign.sites_config.sites
    queues = workers.site_queues(campaign.sites_config)
    ran = [t for t in client.task_states(dag_id, run_id) if t.hostname]
    assert len(ran) > 50, f"only {len(ran)} task instances carry a hostname"
    for t in ran:
        assert t.queue in queues, f"{t.label} went to queue {t.queue!r}, which no site's worker consumes"
        assert t.hostname.endswith(f"-{t.queue}"), f"{t.label}, queued for {t.queue}, ran on {t.hostname}"
        site, column = live_status.locate(t.task_id, campaign.hub())
        if column in campaign.steps:
            assert queues[t.queue] == site, f"{t.label} (a step of {site}) ran on {queues[t.queue]}'s worker"
        expected = "EdgeExecutor" if sites[queues[t.queue]].edge_worker else None
        assert t.executor == expected, f"{t.label} ran on executor {t.executor}, not {expected or 'the default'}"
    assert {queues[t.queue] for t in ran} == set(campaign.tracts) | {campaign.hub()}


def _finished_full_run() -> str:
    """The run id of the full campaign test's run (this module runs it first)."""
    with Ledger().engine.connect() as conn:
        released = sa.select(site_releases.c.run_key)
        run = conn.execute(sa.select(campaign_runs).where(campaign_runs.c.run_key.in_(released))).first()
    assert run is not None, "the full campaign test must have run first in this module"
    return run.dag_run_id


def _hop_state(campaign, key) -> dict:
    """Everything a re-run could duplicate: ledger rows, and per hop dataset its Rucio files and rules."""
    from drp_campaign.transfer.rucio import rucio_client

    ledger = Ledger()
    conn_info = json.loads((PROJECT_ROOT / "var" / "test-e2e" / "rucio" / "connection.json").read_text())
    rucio = rucio_client(conn_info)
    datasets = {}
    for did in rucio.list_dids(campaign.name, [{"name": f"{key}/*"}], did_type="dataset"):
        datasets[did] = (
            sorted(f["name"] for f in rucio.list_files(campaign.name, did)),
            sorted((r["rse_expression"], r["id"]) for r in rucio.list_did_rules(campaign.name, did)),
        )
    return {
        "hop_files": sorted(
            (b.hop, b.src_site, b.dst_site, b.sent, b.arrived, b.arrived_bytes) for b in ledger.hop_balances(key)
        ),
        "rules": sorted((r["hop"], r["src_site"], r["dst_site"], r["rule_id"], r["state"]) for r in ledger.rules(key)),
        "released": sorted((r["hop"], r["site"], r["files"], r["bytes"], r["rule_ids"]) for r in ledger.releases(key)),
        "datasets": datasets,
        "hub": hub_counts(campaign, key),
    }


def test_rerunning_finished_hop_archive_and_release_tasks_changes_nothing(client, campaign):
    """Clear what already succeeded (the input placement, a fan-in after its copy was released, the
    tape hop, the release, the report): the run succeeds again and no DID, rule, ledger row or
    dataset is added."""
    run_id = _finished_full_run()
    key = graph.run_key(run_id)
    before = _hop_state(campaign, key)
    # Per site: place_inputs, gather_for_step2c, return_products; distribute_step2c and archive_products once.
    assert len(before["datasets"]) == 8 and all(files for files, _ in before["datasets"].values())
    hop_tasks = ("register", "replicate", "wait", "ingest", "verify")
    tasks = [f"FRDF.{hop}.{t}" for hop in ("place_inputs", "return_products", "distribute_step2c") for t in hop_tasks]
    tasks += [f"USDF.archive_products.{t}" for t in ("register", "replicate", "wait", "confirm_tape")]
    tasks += ["FRDF.release_site_copies", "campaign_report"]
    assert set(client.clear_tasks(DAG_ID, run_id, tasks)) == set(tasks)
    ends(client, run_id, "success", timeout_s=900)
    assert _hop_state(campaign, key) == before
    states = states_by_task(client, run_id)
    # The calibration FRDF was sent and has since released is not delivered again.
    assert states["FRDF.distribute_step2c.replicate"] == ["skipped"] and states["FRDF.distribute_step2c.verify"] == [
        "skipped"
    ]
    assert all(states[t] == ["success"] for t in tasks if "distribute_step2c" not in t), states


SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"


def look(browser, client, path: str, expect: list[str], png: str) -> str:
    """Open a campaign view page in Chromium logged in as the viewer, wait for EXPECT on it, and
    save its screenshot for the docs (docs/screenshots); returns the page's text."""
    token = AirflowClient(username="viewer").session.headers["Authorization"].removeprefix("Bearer ")
    browser.login(client.base_url, token)
    text = browser.open(client.base_url + path, expect)
    browser.screenshot(SCREENSHOTS / png)
    return text


def wait_until(what, check, timeout_s: float = 300, poll_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s:.0f} s"
        time.sleep(poll_s)
    return found


def kill_service(airflow_env, service: str) -> None:
    """Kill an Airflow service or a site's worker as a crash would: SIGKILL to its process group."""
    pid = (Path(airflow_env["AIRFLOW_HOME"]) / "pids" / f"{service}.pid").read_text().strip()
    subprocess.run(["kill", "-KILL", "--", f"-{pid}"], check=False)


def trigger_started(airflow_env, run_id: str, task_id: str, map_index: int) -> bool:
    """The triggerer has started this task instance's trigger (Airflow logs `... starting` in its log)."""
    logs = (
        Path(airflow_env["AIRFLOW_HOME"])
        / "logs"
        / f"dag_id={DAG_ID}"
        / f"run_id={run_id}"
        / f"task_id={task_id}"
        / f"map_index={map_index}"
    )
    return any(" starting" in log.read_text() for log in logs.glob("attempt=*.log.trigger.*.log"))


@pytest.mark.drill
def test_a_worker_killed_mid_step_a_cancel_from_the_ui_and_a_scheduler_restart_keep_exactly_one_bps_run(
    client, campaign, airflow_env, browser
):
    # The jobs wait until released below (at most 600 s), outlasting what follows: a worker's death
    # noticed (the heartbeat timeout, 60 s here), the retry, the cancel, the scheduler's restart.
    faults_file().write_text(yaml.safe_dump([{"site": "FRDF", "step": "step1", "job": "slow:600"}]))
    try:
        run_id = client.trigger(DAG_ID, {"sites": ["FRDF"]})
        key = graph.run_key(run_id)
        run_dirs = [bps.run_dir(campaign, key, "FRDF", "step1", group) for group in ("g000", "g001")]
        # FRDF's Celery worker killed by pid mid-step: both groups have submitted their BPS runs and
        # wait on them in the task, on that worker. It comes back; Airflow sees the tasks' heartbeats
        # stop and retries them; each retry finds its BPS run and waits on it: no second submission.
        wait_until(
            "both FRDF.step1 groups waiting on their BPS runs in the task",
            lambda: (
                states_by_task(client, run_id).get("FRDF.step1") == ["running", "running"]
                and all(bps.read_record(d) for d in run_dirs)
            ),
            poll_s=0.5,
        )
        kill_service(airflow_env, "worker-frdf")
        subprocess.run(
            ["bash", str(PROJECT_ROOT / "scripts" / "airflow-services.sh"), "start"], env=airflow_env, check=True
        )
        wait_until(
            "both FRDF.step1 groups deferred",
            lambda: states_by_task(client, run_id).get("FRDF.step1") == ["deferred", "deferred"],
        )
    finally:
        faults_file().unlink()
    retried = [t for t in client.task_states(DAG_ID, run_id) if t.task_id == "FRDF.step1"]
    assert [t.try_number for t in retried] == [2, 2], "the killed worker's tasks were retried"
    assert all(t.hostname.endswith("-frdf") for t in retried), [t.hostname for t in retried]
    # What on-call sees meanwhile: both groups waiting on their BPS runs, the page refreshing itself.
    status = client._get("/drp/api/status", run_id=run_id)
    assert status["state"] == "running" and status["sites"][1]["cells"]["step1"]["counts"] == {"deferred": 2}
    look(
        browser,
        client,
        f"/drp/run?run_id={key}",
        ["Sites and steps", "deferred", "refreshes every"],
        "view-running.png",
    )

    # Mark g001 failed in the UI while its wait runs in the triggerer: the trigger's on_kill cancels
    # its BPS run for real. (In the second or two between deferral and the triggerer starting the
    # trigger there is no on_kill to call: see README, "a cancel from the UI".)
    wait_until("g001's trigger running in the triggerer", lambda: trigger_started(airflow_env, run_id, "FRDF.step1", 1))
    cancelled_pid = bps.read_record(run_dirs[1])["attempts"][-1]["pid"]
    assert bps.process_alive(cancelled_pid)
    client.mark_task(DAG_ID, run_id, "FRDF.step1", "failed", map_index=1)
    wait_until("the cancelled run's processes gone", lambda: not bps.process_alive(cancelled_pid), timeout_s=60)
    assert bps.local_state(run_dirs[1]) == "CANCELLED"

    # Kill the scheduler and the triggerer as a crash would, while g000 is in flight; start them again.
    assert bps.local_state(run_dirs[0]) == "RUNNING"
    for service in ("scheduler", "triggerer"):
        kill_service(airflow_env, service)
    subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "airflow-services.sh"), "start"], env=airflow_env, check=True
    )
    attempt = Path(bps.read_record(run_dirs[0])["attempts"][-1]["submit_yaml"]).parent
    (attempt / RELEASE_JOBS).touch()  # the drill is done: g000's jobs go on

    ends(client, run_id, "failed", timeout_s=900)  # g001 was marked failed
    states = states_by_task(client, run_id)
    assert sorted(states["FRDF.step1"]) == ["failed", "success"]
    attempts = bps.read_record(run_dirs[0])["attempts"]
    assert [a["kind"] for a in attempts] == ["submit"], "exactly one BPS run, found again after the restarts"
    assert [a["kind"] for a in bps.read_record(run_dirs[1])["attempts"]] == ["submit"]
    [record] = [r for r in Ledger().step_records(key) if (r["step"], r["group_label"]) == ("step1", "g000")]
    assert record["status"] == "succeeded" and record["quanta_succeeded"] == record["quanta_total"] > 0
    # g001 was cancelled on purpose; what g000 made is whole, and no group was submitted twice.
    lost, duplicated = record["quanta_total"] - record["quanta_succeeded"], second_submissions(campaign, key)
    for drill, injected, outcome in (
        (
            "worker killed mid-step",
            "FRDF's Celery worker (SIGKILL to its process group), both step1 groups in flight",
            "heartbeats stopped; both retried on the restarted worker (try 2), each found its BPS run",
        ),
        (
            "scheduler and triggerer killed",
            "both (SIGKILL), FRDF step1 g000 deferred on its BPS run",
            "restarted; the trigger resumed the same run; g000 succeeded",
        ),
    ):
        faults.record_drill(faults.DrillRow(drill, injected, outcome, lost, duplicated, run_id))


def test_the_trigger_form_choices_shape_the_run_dry_run_writes_nothing(client, campaign):
    run_id = client.trigger(DAG_ID, {"sites": ["USDF", "FRDF"], "tracts": [0, 2], "dry_run": True})
    ends(client, run_id, "success", timeout_s=1800)
    key = graph.run_key(run_id)
    states = states_by_task(client, run_id)

    assert set(states["UKDF_RAL.check_inputs"]) == {"skipped"}, "a site left out skips its own tasks"
    assert set(states["UKDF_RAL.gather_for_step2c.register"]) == {"skipped"}
    assert states["USDF.step2c"] == ["success"], "the global step runs on the sites that were chosen"
    assert len(states["USDF.step1"]) == 1 and len(states["FRDF.step1"]) == 1, "one group per chosen tract"

    records = Ledger().step_records(key)
    assert records and {r["status"] for r in records} <= {"dry_run", "empty"}
    assert any(r["quanta_total"] > 0 for r in records), "a dry run still sizes each step's quantum graph"
    usdf = campaign.sites_config.sites["USDF"]
    written = stack(
        campaign,
        "USDF",
        "count-datasets",
        "--repo",
        str(usdf.butler_repo_path()),
        "--collections",
        graph.site_runs_pattern(campaign, key, "USDF"),
    )
    assert sum(written.values()) == 0, f"a dry run must write no datasets, found {written}"


RAL_OTHER_CONFIG = {"site": "UKDF_RAL", "step": "step5", "config": "makeObjectTable:flux_calibration_scale=1.01"}


def test_a_site_running_another_task_config_fails_the_site_qa_naming_what_differs(client, campaign):
    """The site-dependence drill, on a slice (FRDF and UKDF_RAL, tract 2 only): UKDF_RAL runs
    makeObjectTable with another flux calibration (a config override in its submit). Every step
    and hop succeeds; the site QA at USDF fails for review, once, naming the dataset type, the
    quantity, both sites' values and the tolerance; what the override does not touch agrees."""
    faults_file().write_text(yaml.safe_dump([RAL_OTHER_CONFIG]))
    try:
        run_id = client.trigger(DAG_ID, {"sites": ["FRDF", "UKDF_RAL"], "tracts": [2], "review_gates": False})
        ends(client, run_id, "failed", timeout_s=1800)
    finally:
        faults_file().unlink()
    key = graph.run_key(run_id)
    states = states_by_task(client, run_id)
    assert states["USDF.site_qa"] == ["failed"], "a review failure, not retried"
    assert states["FRDF.step5"] == states["UKDF_RAL.step5"] == ["success"], "one group each: tract 2"
    assert states["UKDF_RAL.gather_for_step2c.register"] == ["skipped"], "only an overlap tract: nothing for step2c"
    assert states["UKDF_RAL.return_products.verify"] == ["success"]
    [review] = Ledger().reviews(key)
    assert (review["decision"], review["decided_by"]) == ("passed", "review gates off for this run (trigger form)")

    checks = Ledger().site_qa(key)
    failed = {(c["dataset_type"], c["quantity"]): c for c in checks if not c["ok"]}
    assert ("object_table", "psf_flux.median") in failed and ("qa_metrics", "median_psf_flux") in failed
    median = failed[("object_table", "psf_flux.median")]
    assert (median["site_a"], median["site_b"]) == ("FRDF", "UKDF_RAL")
    assert median["value_b"] == pytest.approx(1.01 * median["value_a"], rel=1e-9)
    ok = {(c["dataset_type"], c["quantity"]) for c in checks if c["ok"]}
    assert {("object_table", "rows"), ("object_table", "ra.median"), ("visit_summary", "rows")} <= ok
    log = client.task_log(DAG_ID, run_id, "USDF.site_qa")
    assert "tract 2" in log and "object_table" in log and "psf_flux.median" in log and "relative 0.001" in log


def _hub_script(campaign, body: str) -> None:
    """Run BODY (python, `butler` open on USDF's repo) in the stack env: a hand edit at the hub."""
    from drp_campaign.settings import stack_prefix

    usdf_repo = str(campaign.sites_config.sites["USDF"].butler_repo_path())
    code = (
        "import astropy.time\nfrom lsst.daf.butler import Butler, Timespan\n"
        f"butler = Butler.from_config({usdf_repo!r}, writeable=True)\n"
        "day = Timespan(astropy.time.Time('2026-01-05T00:00:00', scale='tai'), "
        "astropy.time.Time('2026-01-06T00:00:00', scale='tai'))\n" + body
    )
    proc = subprocess.run(
        [str(stack_prefix() / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.drill
def test_a_calibration_missing_at_usdf_stops_that_sites_placement_and_no_step_starts_there(client, campaign):
    """USDF lacks detector 1's bias for 2026-01-05, when UKDF_RAL's tract 4 was observed: its place
    hop fails naming the dates, registers nothing, and UKDF_RAL's step1 never starts."""
    _hub_script(
        campaign,
        "butler.registry.decertify('MockCam/calib', 'bias', day, dataIds=[{'instrument': 'MockCam', 'detector': 1}])",
    )
    try:
        run_id = client.trigger(DAG_ID, {"sites": ["UKDF_RAL"], "tracts": [4]})
        ends(client, run_id, "failed", timeout_s=900)
    finally:  # put the calibration back as it was
        _hub_script(
            campaign,
            "[ref] = butler.query_datasets('bias', collections='MockCam/calib/bias/20260105', "
            "where=\"instrument='MockCam' AND detector=1\", explain=False)\n"
            "butler.registry.certify('MockCam/calib', [ref], day)",
        )
    key = graph.run_key(run_id)
    states = states_by_task(client, run_id)
    assert states["UKDF_RAL.check_software"] == ["success"]
    assert states["UKDF_RAL.place_inputs.register"] == ["failed"]
    assert states["UKDF_RAL.check_inputs"] == ["upstream_failed"]
    assert set(states.get("UKDF_RAL.step1", ["upstream_failed"])) == {"upstream_failed"}, (
        "no step starts on incomplete inputs"
    )
    log = client.task_log(DAG_ID, run_id, "UKDF_RAL.place_inputs.register")
    assert (
        "bias detector=1: nothing certified in MockCam/calib for 2026-01-05T11:20:00 .. 2026-01-05T11:23:30 TAI" in log
        and "visits 5000, 5001, 5002, 5003" in log
    )
    assert not Ledger().hop_balances(key), "nothing was registered for transfer"
    assert not Ledger().releases(key), "and nothing released"
    # On-call was told, once, after the last try (drp_campaign/alerts.py).
    alerts = [json.loads(line) for line in alerts_file().read_text().splitlines()]
    [alert] = [a for a in alerts if a["run_id"] == run_id]
    assert (alert["site"], alert["task"], alert["try"]) == ("UKDF_RAL", "place_inputs.register", 2)
    assert "bias detector=1: nothing certified" in alert["error"]
    unbalanced = sum(b.sent - b.arrived for b in Ledger().hop_balances(key))
    faults.record_drill(
        faults.DrillRow(
            "calibration missing at the hub",
            "USDF's bias for detector 1 on 2026-01-05 decertified; UKDF_RAL's tract 4",
            "place hop failed naming the dates; nothing registered, no step started; on-call alerted once",
            unbalanced,
            second_submissions(campaign, key),
            run_id,
        )
    )


def test_the_campaign_view_shows_the_finished_and_a_failed_run_live_and_the_grid_follows_the_data_path(client, browser):
    """Runs after the campaigns above. The finished 3x3's live matrix (Airflow's task states, the
    ledger, Rucio's rule states asked now) to a viewer and to no one anonymous; the failed run of
    a slice; the runs list; all seen in Chromium and saved for docs/. The grid lists each site's
    tasks in data-path order."""
    key = _finished_full_run()
    viewer = AirflowClient(username="viewer")
    status = viewer._get("/drp/api/status", run_id=key)
    assert (status["state"], status["ledger_balanced"], status["site_qa"]) == ("success", True, "pass")
    assert [s["site"] for s in status["sites"]] == ["USDF", "FRDF", "UKDF_RAL"]
    assert {c["state"] for s in status["sites"] for c in s["cells"].values()} <= {"success", "skipped"}
    frdf = status["sites"][1]
    assert frdf["cells"]["step1"]["quanta"]["succeeded"] == frdf["cells"]["step1"]["quanta"]["total"] > 0
    assert frdf["storage"]["bytes"] > 0 and frdf["elapsed_s"] > 0 and frdf["eta_s"] == 0
    rules = [r for s in status["sites"] for c in s["cells"].values() for r in c.get("hop", {}).get("rules", [])]
    assert rules and all(r["live"] for r in rules), "rule states are Rucio's now, not the ledger's snapshot"
    assert requests.get(f"{client.base_url}/drp/run", params={"run_id": key}, timeout=30).status_code == 401
    assert any(p["name"] == "drp_campaign" for p in client._get("/api/v2/plugins")["plugins"])
    look(
        browser,
        client,
        f"/drp/run?run_id={key}",
        ["Sites and steps", "Ledger balanced", "QA PASS"],
        "view-finished.png",
    )

    runs = viewer.session.get(f"{client.base_url}/drp/api/runs", timeout=30).json()
    failed = next(r for r in runs if r["dag_id"] == DAG_ID and r["state"] == "failed")
    page = look(
        browser,
        client,
        f"/drp/run?run_id={quote(failed['run_key'] or failed['run_id'])}&dag_id={DAG_ID}",
        ["Sites and steps", "failed"],
        "view-failed.png",
    )
    assert "refreshes every" not in page, "a finished run's page stays still"
    look(browser, client, "/drp/runs", ["DRP campaign runs", "success", "failed", "balanced"], "view-runs.png")
    # The plans, served by the api-server's view (#16): DR1's page, drawn in that process, with a what-if.
    look(
        browser,
        client,
        "/drp/plan?name=dr1&site_down=UKDF_RAL&from_day=40&days=10",
        ["Plan dr1", "x the lower bound", "critical path", "UKDF_RAL down for 10 days", "re-planned onto"],
        "view-plan.png",
    )

    [frdf_group] = [n for n in client._get(f"/ui/grid/structure/{DAG_ID}") if n["id"] == "FRDF"]
    order = [c["id"] for c in frdf_group["children"]]
    path = ["FRDF.check_software", "FRDF.place_inputs", "FRDF.check_inputs", "FRDF.step1", "FRDF.step5"]
    assert [order.index(t) for t in path] == sorted(order.index(t) for t in path), order
    assert order.index("FRDF.release_site_copies") > order.index("FRDF.return_products"), order


# What each refusal is checked against: the same call by the operator passes the role check and
# fails later for a reason of its own (422 a malformed body, 404 no such task), or a dry-run clear
# succeeds, so the viewer's 403 is the role's, and nothing is started or changed by either.
APPROVAL = {"chosen_options": ["Approve"], "params_input": {}}
ROLE_CALLS = {
    "trigger": (
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        {"logical_date": None, "conf": {}},
        {"logical_date": None, "conf": "not an object"},
        422,
    ),
    "clear": (
        "POST",
        f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
        {"dry_run": False, "only_failed": True},
        {"dry_run": True, "only_failed": True},
        200,
    ),
    "approve": (
        "PATCH",
        f"/api/v2/dags/{DAG_ID}/dagRuns/no-run/taskInstances/USDF.review/-1/hitlDetails",
        APPROVAL,
        APPROVAL,
        404,
    ),
}


def test_a_viewer_reads_the_dag_and_its_runs_but_cannot_trigger_clear_or_approve(airflow_env):
    """#12 finding 6, on the real API server: roles from scripts/env.sh, tokens from POST /auth/token."""
    viewer, operator = AirflowClient(username="viewer"), AirflowClient(username="operator")
    viewer.wait_for_dag(DAG_ID)
    runs = viewer.session.get(f"{viewer.base_url}/api/v2/dags/{DAG_ID}/dagRuns", timeout=30)
    assert runs.status_code == 200
    for what, (method, path, body, operator_body, operator_code) in ROLE_CALLS.items():
        refused = viewer.session.request(method, viewer.base_url + path, json=body, timeout=30)
        assert refused.status_code == 403, (what, refused.status_code, refused.text[:300])
        passed = operator.session.request(method, operator.base_url + path, json=operator_body, timeout=30)
        assert passed.status_code == operator_code, (what, passed.status_code, passed.text[:300])
    after = viewer.session.get(f"{viewer.base_url}/api/v2/dags/{DAG_ID}/dagRuns", timeout=30).json()
    assert after["total_entries"] == runs.json()["total_entries"], "no run was started"


def test_the_campaign_view_needs_a_login_and_airflows_auth_files_are_private(airflow_env):
    """#12 finding 6: the plugin's pages and JSON under the real api-server refuse anonymous callers
    (401) and bad tokens (403), and open to a viewer's token or UI session cookie; the JWT secret
    and the password file are 0600 in a 0700 AIRFLOW_HOME."""
    viewer = AirflowClient(username="viewer")
    view = f"{viewer.base_url}/drp"
    for path in ("/runs", "/run", "/api/run"):
        anonymous = requests.get(view + path, params={"run_id": "nope"}, timeout=30)
        assert anonymous.status_code == 401, (path, anonymous.status_code, anonymous.text[:300])
        forged = requests.get(
            view + path, params={"run_id": "nope"}, headers={"Authorization": "Bearer x.y.z"}, timeout=30
        )
        assert forged.status_code == 403, (path, forged.status_code)
    assert requests.get(f"{view}/openapi.json", timeout=30).status_code == 404
    assert viewer.session.get(f"{view}/runs", timeout=30).status_code == 200
    assert viewer.session.get(f"{view}/api/run", params={"run_id": "nope"}, timeout=30).status_code == 404
    token = viewer.session.headers["Authorization"].removeprefix("Bearer ")
    assert requests.get(f"{view}/runs", cookies={"_token": token}, timeout=30).status_code == 200

    home = Path(airflow_env["AIRFLOW_HOME"])
    modes = {
        p.name: p.stat().st_mode & 0o777
        for p in (home, home / "jwt_secret", home / "simple_auth_manager_passwords.json.generated")
    }
    assert modes == {"airflow": 0o700, "jwt_secret": 0o600, "simple_auth_manager_passwords.json.generated": 0o600}
