"""No secret leaves the controller (issue #12, finding 1): what a stack command may inherit, and
how secret files are written. The end-to-end 3x3 run plants a canary in the services' environment
and greps everything the run wrote for it (tests/test_campaign_e2e.py)."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
import yaml

from drp_campaign import settings
from drp_campaign.config import load_campaign
from drp_campaign.stack import StackCommand

CAMPAIGN = settings.CAMPAIGNS_DIR / "test-3x3.yaml"
CANARY = "canary-3f1c9e0b7d"


@pytest.fixture
def worker_env(monkeypatch):
    """A worker's environment as Airflow's LocalExecutor gives it: its own secrets among the rest."""
    planted = {
        "AIRFLOW__API_AUTH__JWT_SECRET": CANARY,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://airflow:{CANARY}@db/airflow",
        "DRP_LEDGER_URL": f"postgresql+psycopg2://ledger:{CANARY}@db/ledger",
        "PANDA_AUTH_ID_TOKEN": CANARY,
        "OIDC_AUTH_ID_TOKEN": CANARY,
        "SOME_SERVICE_TOKEN": CANARY,
        "DAF_BUTLER_REPOSITORY_INDEX": "/etc/butler/index.yaml",
        "LC_ALL": "C.UTF-8",
    }
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    return planted


def test_a_stack_command_inherits_only_the_allowlist(worker_env):
    env = settings.site_environment()
    assert CANARY not in "\n".join(f"{k}={v}" for k, v in env.items())
    assert env["DAF_BUTLER_REPOSITORY_INDEX"] == "/etc/butler/index.yaml" and env["LC_ALL"] == "C.UTF-8"
    assert env["PATH"] == os.environ["PATH"] and env["DRP_WORK_DIR"] == str(settings.work_dir())


def test_a_deployment_lets_more_names_through_by_name_only(worker_env, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv(settings.STACK_ENV_EXTRA_VAR, "HTTPS_PROXY, PANDA_AUTH_ID_TOKEN")
    env = settings.site_environment()
    assert env["HTTPS_PROXY"] == "http://proxy.example:3128"
    assert "PANDA_AUTH_ID_TOKEN" not in env  # a token goes by file whatever the deployment says


def test_the_real_stack_command_path_gets_no_secret(worker_env, tmp_path):
    """Through StackCommand and the site's setup command, as an operator's task runs it."""
    site = load_campaign(CAMPAIGN).sites_config.sites["USDF"]
    dump, stdin = tmp_path / "env.txt", tmp_path / "stdin.txt"
    site = site.model_copy(update={"stack_setup": f"env > {dump}; readlink /proc/$$/fd/0 > {stdin}; exit 3"})
    with pytest.raises(Exception, match="exit 3"):
        StackCommand(site, "check-inputs", []).run(log=lambda line: None)
    text = dump.read_text()
    assert "DAF_BUTLER_REPOSITORY_INDEX=" in text and CANARY not in text
    # Not the caller's stdin: in an Airflow task that is the supervisor's socket (the task's
    # channel to Connections and Variables), and bash, finding a socket there, runs ~/.bashrc.
    assert stdin.read_text().strip() == "/dev/null"


def test_a_private_file_is_never_readable_by_others(tmp_path):
    target = tmp_path / "secrets" / "token"
    settings.private_file(target, "s3cret")
    settings.private_file(target, "rotated")  # rewritten in place: still private
    assert target.read_text() == "rotated"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert [p.name for p in target.parent.iterdir()] == ["token"]  # no temporary left behind


def test_the_embedded_work_dir_is_private(tmp_path):
    """scripts/env.sh (sourced by every script) makes $DRP_WORK_DIR this user's only."""
    work = tmp_path / "var"
    work.mkdir(mode=0o755)
    subprocess.run(
        ["bash", "-c", f"source {settings.PROJECT_ROOT / 'scripts' / 'env.sh'}"],
        env={**os.environ, "DRP_WORK_DIR": str(work)},
        check=True,
    )
    assert stat.S_IMODE(work.stat().st_mode) == 0o700


def test_old_bps_environment_dumps_are_scrubbed(worker_env, tmp_path):
    """A dump `bps submit` wrote before the allowlist keeps only allowed names, privately."""
    dump = tmp_path / "bps" / "c" / "submit" / "u_c_step1.env.info.yaml"
    dump.parent.mkdir(parents=True)
    dump.write_text(yaml.safe_dump({**os.environ}))
    dump.chmod(0o644)
    clean = tmp_path / "bps" / "c" / "submit2" / "u_c_step2.env.info.yaml"
    clean.parent.mkdir(parents=True)
    settings.private_file(clean, yaml.safe_dump({"PATH": "/bin"}))
    assert settings.scrub_env_dumps(tmp_path / "bps") == 1  # the clean one is left as it is
    kept = yaml.safe_load(dump.read_text())
    assert CANARY not in dump.read_text() and kept["LC_ALL"] == "C.UTF-8"
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert settings.scrub_env_dumps(tmp_path / "bps") == 0
