"""Shared fixtures: a real Airflow (four services, LocalExecutor, PostgreSQL) for end-to-end tests.

The end-to-end tests get their own work dir, Airflow database, ledger database and port, so they
never touch what `make demo` left running or on disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from drp_campaign.settings import PROJECT_ROOT

E2E_ENV = {
    "DRP_WORK_DIR": str(PROJECT_ROOT / "var" / "test-e2e"),
    "DRP_AIRFLOW_DB": "drp_airflow_test",
    "DRP_AIRFLOW_PORT": "8091",
    "DRP_LEDGER_URL": "postgresql+psycopg2://postgres@127.0.0.1:5432/drp_ledger_test",
    "AIRFLOW_HOME": str(PROJECT_ROOT / "var" / "test-e2e" / "airflow"),
}


def _environment_of(script: str, overrides: dict[str, str]) -> dict[str, str]:
    """The environment scripts/env.sh sets up, given our overrides (one source of truth)."""
    out = subprocess.run(
        ["bash", "-c", f"source {PROJECT_ROOT / 'scripts' / script} && env -0"],
        env={**os.environ, **overrides},
        check=True,
        capture_output=True,
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def _drop_database(name: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], check=True)


@pytest.fixture(scope="module")
def airflow_env():
    """Start Airflow on a clean slate; stop it and restore the environment after the module."""
    work = Path(E2E_ENV["DRP_WORK_DIR"])
    subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "airflow-services.sh"), "stop"], env={**os.environ, **E2E_ENV}, check=False)
    shutil.rmtree(work, ignore_errors=True)
    _drop_database(E2E_ENV["DRP_AIRFLOW_DB"])
    _drop_database("drp_ledger_test")
    env = _environment_of("env.sh", E2E_ENV)
    saved = dict(os.environ)
    subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "airflow-services.sh"), "start"], env=env, check=True)
    env["AIRFLOW__API_AUTH__JWT_SECRET"] = (Path(env["AIRFLOW_HOME"]) / "jwt_secret").read_text().strip()
    os.environ.update(env)
    try:
        yield env
    finally:
        subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "airflow-services.sh"), "stop"], env=env, check=False)
        os.environ.clear()
        os.environ.update(saved)


def pytest_collection_modifyitems(config, items):
    """Slow end-to-end campaigns run last, after the fast checks have had their say."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
