"""Run one pipeline step at one site: the real `pipetask` CLI, retry-safe, with real per-quantum outcomes."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import settings
from ..bps import group_data_query
from ..config import CampaignConfig
from ._errors import StacksideError
from .pipeline import parse_config_overrides, parse_faults, write_pipeline
from .repo import open_butler, prepend_to_chain, require_chain

_GENERATED = re.compile(
    r"Generated (\d+) quant(?:um|a) for task (\S+?)(?: \((\d+) previously succeeded and skipped\))?\.?$", re.M
)
_DROPPED = re.compile(
    r"Dropping task (\S+) because no quanta remain(?: \((\d+) previously succeeded and skipped\))?", re.M
)
_EMPTY = re.compile(
    r"QuantumGraph (?:is|was) empty|QuantumGraph contains no quanta|Initial bipartite graph has 0 quanta", re.I
)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def pipetask_exe() -> str:
    exe = Path(sys.executable).parent / "pipetask"
    if not exe.exists():
        exe = settings.stack_prefix() / "bin" / "pipetask"
    if not exe.exists():
        raise StacksideError(
            f"pipetask not found next to {sys.executable} nor in $DRP_STACK_PREFIX/bin: install lsst-ctrl-mpexec"
        )
    return str(exe)


def _run_exists(repo: Path, run: str, chain: str, site: str) -> tuple[bool, list[str]]:
    """Does RUN exist, and which task configs (init outputs) does it already hold. Checks CHAIN."""
    from lsst.daf.butler import CollectionType
    from lsst.daf.butler.registry import MissingCollectionError

    butler, _ = open_butler(repo, writeable=False)
    with butler:
        require_chain(butler, chain, repo, site)
        try:
            info = butler.collections.get_info(run)
        except MissingCollectionError:
            return False, []
        if info.type != CollectionType.RUN:
            raise StacksideError(
                f"output run {run!r} exists in {repo} but is a {info.type.name} collection: pick another name"
            )
        configs = []
        for dt in butler.registry.queryDatasetTypes("*_config"):
            if butler.query_datasets(dt, collections=run, explain=False, limit=1):
                configs.append(dt.name.removesuffix("_config"))
        return True, configs


def count_outputs(repo: Path, run: str, dataset_types: list[str]) -> dict[str, int]:
    butler, _ = open_butler(repo, writeable=False)
    counts: dict[str, int] = {}
    with butler:
        registered = {dt.name for dt in butler.registry.queryDatasetTypes("*")}
        for name in dataset_types:
            if name not in registered:
                counts[name] = 0
                continue
            try:
                counts[name] = len(butler.query_datasets(name, collections=run, explain=False, limit=None))
            except Exception:  # noqa: BLE001 - missing run (nothing ran): zero
                counts[name] = 0
    return counts


def run_step(
    campaign: CampaignConfig,
    *,
    site: str,
    repo: Path,
    step: str,
    chain: str,
    output_run: str,
    tracts: list[int] | None = None,
    faults: list[str] | None = None,
    config_overrides: list[str] | None = None,
    dry_run: bool = False,
    result_path: Path | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    spec = campaign.pipeline_spec
    labels = spec.step_tasks(step)
    if not labels:
        raise StacksideError(f"{spec.file}: no task has step {step!r}; steps are {', '.join(spec.steps())}")
    fault_map = parse_faults(faults, spec, labels)
    override_map = parse_config_overrides(config_overrides, spec, labels)
    if not (repo / "butler.yaml").exists():
        raise StacksideError(f"Butler repo {repo} (site {site}) does not exist: run `seed-repo` for this site first")

    # Where the pipeline file and pipetask's log go.
    if result_path is not None:
        base = result_path.parent / (result_path.stem if result_path.suffix == ".json" else result_path.name)
        pipeline_file = Path(f"{base}.pipeline.yaml")
        log_file = Path(f"{base}.pipetask.log")
        summary_file = Path(f"{base}.summary.json")
    else:
        stem = _safe(output_run) + ("-dryrun" if dry_run else "")
        pipeline_file = settings.work_dir() / "pipelines" / f"{stem}.yaml"
        log_file = settings.work_dir() / "logs" / f"{stem}.pipetask.log"
        summary_file = settings.work_dir() / "logs" / f"{stem}.summary.json"
    for p in (pipeline_file, log_file, summary_file):
        p.parent.mkdir(parents=True, exist_ok=True)
    summary_file.unlink(missing_ok=True)
    write_pipeline(spec, pipeline_file, step, fault_map, override_map)

    exists, existing_configs = _run_exists(repo, output_run, chain, site)
    # Through the site's warm stack server when there is one (stackside/warm.py): the same pipetask.
    cmd = [
        *settings.warm_prefix(site, sys.executable),
        pipetask_exe(),
        "qgraph" if dry_run else "run",
        "-b",
        str(repo),
        "-p",
        str(pipeline_file),
        "-i",
        chain,
        "--output-run",
        output_run,
    ]
    if tracts:
        cmd += ["-d", group_data_query(campaign, tracts)]
    if exists:
        # Retry: redo only what did not succeed, in the same RUN, never duplicating a dataset.
        cmd += (
            ["--extend-run", "--skip-existing-in", output_run, "--clobber-outputs"]
            if not dry_run
            else ["--skip-existing-in", output_run]
        )
        if not dry_run and set(labels) <= set(existing_configs):
            # Configs were written by the first attempt; a fault injected then (fail_condition)
            # would otherwise make the comparison refuse the retry.
            cmd.append("--skip-init-writes")
    if not dry_run:
        cmd += ["--register-dataset-types", "--summary", str(summary_file)]
        if processes > 1:
            cmd += ["-j", str(processes)]

    started = _now()
    t0 = time.monotonic()
    with open(log_file, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=settings.site_environment(), cwd=str(log_file.parent)
        )
    duration = time.monotonic() - t0
    finished = _now()
    text = log_file.read_text(errors="replace")

    per_task: dict[str, int] = {}
    previously: dict[str, int] = {}
    for m in _GENERATED.finditer(text):
        per_task[m.group(2)] = int(m.group(1))
        if m.group(3):
            previously[m.group(2)] = int(m.group(3))
    for m in _DROPPED.finditer(text):
        per_task.setdefault(m.group(1), 0)
        if m.group(2):
            previously[m.group(1)] = int(m.group(2))
    result: dict[str, Any] = {
        "site": site,
        "step": step,
        "repo": str(repo),
        "output_run": output_run,
        "chain": chain,
        "tracts": tracts or [],
        "faults": fault_map,
        "config_overrides": override_map,
        "retry": exists,
        "status": None,
        "quanta": {
            "total": sum(per_task.values()),
            "succeeded": 0,
            "failed": 0,
            "blocked": 0,
            "previously_succeeded": sum(previously.values()),
        },
        "quanta_per_task": per_task,
        "failed_quanta": [],
        "outputs": {},
        "started": started,
        "finished": finished,
        "duration_s": round(duration, 3),
        "returncode": proc.returncode,
        "command": shlex.join(cmd),
        "pipeline": str(pipeline_file),
        "log": str(log_file),
        "chain_updated": False,
    }
    empty = bool(_EMPTY.search(text)) and sum(per_task.values()) == 0

    if dry_run:
        if proc.returncode != 0 and not empty:
            raise StacksideError(
                f"pipetask qgraph failed for step {step} at site {site} (repo {repo}), exit {proc.returncode}: "
                f"{_last_error(text)}; see {log_file}"
            )
        result["status"] = "dry_run"
        return result

    summary = None
    if summary_file.exists():
        try:
            summary = json.loads(summary_file.read_text())
        except json.JSONDecodeError:
            summary = None
    if summary is not None:
        tasks = summary.get("qgraphSummary", {}).get("qgraphTaskSummaries", {}) or {}
        if tasks:
            result["quanta_per_task"] = {k: v.get("numQuanta", 0) for k, v in tasks.items()}
            result["quanta"]["total"] = sum(result["quanta_per_task"].values())
        for q in summary.get("quantaReports", []):
            status = q.get("status")
            if status == "success":
                result["quanta"]["succeeded"] += 1
            elif status == "skipped":
                result["quanta"]["blocked"] += 1
            else:  # failure, timeout
                result["quanta"]["failed"] += 1
                exc = q.get("exceptionInfo") or {}
                result["failed_quanta"].append(
                    {
                        "task": q.get("taskLabel"),
                        "data_id": q.get("dataId"),
                        "error": f"{exc.get('className', status)}: {exc.get('message', '')}".strip(),
                        "status": status,
                        "exit_code": q.get("exitCode"),
                    }
                )
        # Quanta that never reported (e.g. the executor stopped) count as blocked.
        reported = result["quanta"]["succeeded"] + result["quanta"]["failed"] + result["quanta"]["blocked"]
        if reported < result["quanta"]["total"]:
            result["quanta"]["blocked"] += result["quanta"]["total"] - reported

    if proc.returncode == 0 and summary is not None and summary.get("status") == "success":
        result["status"] = (
            "succeeded" if result["quanta"]["total"] or result["quanta"]["previously_succeeded"] else "empty"
        )
    elif summary is not None and result["quanta"]["failed"]:
        result["status"] = "failed"
    elif empty:
        # Nothing to run: either everything already succeeded in this RUN (a retry of a done
        # step) or the data query selects nothing for this step.
        result["status"] = "succeeded" if result["quanta"]["previously_succeeded"] else "empty"
    else:
        raise StacksideError(
            f"pipetask run failed before executing quanta for step {step} at site {site} (repo {repo}, "
            f"run {output_run}), exit {proc.returncode}: {_last_error(text)}; see {log_file}"
        )

    result["outputs"] = count_outputs(repo, output_run, spec.step_outputs(step))
    if result["status"] == "succeeded":
        butler, _ = open_butler(repo)
        with butler:
            from lsst.daf.butler.registry import MissingCollectionError

            try:
                butler.collections.get_info(output_run)
                has_run = True
            except MissingCollectionError:
                has_run = False
            if has_run:
                result["chain_updated"] = bool(prepend_to_chain(butler, chain, [output_run]))
    return result


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln or "Exception" in ln:
            return ln[:400]
    return (lines[-1] if lines else "no output")[:400]
