"""Drills: inject faults on purpose (tests, rehearsals), make chosen quanta or jobs fail, then
remove the fault and retry. What a failure then *means* is failures.py's job (classification).

The file ($DRP_WORK_DIR/faults.yaml, or $DRP_FAULTS_FILE) is read when a step starts, so a fault
can be added or removed between a failure and its retry without touching the DAG:

    - {site: FRDF, step: step2b, task: isolatedStarAssociation, where: "tract = 2"}
    - {site: UKDF_RAL, step: step2a, job: transient}   # the first BPS job dies once (exit 137)
    - {site: FRDF, step: step3, job: "slow:60"}         # every BPS job waits 60 s first (or
                                                          # until RELEASE_JOBS is in its attempt's dir)
    - {site: UKDF_RAL, step: step5, config: "makeObjectTable:flux_calibration_scale=1.01"}

A `config` entry is a config override drill (`LABEL:FIELD=VALUE`, the stack side's --config; VALUE
a number or True/False): that site's step runs with one task configured differently, e.g. a
calibration 1 % off at the second site of an overlap tract, which the site-independence QA must
then report.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from . import settings

# A drill done with a slow job fault puts this file in the BPS run's attempt directory (the
# parent of the attempt's submit_yaml): the jobs waiting there go on at once.
RELEASE_JOBS = "release-jobs"


def faults_file() -> Path:
    return Path(os.environ.get("DRP_FAULTS_FILE") or settings.work_dir() / "faults.yaml")


def active_faults(site: str, step: str) -> list[str]:
    """`task:where` strings for the stack side's --fail option, for this site and step."""
    return [f"{f['task']}:{f['where']}" for f in _entries(site, step) if "task" in f]


def active_job_fault(site: str, step: str) -> str | None:
    """The stack side's --job-fault for this site and step ('transient', 'slow:SECONDS'), if any."""
    return next((str(f["job"]) for f in _entries(site, step) if "job" in f), None)


def active_config_overrides(site: str, step: str) -> list[str]:
    """`LABEL:FIELD=VALUE` strings for the stack side's --config option, for this site and step."""
    return [str(f["config"]) for f in _entries(site, step) if "config" in f]


def _entries(site: str, step: str) -> list[dict]:
    path = faults_file()
    if not path.exists():
        return []
    entries = yaml.safe_load(path.read_text()) or []
    return [f for f in entries if f.get("site") == site and f.get("step") == step]
