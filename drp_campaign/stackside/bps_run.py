"""One step group's BPS run at a site: submit, report, restart, rescue and cancel, for real.

Everything about the run lives in its run directory (drp_campaign.bps.run_dir), so any caller,
after any crash, finds the same run: `submit` is idempotent. It submits only when the directory
holds no run; a run still going is attached to; a finished clean run is left alone; a failed,
lost or cancelled run is *restarted* (`bps restart`: same RUN, only what did not succeed reruns)
when the step's pipeline definition is unchanged, and *rescued* when it changed (somebody fixed
the cause): a new RUN `<run>/rescueN` that reads the earlier RUNs and skips what they hold.

What differs between WMSs (how a workflow is launched, its state read, restarted or cancelled)
is the backend's, drp_campaign/wms/ (parsl: detached local process; PanDA: request ids in iDDS),
chosen by the record's `wms`; what a run is (run.json, attempts, the report) is the same for all.
"""

from __future__ import annotations

import hashlib
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from .. import bps as bpsrec
from .. import graph
from ..config import CampaignConfig
from ..drills import RELEASE_JOBS
from ..wms import RunState, Wms, backend, check_transition, may_become
from ..wms.base import bps_defaults
from ._errors import StacksideError
from .pipeline import build_pipeline_yaml, parse_config_overrides, parse_faults
from .repo import open_butler, prepend_to_chain, require_chain

