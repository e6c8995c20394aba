"""Shared fixtures: a real Airflow (four services, PostgreSQL) for end-to-end tests.

The end-to-end campaigns run on the production executor: CeleryExecutor, the local Redis as broker,
one Celery worker per site queue (scripts/airflow-services.sh with DRP_EXECUTOR=celery).

The end-to-end tests get their own work dir, Airflow database, ledger database and port, so they
never touch what `make demo` left running or on disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from private_postgres import PrivatePostgres

from drp_campaign.settings import PROJECT_ROOT

E2E_ENV = {
    "DRP_WORK_DIR": str(PROJECT_ROOT / "var" / "test-e2e"),
    "DRP_AIRFLOW_DB": "drp_airflow_test",
    "DRP_AIRFLOW_PORT": "8091",
    # The password is a canary (trust auth ignores it): it must show up nowhere the run writes.
    "DRP_LEDGER_URL": "postgresql+psycopg2://postgres:canary-ledger-5e2d@127.0.0.1:5432/drp_ledger_test",
    "SITE_SERVICE_TOKEN": "canary-token-8a41c7",  # a secret of the workers' environment, not the stack's
    "DRP_RUCIO_DB": "drp_rucio_e2e",
    "DRP_RUCIO_PORT": "8083",
    "DRP_TRANSFER_SERVICE": "rucio",
    "AIRFLOW_HOME": str(PROJECT_ROOT / "var" / "test-e2e" / "airflow"),
    "DRP_EXECUTOR": "celery",
    "DRP_REDIS_DB": "1",  # the demo's broker queues are database 0
    # A worker killed mid-task is noticed after this long (Airflow's default 300 s; a drill kills one).
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    # The Edge worker asks for work every second (Airflow's default 5 s is a wait before each of
    # the nightly's UKDF_LANCS tasks: minutes on a campaign of one-minute steps).
    "AIRFLOW__EDGE__JOB_POLL_INTERVAL": "1",
    # A triggerer killed by a drill: its triggers go to the restarted one once its heartbeat is this
    # old (Airflow's default 30 s; it beats every 5 s).
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
    # Faults a drill injects into the local Rucio's transfers (localservices/rucio/transfertool.py);
    # the file exists only while a drill runs.
    "DRP_RUCIO_TRANSFER_FAULTS": str(PROJECT_ROOT / "var" / "test-e2e" / "rucio-transfer-faults.json"),
}

# The nightly's scenario runs in its own module (test_nightly_e2e.py) on its own services, beside
# the 3x3's under pytest-xdist: its own ports, databases, broker database and work dir.
NIGHTLY_E2E_ENV = {
    **E2E_ENV,
    "DRP_WORK_DIR": str(PROJECT_ROOT / "var" / "test-e2e-nightly"),
    "DRP_AIRFLOW_DB": "drp_airflow_test_nightly",
    "DRP_AIRFLOW_PORT": "8096",
    "DRP_LEDGER_URL": E2E_ENV["DRP_LEDGER_URL"].replace(":5432/drp_ledger_test", ":5433/drp_ledger_test_nightly"),
    "DRP_RUCIO_DB": "drp_rucio_e2e_nightly",
    "DRP_RUCIO_PORT": "8084",
    "AIRFLOW_HOME": str(PROJECT_ROOT / "var" / "test-e2e-nightly" / "airflow"),
    "DRP_REDIS_DB": "2",
    # Airflow's metadata DB and the ledger on a PostgreSQL of this stack's own (tests/private_postgres.py):
    # a drill restarts it.
    "DRP_AIRFLOW_DB_PORT": "5433",
    "DRP_RUCIO_TRANSFER_FAULTS": str(PROJECT_ROOT / "var" / "test-e2e-nightly" / "rucio-transfer-faults.json"),
}

SERVICES = ("airflow-services.sh", "rucio-server.sh")  # stopped in this order, started in reverse


def _environment_of(script: str, overrides: dict[str, str]) -> dict[str, str]:
    """The environment scripts/env.sh sets up, given our overrides (one source of truth)."""
    out = subprocess.run(
        ["bash", "-c", f"source {PROJECT_ROOT / 'scripts' / script} && env -0"],
        env={**os.environ, **overrides},
        check=True,
        capture_output=True,
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def drop_database(name: str) -> None:
    """Drop a test database even if a stopped service left connections to it (tests share this)."""
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
        check=True,
    )


def flush_broker(db: str) -> None:
    """Empty the Celery broker's Redis database: no task message of an earlier test run is delivered."""
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=int(db)).flushdb()


