"""One step group's BPS run at a site: submit, report, restart, rescue and cancel, for real.

Everything about the run lives in its run directory (drp_campaign.bps.run_dir), so any caller,
after any crash, finds the same run: `submit` is idempotent. It submits only when the directory
holds no run; a run still going is attached to; a finished clean run is left alone; a failed,
lost or cancelled run is *restarted* (`bps restart`: same RUN, only what did not succeed reruns)
when the step's pipeline definition is unchanged, and *rescued* when it changed (somebody fixed
the cause): a new RUN `<run>/rescueN` that reads the earlier RUNs and skips what they hold.

Local WMS (parsl): `bps submit` executes the whole workflow, so it runs detached in its own
session and writes its exit code to a file; the controller polls those files. PanDA: `bps submit`
returns a request id at once; status, restart and cancel go through `bps` to PanDA/iDDS, and a
restart or cancel is confirmed by reading the state back (the plugin reports success even when
iDDS refused).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from .. import bps as bpsrec
from .. import graph, settings
from ..config import CampaignConfig
from ..wms import RunState, check_transition, may_become
from ._errors import StacksideError
from .pipeline import build_pipeline_yaml, parse_faults
from .repo import open_butler, prepend_to_chain

PANDA_RUN_ID = re.compile(r"^Run Id:\s*(\S+)", re.M)
# iDDS request states that confirm a cancel, and those a restart must have left.
IDDS_CANCELLED = {"Cancelling", "ToCancel", "Cancelled"}
IDDS_NOT_RESTARTED = {"Failed", "SubFinished", "Expired", "Cancelled", "Cancelling", "ToCancel", "Suspended"}
# ctrl_bps WmsStates as `bps status --id` exit codes (FIELD-NOTES): anything else is in flight.
WMS_EXIT_STATES = {0: RunState.SUCCEEDED, 19: RunState.FAILED, 15: RunState.RUNNING, 1: RunState.UNKNOWN}
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
    # Every job waits first: a run that stays in flight long enough to cancel or to outlive a restart.
    "slow": """#!/bin/bash
