"""Where things live on this machine: one place that reads the DRP_* environment.

Every path the controller and the stack side share is derived here, so a task in an Airflow
worker, a stack-side subprocess and a test all agree without passing paths around.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = PROJECT_ROOT / "configs"
DEFAULT_SITES_FILE = CONFIGS_DIR / "sites.yaml"
CAMPAIGNS_DIR = CONFIGS_DIR / "campaigns"


def work_dir() -> Path:
    """Root of all mutable state of the embedded default (repos, RSEs, logs); $DRP_WORK_DIR."""
    return Path(os.environ.get("DRP_WORK_DIR") or PROJECT_ROOT / "var").resolve()


def stack_prefix() -> Path:
    """The science-stack environment the embedded sites' setup command activates; $DRP_STACK_PREFIX."""
    return Path(os.environ.get("DRP_STACK_PREFIX") or PROJECT_ROOT / ".venvs" / "stack").resolve()


def ledger_url() -> str:
    """SQLAlchemy URL of the ledger database; $DRP_LEDGER_URL."""
    return os.environ.get("DRP_LEDGER_URL") or "postgresql+psycopg2://postgres@127.0.0.1:5432/drp_ledger"


def stack_server_dir() -> Path | None:
    """Where the sites' warm stack servers live when $DRP_STACK_SERVER=warm (the embedded
    default: scripts/env.sh); None means every stack command starts its own Python (production).
    See drp_campaign/stackside/warm.py."""
    if os.environ.get("DRP_STACK_SERVER", "per-call") != "warm":
        return None
    return work_dir() / "stack-servers"


def warm_prefix(site: str, python: str = "python", directory: Path | None = None) -> list[str]:
    """The words that run a stack command through SITE's warm server (in DIRECTORY, by default
    stack_server_dir()), or [] for the per-call path."""
    if stack_server_dir() is None:
        return []
    return [python, "-m", "drp_campaign.stackside.warm", "run", "--dir", str(directory or stack_server_dir()), "--site", site, "--"]


def site_environment() -> dict[str, str]:
    """Environment for a site's setup command: the caller's, plus the DRP_* paths it expands."""
    env = dict(os.environ)
    env["DRP_WORK_DIR"] = str(work_dir())
    env["DRP_STACK_PREFIX"] = str(stack_prefix())
    return env


def expand(path_template: str) -> Path:
    """Expand $DRP_* (and any other) variables in a configured path, with the defaults above."""
    env = site_environment()
    expanded = path_template
    for key in ("DRP_WORK_DIR", "DRP_STACK_PREFIX"):
        expanded = expanded.replace("${%s}" % key, env[key]).replace("$" + key, env[key])
    return Path(os.path.expandvars(expanded))
