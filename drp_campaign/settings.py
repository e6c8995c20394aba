"""Where things live on this machine: one place that reads the DRP_* environment.

Every path the controller and the stack side share is derived here, so a task in an Airflow
worker, a stack-side subprocess and a test all agree without passing paths around.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = PROJECT_ROOT / "configs"
DEFAULT_SITES_FILE = CONFIGS_DIR / "sites.yaml"
CAMPAIGNS_DIR = CONFIGS_DIR / "campaigns"


def work_dir() -> Path:
    """Root of all mutable state of the embedded default (repos, RSEs, logs); $DRP_WORK_DIR."""
    return Path(os.environ.get("DRP_WORK_DIR") or PROJECT_ROOT / "var").resolve()


def local_rucio_home() -> Path:
    """Where the local Rucio (localservices/rucio) keeps its state; its connection.json holds the
    fields of the Airflow Connection `rucio_default`, which the CLI reads outside Airflow."""
    return work_dir() / "rucio"


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
    return [
        python,
        "-m",
        "drp_campaign.stackside.warm",
        "run",
        "--dir",
        str(directory or stack_server_dir()),
        "--site",
        site,
        "--",
    ]


# What a stack command may inherit from the controller (allowlist, SECURITY.md): the basics of a
# shell, the science stack's own settings and the DRP_* paths the stack side reads. Not the
# Airflow or Rucio configuration, database URLs (the ledger's), JWT secrets or tokens: a site's
# setup command (sites.yaml stack_setup) sets what its stack needs there, and `bps submit` writes
# the environment it gets into its submit directory. A PanDA token goes by file (OIDC_AUTH_TOKEN_FILE).
STACK_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "TERM",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "VIRTUAL_ENV",
        "VIRTUAL_ENV_PROMPT",  # what bash and a venv set
        "PYTHONPATH",
        "PYTHONUNBUFFERED",
        "LD_LIBRARY_PATH",
        "OMP_NUM_THREADS",
        "OIDC_AUTH_TOKEN_FILE",
        "DRP_WORK_DIR",
        "DRP_STACK_PREFIX",
        "DRP_STACK_SERVER",
        "DRP_STACK_SERVER_IDLE_S",
        "DRP_FAULTS_FILE",
    }
)
STACK_ENV_PREFIXES = ("LC_", "DAF_BUTLER_", "LSST_", "BPS_", "PANDA_", "IDDS_")
# Never passed, whatever the prefix: tokens go by file.
STACK_ENV_REFUSED = frozenset({"PANDA_AUTH_ID_TOKEN", "OIDC_AUTH_ID_TOKEN"})
# More names a deployment lets through (comma-separated), e.g. a proxy setting its sites need.
STACK_ENV_EXTRA_VAR = "DRP_STACK_ENV_ALLOW"


def _stack_env_extra() -> frozenset[str]:
    return frozenset(n.strip() for n in os.environ.get(STACK_ENV_EXTRA_VAR, "").split(",") if n.strip())


def stack_env_allowed(name: str, extra: frozenset[str] | None = None) -> bool:
    """Whether a variable of the controller's environment may reach a stack command (EXTRA: the
    deployment's additions, read from $DRP_STACK_ENV_ALLOW when not given)."""
    if name in STACK_ENV_REFUSED:
        return False
    extra = _stack_env_extra() if extra is None else extra
    return name in STACK_ENV_NAMES or name in extra or name.startswith(STACK_ENV_PREFIXES)


def _drp_paths() -> dict[str, str]:
    """The DRP_* paths a site's setup command and configured paths expand."""
    return {"DRP_WORK_DIR": str(work_dir()), "DRP_STACK_PREFIX": str(stack_prefix())}


def site_environment() -> dict[str, str]:
    """Environment for a site's setup command: the allowed part of the caller's (see
    STACK_ENV_NAMES), plus the DRP_* paths it expands."""
    extra = _stack_env_extra()
    env = {name: value for name, value in os.environ.items() if stack_env_allowed(name, extra)}
    return {**env, **_drp_paths()}


def private_file(path: Path, text: str) -> Path:
    """Write TEXT to PATH readable by this user only (0600, its directory 0700), atomically:
    a secret never exists on disk with wider permissions, even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)
    return path


def expand(path_template: str) -> Path:
    """Expand $DRP_* (and any other) variables in a configured path, with the defaults above."""
    expanded = path_template
    for key, value in _drp_paths().items():
        expanded = expanded.replace("${" + key + "}", value).replace("$" + key, value)
    return Path(os.path.expandvars(expanded))


ENV_DUMP_GLOB = "*.env.info.yaml"  # ctrl_bps's dump of the environment `bps submit` ran with


def scrub_env_dumps(root: Path | None = None) -> int:
    """Rewrite the environment dumps `bps submit` left under ROOT (default: the work dir's BPS runs) to the
    allowed names only, private: dumps written before the allowlist held the worker's secrets.
    Returns how many were rewritten. Runs when the services start (scripts/airflow-services.sh)."""
    import yaml

    scrubbed, extra = 0, _stack_env_extra()
    for dump in (root or work_dir() / "bps").rglob(ENV_DUMP_GLOB):
        try:
            env = yaml.safe_load(dump.read_text()) or {}
        except (OSError, yaml.YAMLError):
            env = {}
        kept = {k: v for k, v in env.items() if stack_env_allowed(k, extra)} if isinstance(env, dict) else {}
        if kept != env or stat.S_IMODE(dump.stat().st_mode) != 0o600:
            private_file(dump, yaml.safe_dump(kept))
            scrubbed += 1
    return scrubbed