sleep {seconds}
exec "$@"
""",
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def stack_exe(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if not exe.exists():
        raise StacksideError(f"{name} not found next to {sys.executable}: install lsst-ctrl-bps in the site's stack")
    return str(exe)


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # BPS jobs call `pipetask` and `python` from PATH: this stack's, whatever the caller had.
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


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
) -> dict[str, Any]:
    spec = campaign.pipeline_spec
    labels = spec.step_tasks(step)
    if not labels:
        raise StacksideError(f"{spec.file}: no task has step {step!r}; steps are {', '.join(spec.steps())}")
    pipeline_text = build_pipeline_yaml(spec, step, parse_faults(faults, spec, labels))
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
        record = {"wms": wms, "site": site, "step": step, "group": group.label, "chain": chain,
                  "repo": str(repo), "output_run": graph.output_run(campaign, key, site, step, group.label),
                  "identity": identity, "attempts": []}
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
    started = [a for a in record["attempts"] if a["kind"] != "restart" and _has_workflow(record["wms"], a)]
    last_made_workflow = _has_workflow(record["wms"], _last_submission(record))
    check_transition(state, RunState.RUNNING)
    if started and same_work and sha == record["attempts"][-1]["pipeline_sha"] and last_made_workflow:
        return restart(campaign, run_dir)
    record["identity"] = identity
    kind = "rescue" if started else "submit"
    return _new_attempt(campaign, record, run_dir, kind, site, step, group, key, pipeline_file, sha, job_fault)


def _has_workflow(wms: str, attempt: dict) -> bool:
    """Did this submission get as far as a workflow the WMS can restart?"""
    if wms == "parsl":
        return (Path(attempt["submit_path"]) / "parsl_workflow.pickle").exists()
    return bool(attempt.get("run_id"))


def _answer(record: dict, run_dir: Path, action: str, state: str) -> dict[str, Any]:
    last = record["attempts"][-1]
    return {"action": action, "state": state, "wms": record["wms"], "run_dir": str(run_dir), "attempt": last["n"],
            "run_id": last["run_id"], "output_run": last["output_run"], "kind": last["kind"],
            "restarts": sum(1 for a in record["attempts"] if a["kind"] == "restart")}  # fmt: skip


def _group_identity(campaign, site, repo, step, group, chain) -> dict[str, Any]:
    """What one group's run is for: its tracts, its data query and a hash of the input datasets
    that query selects in the chain (their ids). A run record holds it, and a group whose
    identity changed (tracts edited, inputs re-made) is never attached to the earlier outcome.
    Refuses before submitting when the query selects no input of the step."""
    from lsst.daf.butler.registry import MissingCollectionError

    spec = campaign.pipeline_spec
    produced = set(spec.step_outputs(step))
    inputs = list(dict.fromkeys(n for lbl in spec.step_tasks(step) for n in spec.tasks[lbl].inputs if n not in produced))
    where = bpsrec.group_data_query(campaign, group.tracts)
    butler, _ = open_butler(repo, writeable=False, what=f" (site {site})")
    with butler:
        try:
            butler.collections.get_info(chain)
        except MissingCollectionError:
            raise StacksideError(f"input chain {chain!r} does not exist in repo {repo} (site {site}): "
                                 f"run check_inputs for this site first") from None
        registered = {t.name for t in butler.registry.queryDatasetTypes("*")}
        ids = sorted(str(ref.id) for name in inputs if name in registered
                     for ref in butler.query_datasets(name, collections=chain, limit=None, explain=False,
                                                     **bpsrec.group_query(campaign, group.tracts)))
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
    return JOB_FAULTS[kind].replace("{seconds}", arg)


def _new_attempt(campaign, record, run_dir, kind, site, step, group, key, pipeline_file, sha, job_fault) -> dict:
    n = len(record["attempts"]) + 1
    base_run = record["output_run"]
    earlier = list(dict.fromkeys(a["output_run"] for a in reversed(record["attempts"]) if _has_workflow(record["wms"], a)))
    out_run = base_run if kind == "submit" else f"{base_run}/rescue{n}"
    attempt_dir = run_dir / f"attempt-{n}"
    attempt_dir.mkdir(parents=True, exist_ok=True)
    config = bpsrec.submit_config(
        campaign, site, step, group, key=key, pipeline_yaml=pipeline_file, submit_dir=attempt_dir / "submit",
        output_run=out_run, rescue_of=earlier if kind == "rescue" else (), chain=record["chain"], repo=record["repo"],
    )  # fmt: skip
    if record["wms"] == "parsl":
        _through_warm_server(config, site)
    if job_fault:
        script = attempt_dir / "job-fault.sh"
        script.write_text(_job_fault_script(job_fault))
        script.chmod(0o755)
        config["runQuantumCommand"] = f"{script} {config.get('runQuantumCommand') or _bps_defaults()['runQuantumCommand']}"
    submit_yaml = attempt_dir / "submit.yaml"
    submit_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    attempt = {"n": n, "kind": kind, "output_run": out_run, "pipeline_sha": sha, "submit_yaml": str(submit_yaml),
               "submit_path": config["submitPath"], "started": _now(), "run_id": None, "pid": None}  # fmt: skip
    record["attempts"].append(attempt)
    bpsrec.write_record(run_dir, record)  # before launching: a crash now leaves a LOST run, not an unknown one
    if record["wms"] == "parsl":
        attempt["pid"] = _launch_detached(run_dir, n, [stack_exe("bps"), "submit", str(submit_yaml)], site)
        attempt["run_id"] = attempt["submit_path"]  # ctrl_bps_parsl's run id is its submit path
    else:
        attempt["run_id"] = _panda_submit(run_dir, n, submit_yaml)
    bpsrec.write_record(run_dir, record)
    return _answer(record, run_dir, "submitted" if kind == "submit" else "rescued", RunState.RUNNING)


def _bps_defaults() -> dict:
    """ctrl_bps's own default commands (bps_defaults.yaml), to wrap rather than copy."""
    from importlib.resources import files

    return yaml.safe_load((files("lsst.ctrl.bps") / "etc" / "bps_defaults.yaml").read_text())


def _through_warm_server(config: dict, site: str) -> None:
    """Local WMS only: the workflow's own commands (quantum graph, init job, jobs, final job) run
    through the site's warm stack server when there is one: the same commands, started forked
    from a process that has the stack imported (stackside/warm.py) instead of importing it again."""
    prefix = " ".join(settings.warm_prefix(site, sys.executable))
    if not prefix:
        return
    defaults = _bps_defaults()
    config["createQuantumGraph"] = f"{prefix} {defaults['createQuantumGraph']}"
    config["runQuantumCommand"] = f"{prefix} {defaults['runQuantumCommand']}"
    config["pipetask"] = {"pipetaskInit": {"runQuantumCommand": f"{prefix} {defaults['pipetask']['pipetaskInit']['runQuantumCommand']}"}}
    config["finalJob"]["command1"] = f"{prefix} {config['finalJob']['command1']}"