# Injected job faults (tests, drills), as a wrapper around each BPS job's command.
JOB_FAULTS = {
    # The first job to start dies as if its node were lost; later ones (a restart) run.
    "transient": """#!/bin/bash
marker="$(dirname "$0")/transient-fault.fired"
if [ ! -e "$marker" ]; then
  touch "$marker"
  echo "Killed: node lost (injected transient fault, exit 137)" >&2
  exit 137
fi
exec "$@"
""",
    # Every job waits first: a run that stays in flight long enough to cancel or to outlive a
    # restart. At most SECONDS: a drill that is done with it puts drills.RELEASE_JOBS in the
    # attempt's directory (where this script is) and the jobs go on at once, not sleeping it out.
    "slow": """#!/bin/bash
for _ in $(seq {seconds}); do
  [ -e "$(dirname "$0")/{release}" ] && break
  sleep 1
done
exec "$@"
""",
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- submit (idempotent) -------------------------------------------------------------------------


def submit(
    campaign: CampaignConfig,
    *,
    site: str,
    repo: Path,
    step: str,
    group: graph.WorkGroup,
    key: str,
    chain: str,
    run_dir: Path,
    faults: list[str] | None = None,
    job_fault: str | None = None,
    config_overrides: list[str] | None = None,
) -> dict[str, Any]:
    spec = campaign.pipeline_spec
    labels = spec.step_tasks(step)
    if not labels:
        raise StacksideError(f"{spec.file}: no task has step {step!r}; steps are {', '.join(spec.steps())}")
    # A config override, like a fault, is part of the pipeline text: a changed one changes its sha,
    # so a failed run is rescued under the new definition, never restarted under the old one.
    pipeline_text = build_pipeline_yaml(
        spec, step, parse_faults(faults, spec, labels), parse_config_overrides(config_overrides, spec, labels)
    )
    if job_fault:
        _job_fault_script(job_fault)  # a bad one is refused before anything is written
    sha = hashlib.sha256(pipeline_text.encode()).hexdigest()[:16]
    run_dir.mkdir(parents=True, exist_ok=True)
    pipeline_file = run_dir / f"pipeline-{sha}.yaml"
    pipeline_file.write_text(pipeline_text)
    record = bpsrec.read_record(run_dir)
    wms = campaign.bps.wms
    identity = _group_identity(campaign, site, repo, step, group, chain)

    if record is None:
        record = {
            "wms": wms,
            "site": site,
            "step": step,
            "group": group.label,
            "chain": chain,
            "repo": str(repo),
            "output_run": graph.output_run(campaign, key, site, step, group.label),
            "identity": identity,
            "attempts": [],
        }
        return _new_attempt(campaign, record, run_dir, "submit", site, step, group, key, pipeline_file, sha, job_fault)

    state = run_state(run_dir)
    same_work = record.get("identity") == identity
    if state == RunState.RUNNING and not same_work:
        raise StacksideError(
            f"site {site} step {step} group {group.label}: a BPS run for this group is still going ({run_dir}) but was "
            f"submitted for other work ({_identity_change(record.get('identity'), identity)}); nothing was attached "
            "or submitted. Cancel that run (mark the task failed, or bps-cancel) and clear the task: it is rescued "
            "for the new work."
        )
    if state == RunState.RUNNING:
        return _answer(record, run_dir, "attached", state)
    if same_work and state in (RunState.FINISHED, RunState.SUCCEEDED, RunState.FAILED):
        outcome = report(campaign, run_dir, update_chain=False)
        if outcome["status"] == "succeeded":
            return _answer(record, run_dir, "attached", state)
    # Failed, lost or cancelled: the same definition restarts; a changed one (a fix) is rescued.
    # So is a group whose work changed (its tracts, data query or inputs): never attached to the
    # earlier run's outcome; the rescue reads the earlier RUNs and skips what they hold.
    # A submission that never made a workflow (e.g. its quantum graph failed) is submitted again.
    started = [a for a in record["attempts"] if a["kind"] != "restart" and _wms(record).has_workflow(a)]
    last_made_workflow = _wms(record).has_workflow(_last_submission(record))
    check_transition(state, RunState.RUNNING)
    if started and same_work and sha == record["attempts"][-1]["pipeline_sha"] and last_made_workflow:
        return restart(campaign, run_dir)
    record["identity"] = identity
    kind = "rescue" if started else "submit"
    return _new_attempt(campaign, record, run_dir, kind, site, step, group, key, pipeline_file, sha, job_fault)


def _wms(record: dict) -> Wms:
    return backend(record["wms"])


def _answer(record: dict, run_dir: Path, action: str, state: str) -> dict[str, Any]:
    last = record["attempts"][-1]
    return {
        "action": action,
        "state": state,
        "wms": record["wms"],
        "run_dir": str(run_dir),
        "attempt": last["n"],
        "run_id": last["run_id"],
        "output_run": last["output_run"],
        "kind": last["kind"],
        "restarts": sum(1 for a in record["attempts"] if a["kind"] == "restart"),
    }


def _group_identity(campaign, site, repo, step, group, chain) -> dict[str, Any]:
    """What one group's run is for: its tracts, its data query and a hash of the input datasets
    that query selects in the chain (their ids). A run record holds it, and a group whose
    identity changed (tracts edited, inputs re-made) is never attached to the earlier outcome.
    Refuses before submitting when the query selects no input of the step."""
    spec = campaign.pipeline_spec
    produced = set(spec.step_outputs(step))
    inputs = list(
        dict.fromkeys(n for lbl in spec.step_tasks(step) for n in spec.tasks[lbl].inputs if n not in produced)
    )
    where = bpsrec.group_data_query(campaign, group.tracts)
    butler, _ = open_butler(repo, writeable=False, what=f" (site {site})")
    with butler:
        require_chain(butler, chain, repo, site)
        registered = {t.name for t in butler.registry.queryDatasetTypes("*")}
        ids = sorted(
            str(ref.id)
            for name in inputs
            if name in registered
            for ref in butler.query_datasets(
                name, collections=chain, limit=None, explain=False, **bpsrec.group_query(campaign, group.tracts)
            )
        )
    if not ids:
        raise StacksideError(
            f"site {site} step {step} group {group.label}: the data query {where or '(everything)'!r} selects none "
            f"of the step's inputs ({', '.join(inputs)}) in {chain!r} at {repo}; nothing was submitted. Check the "
            f"group's tracts and that the inputs reached this site (hops, check_inputs)"
        )
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    return {"tracts": sorted(group.tracts), "data_query": where, "inputs": f"{len(ids)}:{digest}"}


def _identity_change(before: dict | None, now: dict) -> str:
    if not before:
        return "the earlier record predates group identities"
    changed = [f"{k} {before.get(k)!r} -> {now[k]!r}" for k in now if before.get(k) != now[k]]
    return "; ".join(changed)


def _job_fault_script(job_fault: str) -> str:
    kind, _, arg = job_fault.partition(":")
    if kind not in JOB_FAULTS or (kind == "slow") != arg.isdigit():
        raise StacksideError(f"--job-fault {job_fault!r}: expected 'transient' or 'slow:SECONDS'")
    return JOB_FAULTS[kind].replace("{seconds}", arg).replace("{release}", RELEASE_JOBS)


def _new_attempt(campaign, record, run_dir, kind, site, step, group, key, pipeline_file, sha, job_fault) -> dict:
    n = len(record["attempts"]) + 1
    base_run = record["output_run"]
    earlier = _output_runs(record)
    out_run = base_run if kind == "submit" else f"{base_run}/rescue{n}"
    attempt_dir = run_dir / f"attempt-{n}"
    attempt_dir.mkdir(parents=True, exist_ok=True)
    config = bpsrec.submit_config(
        campaign,
        site,
        step,
        group,
        key=key,
        pipeline_yaml=pipeline_file,
        submit_dir=attempt_dir / "submit",
        output_run=out_run,
        rescue_of=earlier if kind == "rescue" else (),
        chain=record["chain"],
        repo=record["repo"],
    )
    _wms(record).prepare(config, site)
    if job_fault:
        script = attempt_dir / "job-fault.sh"
        script.write_text(_job_fault_script(job_fault))
        script.chmod(0o755)
        command = config.get("runQuantumCommand") or bps_defaults()["runQuantumCommand"]
        config["runQuantumCommand"] = f"{script} {command}"
    submit_yaml = attempt_dir / "submit.yaml"
    submit_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    attempt = {
        "n": n,
        "kind": kind,
        "output_run": out_run,
        "pipeline_sha": sha,
        "submit_yaml": str(submit_yaml),
        "submit_path": config["submitPath"],
        "started": _now(),
        "run_id": None,
        "pid": None,
    }
    record["attempts"].append(attempt)
    bpsrec.write_record(run_dir, record)  # before launching: a crash now leaves a LOST run, not an unknown one
    _wms(record).submit(run_dir, attempt, submit_yaml, site)
    bpsrec.write_record(run_dir, record)
    return _answer(record, run_dir, "submitted" if kind == "submit" else "rescued", RunState.RUNNING)


# --- state, restart, cancel ----------------------------------------------------------------------


def run_state(run_dir: Path) -> RunState:
    record = bpsrec.read_record(run_dir)
    if record is None:
        return RunState.MISSING
    return _wms(record).state(run_dir, record)


def restart(campaign: CampaignConfig, run_dir: Path) -> dict[str, Any]:
    record = _record(run_dir)
    last = record["attempts"][-1]
    n = len(record["attempts"]) + 1
    attempt = {**last, "n": n, "kind": "restart", "started": _now(), "cancelled": False, "restart_of": last["n"]}
    record["attempts"].append(attempt)
    bpsrec.write_record(run_dir, record)
    _wms(record).restart(run_dir, record, last, attempt)
    bpsrec.write_record(run_dir, record)
    return _answer(record, run_dir, "restarted", RunState.RUNNING)


def cancel(run_dir: Path) -> dict[str, Any]:
    record = _record(run_dir)
    last = record["attempts"][-1]
    state = run_state(run_dir)
    if not may_become(state, RunState.CANCELLED):
        return {**_answer(record, run_dir, "nothing_to_cancel", state)}
    _wms(record).cancel(run_dir, record, last)
    last["cancelled"] = True
    last["cancelled_at"] = _now()
    bpsrec.write_record(run_dir, record)
    return _answer(record, run_dir, "cancelled", RunState.CANCELLED)


def _record(run_dir: Path) -> dict:
    record = bpsrec.read_record(run_dir)
    if record is None:
        raise StacksideError(f"no BPS run recorded in {run_dir}: submit one first (bps-submit)")
    return record


# --- report: the real per-quantum outcome --------------------------------------------------------

_JOB_EXIT = re.compile(r"exited with (?:return )?code (-?\d+)|exit(?:ed)? (?:status|code) (-?\d+)", re.I)


def report(
    campaign: CampaignConfig, run_dir: Path, *, update_chain: bool = True, accept_failures: bool = False
) -> dict[str, Any]:
    """Per-task succeeded / failed / blocked counts and the failed quanta, from the repo itself.

    The RUN(s) join the site's chain when the run is clean, or when the controller has accepted
    its failures (known data problems): downstream steps then use what did succeed.
    """
    record = _record(run_dir)
    last = record["attempts"][-1]
    state = run_state(run_dir)
    repo = Path(record["repo"])
    graphs = _qgraph_files(record)
    result: dict[str, Any] = {
        "site": record["site"],
        "step": record["step"],
        "group": record["group"],
        "wms": record["wms"],
        "run_id": last["run_id"],
        "attempt": last["n"],
        "kind": last["kind"],
        "state": state,
        "output_run": record["output_run"],
        "output_runs": _output_runs(record),
        "restarts": sum(1 for a in record["attempts"] if a["kind"] == "restart"),
        "status": None,
        "quanta": {"total": 0, "succeeded": 0, "failed": 0, "blocked": 0},
        "quanta_per_task": {},
        "failed_quanta": [],
        "outputs": {},
        "chain_updated": False,
        "started": record["attempts"][0]["started"],
        "finished": _ended(run_dir, record, last),
        "log": str(run_dir / f"attempt-{last['n']}.log"),
    }
    if state == RunState.RUNNING:
        result["status"] = "running"
        return result
    if not graphs or not _qgraph_files({"attempts": [_last_submission(record)]}):
        result["status"] = "failed"
        result["failed_quanta"] = _job_failures(run_dir, last, labels=[])
        return result
    tasks = _provenance_report(repo, graphs, run_dir / f"attempt-{last['n']}.report.json")
    for label, t in tasks.items():
        result["quanta_per_task"][label] = t["n_expected"]
        result["quanta"]["total"] += t["n_expected"]
        result["quanta"]["succeeded"] += t["n_successful"]
        result["quanta"]["failed"] += t["n_failed"]
        result["quanta"]["blocked"] += t["n_blocked"] + t.get("n_unknown", 0)
        for q in t["failed_quanta"]:
            message = (q.get("messages") or ["(no log)"])[-1]
            found = re.search(r"Exception (\w+): (.*)", message, re.S)
            error = f"{found.group(1)}: {found.group(2)}" if found else message
            result["failed_quanta"].append(
                {
                    "task": label,
                    "data_id": q.get("data_id"),
                    "error": error.strip()[:500],
                    "status": "failure",
                    "exit_code": None,
                }
            )
    q = result["quanta"]
    if q["total"] and q["succeeded"] == q["total"]:
        result["status"] = "succeeded"
    else:
        result["status"] = "failed"
        if q["blocked"] and not q["failed"]:
            # Quanta that never reported: their job died before running them (killed, lost node).
            result["failed_quanta"] += _job_failures(
                run_dir, last, labels=[k for k, t in tasks.items() if t.get("n_unknown")]
            )
    from .step import count_outputs  # one definition of "what a step wrote"

    result["outputs"] = {}
    for run in result["output_runs"]:
        for name, count in count_outputs(repo, run, campaign.pipeline_spec.step_outputs(record["step"])).items():
            result["outputs"][name] = result["outputs"].get(name, 0) + count
    if update_chain and (result["status"] == "succeeded" or accept_failures) and result["output_runs"]:
        butler, _ = open_butler(repo)
        with butler:
            result["chain_updated"] = bool(prepend_to_chain(butler, record["chain"], result["output_runs"]))
    return result


def _ended(run_dir: Path, record: dict, attempt: dict) -> str:
    """When the workflow itself ended (a local run's exit file), else now: its wall time, not ours."""
    ended = _wms(record).ended(run_dir, attempt)
    return datetime.fromtimestamp(ended, UTC).isoformat(timespec="seconds") if ended is not None else _now()


def _output_runs(record: dict) -> list[str]:
    """Newest first: a rescue's RUN shadows the RUN it rescued."""
    return list(dict.fromkeys(a["output_run"] for a in reversed(record["attempts"]) if _wms(record).has_workflow(a)))


def _last_submission(record: dict) -> dict:
    return next(a for a in reversed(record["attempts"]) if a["kind"] != "restart")


def _qgraph_files(record: dict) -> list[Path]:
    """The quantum graphs of every submission, oldest first (what `pipetask report` wants)."""
    found = []
    for a in record["attempts"]:
        if a["kind"] == "restart":
            continue
        found += sorted(Path(a["submit_path"]).glob("*.qg"))
    return found


def _provenance_report(repo: Path, graphs: list[Path], out: Path) -> dict[str, dict]:
    """`pipetask report --force-v2` (QuantumProvenanceGraph) in this process: mock storage classes known.

    Read once per attempt: an attempt that has ended does not change (a restart or a rescue is a
    new attempt, with a report file of its own), so a later report of it (the operator after
    bps-submit found the run finished, or accepting its failures) reads the file written then.
    """
    import contextlib
    import json

    if out.exists():
        try:
            return json.loads(out.read_text())["tasks"]
        except (ValueError, KeyError):
            pass  # cut short while being written: read it again
    import lsst.pipe.base.tests.mocks  # noqa: F401
    from lsst.ctrl.mpexec.cli.pipetask import cli

    out.unlink(missing_ok=True)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # its tables are log; stdout carries our JSON only
            cli.main(
                ["report", "--force-v2", "--full-output-filename", str(out), str(repo), *map(str, graphs)],
                standalone_mode=False,
            )
    except SystemExit as exc:  # click may still exit
        if exc.code:
            raise StacksideError(f"pipetask report failed on {repo} for {graphs}: exit {exc.code}") from None
    return json.loads(out.read_text())["tasks"]


def _job_failures(run_dir: Path, attempt: dict, labels: list[str]) -> list[dict]:
    """Failed jobs that left no quantum log: the job's own last stderr line and exit code."""
    failures = []
    log_dir = Path(attempt["submit_path"]) / "logs"
    for stderr in sorted(log_dir.glob("**/*.stderr")) if log_dir.exists() else []:
        lines = [ln for ln in stderr.read_text(errors="replace").splitlines() if ln.strip()]
        if not lines or not any("Killed" in ln or "Error" in ln for ln in lines[-3:]):
            continue
        last = lines[-1]
        code = re.search(r"exit (-?\d+)", last)
        failures.append(
            {
                "task": stderr.parent.name,
                "data_id": {},
                "error": last[:500],
                "status": "job_failed",
                "exit_code": int(code.group(1)) if code else None,
            }
        )
    if not failures:
        log = run_dir / f"attempt-{attempt['n']}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        code = _JOB_EXIT.search(text)
        why = _last_error_line(Path(attempt["submit_path"]) / "quantumGraphGeneration.out") or _last_error_line(log)
        failures.append(
            {
                "task": ",".join(labels) or "(workflow)",
                "data_id": {},
                "status": "job_failed",
                "error": f"the BPS workflow ended without running these quanta: {why or 'no error line'}; see {log}",
                "exit_code": int(next(g for g in code.groups() if g)) if code else None,
            }
        )
    return failures


def _last_error_line(path: Path) -> str:
    if not path.exists():
        return ""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return next((ln[:300] for ln in reversed(lines) if "Error" in ln or "error" in ln), "")
