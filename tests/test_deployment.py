"""docker-compose.yml (for real deployments) is valid and wires one worker queue per site."""

import os
import shutil
import subprocess

import pytest
import yaml

from drp_campaign.config import load_sites
from drp_campaign.settings import PROJECT_ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed; .ci/run installs it"
)


def compose_config(**env):
    return subprocess.run(
        ["docker-compose", "-f", str(PROJECT_ROOT / "docker-compose.yml"), "config"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )


def test_compose_file_is_valid_and_has_a_worker_per_site_queue():
    result = compose_config(AIRFLOW_JWT_SECRET="test-secret")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {
        "postgres",
        "redis",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    } <= set(services)
    worker_queues = {
        s["command"].split()[-1] if isinstance(s["command"], str) else s["command"][-1]
        for name, s in services.items()
        if name.startswith("worker-")
    }
    assert worker_queues == {site.airflow_queue for site in load_sites().sites.values()}


def test_compose_refuses_to_start_without_the_jwt_secret():
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_JWT_SECRET"}
    result = subprocess.run(["docker-compose", "config"], env=env, capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert result.returncode != 0 and "AIRFLOW_JWT_SECRET" in result.stderr