@pytest.fixture(scope="module")
def airflow_env(request):
    """Start Rucio and Airflow on a clean slate; stop them and restore the environment after the
    module. The module's E2E_STACK (default E2E_ENV) says which ports, databases and directories."""
    stack = getattr(request.module, "E2E_STACK", E2E_ENV)
    work = Path(stack["DRP_WORK_DIR"])
    for service in SERVICES:
        subprocess.run(
            ["bash", str(PROJECT_ROOT / "scripts" / service), "stop"], env={**os.environ, **stack}, check=False
        )
    shutil.rmtree(work, ignore_errors=True)
    own_postgres = None
    if stack.get("DRP_AIRFLOW_DB_PORT", "5432") != "5432":  # a new server: nothing of an earlier run in it
        own_postgres = PrivatePostgres(int(stack["DRP_AIRFLOW_DB_PORT"]))
        own_postgres.start()
    else:
        drop_database(stack["DRP_AIRFLOW_DB"])
        drop_database(stack["DRP_LEDGER_URL"].rsplit("/", 1)[1])
    drop_database(stack["DRP_RUCIO_DB"])
    flush_broker(stack["DRP_REDIS_DB"])
    env = _environment_of("env.sh", stack)
    saved = dict(os.environ)
    for service in reversed(SERVICES):  # Rucio first: Airflow's connection to it is made at start
        subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / service), "start"], env=env, check=True)
    env["AIRFLOW__API_AUTH__JWT_SECRET"] = (Path(env["AIRFLOW_HOME"]) / "jwt_secret").read_text().strip()
    os.environ.update(env)
    try:
        yield env
    finally:
        for service in SERVICES:
            subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / service), "stop"], env=env, check=False)
        if own_postgres:
            own_postgres.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium for the campaign view's pages (tests/browser.py)."""
    from browser import Browser

    chromium = Browser(tmp_path_factory.mktemp("chromium"))
    yield chromium
    chromium.close()


def pytest_collection_modifyitems(config, items):
    """Run alone, the slow end-to-end campaigns go last, after the fast checks have had their say.
    Side by side (pytest-xdist, make test), the longest go first: the campaigns (one worker takes
    them at once), then the other integration modules, and the quick unit modules fill the end."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(
            key=lambda item: (item.get_closest_marker("e2e") is None, item.get_closest_marker("integration") is None)
        )
    else:
        items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


@pytest.fixture(scope="session", autouse=True)
def stop_warm_stack_servers(tmp_path_factory):
    """Tests that run BPS or stack commands start warm stack servers in their own work dirs
    (drp_campaign/stackside/warm.py); they go when the session ends."""
    yield
    from drp_campaign.settings import stack_prefix

    for directory in tmp_path_factory.getbasetemp().glob("*/stack-servers"):
        subprocess.run(
            [
                str(stack_prefix() / "bin" / "python"),
                "-m",
                "drp_campaign.stackside.warm",
                "stop",
                "--dir",
                str(directory),
            ],
            capture_output=True,
            check=False,
        )


@pytest.fixture(scope="session")
def seeded_repo(tmp_path_factory):
    """seed-repo SITE (with FLAGS) into DEST: seeded once per test session (per xdist worker) and
    copied, since every such repo is the same (a Butler repo's config names its root relatively).
    Returns what seed-repo answered the first time. Tests of seeding itself call seed-repo."""
    from test_stackside import CAMPAIGN, stackside

    made: dict[tuple, tuple[Path, dict]] = {}

    def seed(dest: Path, site: str, *flags: str) -> dict:
        key = (site, *flags)
        if key not in made:
            work = tmp_path_factory.mktemp("seeded")
            answer = stackside(
                work, "seed-repo", "--campaign", str(CAMPAIGN), "--site", site, "--repo", str(work / site), *flags
            )
            made[key] = (work / site, answer)
        source, answer = made[key]
        shutil.copytree(source, dest, symlinks=True)
        return answer

    return seed