def _launch_detached(run_dir: Path, n: int, argv: list[str], site: str) -> int:
    """Start ARGV in its own session, outliving us; it writes its exit code when it ends.
    Through the site's warm stack server when there is one (the launcher waits for it)."""
    argv = [*settings.warm_prefix(site, sys.executable), *argv]
    log, done = run_dir / f"attempt-{n}.log", bpsrec.exit_file(run_dir, n)
    script = '"${@:3}" > "$1" 2>&1; echo $? > "$2.tmp" && mv "$2.tmp" "$2"'
    proc = subprocess.Popen(
        ["bash", "-c", script, bpsrec.LAUNCHER_NAME, str(log), str(done), *argv],
        cwd=run_dir, env=_environment(), start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return proc.pid


def _bps(args: list[str], run_dir: Path, n: int, what: str) -> subprocess.CompletedProcess:
    log = run_dir / f"attempt-{n}.{what}.log"
    proc = subprocess.run([stack_exe("bps"), *args], capture_output=True, text=True, env=_environment(), cwd=run_dir, timeout=600)
    log.write_text(f"$ bps {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _panda_submit(run_dir: Path, n: int, submit_yaml: Path) -> str:
    proc = _bps(["submit", str(submit_yaml)], run_dir, n, "submit")
    found = PANDA_RUN_ID.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found or found.group(1) == "None":
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise StacksideError(f"bps submit to PanDA failed (exit {proc.returncode}): {' | '.join(tail)}; "
                             f"see {run_dir}/attempt-{n}.submit.log")  # fmt: skip
    return found.group(1)


# --- state, restart, cancel ----------------------------------------------------------------------


def run_state(run_dir: Path) -> RunState:
    record = bpsrec.read_record(run_dir)
    if record is None:
        return RunState.MISSING
    if record["wms"] == "parsl":
        return bpsrec.local_state(run_dir)
    last = record["attempts"][-1]
    if last.get("cancelled"):
        return RunState.CANCELLED  # iDDS says Cancelling (bps: RUNNING) until its agents finish the job
    proc = _bps(["status", "--id", str(last["run_id"])], run_dir, last["n"], "status")
    return WMS_EXIT_STATES.get(proc.returncode, RunState.RUNNING)


def restart(campaign: CampaignConfig, run_dir: Path) -> dict[str, Any]:
    record = _record(run_dir)
    last = record["attempts"][-1]
    n = len(record["attempts"]) + 1
    attempt = {**last, "n": n, "kind": "restart", "started": _now(), "cancelled": False, "restart_of": last["n"]}
    record["attempts"].append(attempt)
    bpsrec.write_record(run_dir, record)
    if record["wms"] == "parsl":
        argv = [stack_exe("bps"), "restart", "--wms-service-class", bpsrec.WMS_SERVICE_CLASSES["parsl"], "--id", last["submit_path"]]
        attempt["pid"] = _launch_detached(run_dir, n, argv, record["site"])
    else:
        proc = _bps(["restart", "--id", str(last["run_id"])], run_dir, n, "restart")
        status = _wait_for_idds_status(last["run_id"], lambda s: s not in IDDS_NOT_RESTARTED)
        if proc.returncode != 0 or status in IDDS_NOT_RESTARTED:
            raise StacksideError(f"PanDA did not restart request {last['run_id']} (iDDS still {status}; bps exit "
                                 f"{proc.returncode}); see {run_dir}/attempt-{n}.restart.log")  # fmt: skip
    bpsrec.write_record(run_dir, record)
    return _answer(record, run_dir, "restarted", RunState.RUNNING)


def cancel(run_dir: Path) -> dict[str, Any]:
    record = _record(run_dir)
    last = record["attempts"][-1]
    state = run_state(run_dir)
    if not may_become(state, RunState.CANCELLED):
        return {**_answer(record, run_dir, "nothing_to_cancel", state)}
    if record["wms"] == "parsl":
        # Recorded first: once the process is gone, nobody must see the run as LOST (and restart it).
        last["cancelled"] = True
        last["cancelled_at"] = _now()
        bpsrec.write_record(run_dir, record)
        _kill_group(last.get("pid"))
    else:
        proc = _bps(["cancel", "--id", str(last["run_id"])], run_dir, last["n"], "cancel")
        status = _wait_for_idds_status(last["run_id"], lambda s: s in IDDS_CANCELLED)
        if status not in IDDS_CANCELLED:
            raise StacksideError(f"PanDA did not cancel request {last['run_id']} (iDDS still {status}; bps exit "
                                 f"{proc.returncode}); see {run_dir}/attempt-{last['n']}.cancel.log")  # fmt: skip
    last["cancelled"] = True
    last["cancelled_at"] = _now()
    bpsrec.write_record(run_dir, record)
    return _answer(record, run_dir, "cancelled", RunState.CANCELLED)


def _kill_group(pid: int | None, grace_s: float = 20.0) -> None:
    if not bpsrec.process_alive(pid):
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while bpsrec.process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if bpsrec.process_alive(pid):
        os.killpg(pid, signal.SIGKILL)


def _wait_for_idds_status(request_id, accept, timeout_s: float = 60.0) -> str:
    """iDDS's own status name (bps maps Cancelling and Resuming to RUNNING, so it cannot confirm)."""
    from ..panda_connection import request_status

    deadline = time.monotonic() + timeout_s
    while True:
        status = request_status(dict(os.environ), int(request_id))
        if accept(status) or time.monotonic() > deadline:
            return status
        time.sleep(1.0)


def _record(run_dir: Path) -> dict:
    record = bpsrec.read_record(run_dir)
    if record is None:
        raise StacksideError(f"no BPS run recorded in {run_dir}: submit one first (bps-submit)")
    return record


# --- report: the real per-quantum outcome --------------------------------------------------------

_JOB_EXIT = re.compile(r"exited with (?:return )?code (-?\d+)|exit(?:ed)? (?:status|code) (-?\d+)", re.I)


def report(campaign: CampaignConfig, run_dir: Path, *, update_chain: bool = True, accept_failures: bool = False) -> dict[str, Any]:
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
        "site": record["site"], "step": record["step"], "group": record["group"], "wms": record["wms"],
        "run_id": last["run_id"], "attempt": last["n"], "kind": last["kind"], "state": state,
        "output_run": record["output_run"], "output_runs": _output_runs(record),
        "restarts": sum(1 for a in record["attempts"] if a["kind"] == "restart"),
        "status": None, "quanta": {"total": 0, "succeeded": 0, "failed": 0, "blocked": 0},
        "quanta_per_task": {}, "failed_quanta": [], "outputs": {}, "chain_updated": False,
        "started": record["attempts"][0]["started"], "finished": _ended(run_dir, last),
        "log": str(run_dir / f"attempt-{last['n']}.log"),
    }  # fmt: skip
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
            result["failed_quanta"].append({"task": label, "data_id": q.get("data_id"), "error": error.strip()[:500],
                                            "status": "failure", "exit_code": None})  # fmt: skip
    q = result["quanta"]
    if q["total"] and q["succeeded"] == q["total"]:
        result["status"] = "succeeded"
    else:
        result["status"] = "failed"
        if q["blocked"] and not q["failed"]:
            # Quanta that never reported: their job died before running them (killed, lost node).
            result["failed_quanta"] += _job_failures(run_dir, last, labels=[k for k, t in tasks.items() if t.get("n_unknown")])
    from .step import _count_outputs  # one definition of "what a step wrote"

    result["outputs"] = {}
    for run in result["output_runs"]:
        for name, count in _count_outputs(repo, run, campaign.pipeline_spec.step_outputs(record["step"])).items():
            result["outputs"][name] = result["outputs"].get(name, 0) + count
    if update_chain and (result["status"] == "succeeded" or accept_failures) and result["output_runs"]:
        butler, _ = open_butler(repo)
        with butler:
            result["chain_updated"] = bool(prepend_to_chain(butler, record["chain"], result["output_runs"]))
    return result


def _ended(run_dir: Path, attempt: dict) -> str:
    """When the workflow itself ended (a local run's exit file), else now: its wall time, not ours."""
    done = bpsrec.exit_file(run_dir, attempt["n"])
    if done.exists():
        return datetime.fromtimestamp(done.stat().st_mtime, UTC).isoformat(timespec="seconds")
    return _now()


def _output_runs(record: dict) -> list[str]:
    """Newest first: a rescue's RUN shadows the RUN it rescued."""
    return list(dict.fromkeys(a["output_run"] for a in reversed(record["attempts"]) if _has_workflow(record["wms"], a)))


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
            cli.main(["report", "--force-v2", "--full-output-filename", str(out), str(repo), *map(str, graphs)], standalone_mode=False)
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
        failures.append({"task": stderr.parent.name, "data_id": {}, "error": last[:500], "status": "job_failed",
                         "exit_code": int(code.group(1)) if code else None})  # fmt: skip
    if not failures:
        log = run_dir / f"attempt-{attempt['n']}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        code = _JOB_EXIT.search(text)
        why = _last_error_line(Path(attempt["submit_path"]) / "quantumGraphGeneration.out") or _last_error_line(log)
        failures.append({"task": ",".join(labels) or "(workflow)", "data_id": {}, "status": "job_failed",
                         "error": f"the BPS workflow ended without running these quanta: {why or 'no error line'}; see {log}",
                         "exit_code": int(next(g for g in code.groups() if g)) if code else None})  # fmt: skip
    return failures


def _last_error_line(path: Path) -> str:
    if not path.exists():
        return ""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return next((ln[:300] for ln in reversed(lines) if "Error" in ln or "error" in ln), "")
