"""Poll cost of waiting on BPS runs: 500 deferred runs in the triggerer against one poking sensor per run.

    make bench-poll        # or: scripts/with-env.sh python benchmarks/bps_poll_cost.py [--runs 500]
                           #   [--poll-intervals 30,5] [--seconds 60] [--pokers 20] [--panda auto|yes|no]

Both sides run the real code; only the run itself is a stand-in. Each of the N run directories
(a temp dir) holds a real run record (drp_campaign.bps.write_record) whose attempt's pid is ONE
long-lived `bash -c 'sleep ...' drp-bps-run` process, so every poll finds RUNNING by the same file
and /proc checks a real parsl run costs.

  - deferred: N BpsRunTrigger(wms="parsl").run() coroutines in one asyncio event loop in this
    process, which is what the Airflow triggerer does with deferred tasks (its DB bookkeeping and
    per-trigger log files are not in the figure; the trigger's own log lines go to a file).
    First polls are spread over one interval, as deferrals are in a campaign. Status calls are
    counted by wrapping drp_campaign.bps.local_state (counting only: the real function runs).
    CPU is this process's time.process_time() over the window, memory the process's RSS/PSS
    (and the increase over the same process before the triggers were created).
  - poking: one worker slot per run means one task process per run, each holding its slot while it
    sleeps between pokes. A sample of K real processes (this file with --poke) imports what a worker
    task imports (airflow.sdk, drp_campaign.operators.steps), then runs a real airflow.sdk
    BaseSensorOperator in mode="poke" (its own execute loop: poke, time.sleep(poke_interval)) whose
    poke is the same local_state. CPU and memory come from /proc of the K processes; the N figures
    are EXTRAPOLATED (x N/K) and labelled so. Not measured: the supervisor process Airflow's
    LocalExecutor runs next to every task process (and its heartbeats to the API server), so
    the real poking cost is higher than printed, not lower.

Both sides run side by side in the same windows (CPU is counted per process). At the end of the
last window every run gets its exit file and the benchmark checks that all N triggers fire and all
K sensors return: the figures are of a working loop, not of idle coroutines.

PanDA (optional, --panda auto: only if the local iDDS starts): scripts/idds-server.sh on its own
ports (8096/8097), database (drp_idds_pollbench) and work dir, with iDDS's Clerk off; one real
iDDS request is submitted through the relay's own code (localservices.panda.relay), then
BpsRunTrigger(wms="panda").state() - request_state through pandaclient, the relay and iDDS - is
timed call by call (wall, client CPU, and the relay + iDDS + PostgreSQL CPU from /proc). The N-run
figures for PanDA are PROJECTED (per call x calls per minute). The server is stopped and its
database dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

from drp_campaign import bps as bpsrec
from drp_campaign import settings
from drp_campaign.triggers.bps_run import BpsRunTrigger
from drp_campaign.wms import ENDED

TICK = os.sysconf("SC_CLK_TCK")
IDDS_SCRIPT = settings.PROJECT_ROOT / "scripts" / "idds-server.sh"


# --- /proc figures ------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """utime + stime of one process, seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_memory(pid: int | str = "self") -> dict[str, float]:
    """RSS, PSS and USS (private pages) of one process in MB, from smaps_rollup."""
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        kb[key] = int(value.split()[0])
    return {"rss": kb["Rss"] / 1024, "pss": kb["Pss"] / 1024, "uss": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024}


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def process_tree(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [pid, *(p for c in children for p in process_tree(int(c)))]


# --- the runs -----------------------------------------------------------------------------------


def start_launcher(seconds: int) -> subprocess.Popen:
    """One live process that looks like a detached `bps submit` (its $0 is LAUNCHER_NAME)."""
    return subprocess.Popen(["bash", "-c", f"sleep {seconds}; :", bpsrec.LAUNCHER_NAME], start_new_session=True)


def make_run_dirs(root: Path, prefix: str, n: int, pid: int) -> list[Path]:
    """N run directories with a record shaped like stackside/bps_run.py's, attempt 1 RUNNING as `pid`."""
    dirs = []
    for i in range(n):
        d = root / prefix / f"g{i:03d}"
        (d / "attempt-1").mkdir(parents=True)
        out_run = f"drp/bench/FRDF/step1/g{i:03d}"
        bpsrec.write_record(
            d,
            {
                "wms": "parsl",
                "site": "FRDF",
                "step": "step1",
                "group": f"g{i:03d}",
                "chain": "drp/bench/FRDF",
                "repo": str(root / "repo"),
                "output_run": out_run,
                "attempts": [
                    {
                        "n": 1,
                        "kind": "submit",
                        "output_run": out_run,
                        "pipeline_sha": "0123456789abcdef",
                        "submit_yaml": str(d / "attempt-1" / "submit.yaml"),
                        "submit_path": str(d / "attempt-1" / "submit"),
                        "started": "2026-11-26T00:00:00+00:00",
                        "run_id": str(d / "attempt-1" / "submit"),
                        "pid": pid,
                    }
                ],
            },
        )
        dirs.append(d)
    assert bpsrec.local_state(dirs[0]) == "RUNNING", "the stand-in run is not seen as RUNNING"
    return dirs


def finish(dirs: list[Path]) -> None:
    for d in dirs:
        bpsrec.exit_file(d, 1).write_text("0\n")


# --- the poking side: K task processes, each a sensor in poke mode -----------------------------


class NextPhase(BaseException):
    """SIGUSR1 in a poker: report the pokes so far, then do what its control file says next."""


def poke_main(run_dir: str, ctl: Path, stats: Path) -> None:
    """One worker task holding its slot: what it imports, then a real sensor's poke loop."""
    import airflow.sdk  # noqa: F401  what a worker task has loaded
    from airflow.sdk import BaseSensorOperator

    import drp_campaign.operators.steps  # noqa: F401

    pokes = seq = 0

    class BpsRunPokeSensor(BaseSensorOperator):
        def poke(self, context) -> bool:
            nonlocal pokes
            pokes += 1
            return bpsrec.local_state(Path(run_dir)) in ENDED

    def report(**extra) -> None:
        tmp = stats.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seq": seq, "pokes": pokes, **extra}))
        tmp.replace(stats)

    def on_signal(signum, frame):
        nonlocal seq
        seq += 1
        report()
        raise NextPhase

    signal.signal(signal.SIGUSR1, on_signal)
    report()  # ready
    todo = {"pause": True}
    while True:
        try:
            if todo.get("pause"):
                signal.pause()
                continue
            time.sleep(todo["stagger"])
            BpsRunPokeSensor(task_id="wait_bps", mode="poke", poke_interval=todo["interval"], timeout=86400).execute({})
            report(done=True)
            return
        except NextPhase:
            todo = json.loads(ctl.read_text())


class Pokers:
    """K poking task processes; each SIGUSR1 makes them report their pokes and read their control file."""

    def __init__(self, root: Path, dirs: list[Path]):
        self.dirs = dirs
        self.ctls = [root / f"poke-{i:03d}.ctl" for i in range(len(dirs))]
        self.stats = [root / f"poke-{i:03d}.json" for i in range(len(dirs))]
        self.logs = [open(root / f"poke-{i:03d}.log", "w") for i in range(len(dirs))]  # noqa: SIM115
        self.seq = 0
        self.procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--poke", str(d), str(c), str(s)], stdout=log, stderr=subprocess.STDOUT
            )
            for d, c, s, log in zip(dirs, self.ctls, self.stats, self.logs)
        ]

    def wait_ready(self, timeout: float) -> float:
        t0 = time.monotonic()
        while not all(s.exists() for s in self.stats):
            if any(p.poll() is not None for p in self.procs) or time.monotonic() - t0 > timeout:
                raise SystemExit(f"a poking process failed to start: see {self.logs[0].name}")
            time.sleep(0.5)
        return time.monotonic() - t0

    def read(self, timeout: float = 15, done: bool = False) -> list[dict]:
        """Their reports to the last signal (or, with done, that their sensor returned)."""
        t0 = time.monotonic()
        while True:
            try:
                found = [json.loads(s.read_text()) for s in self.stats]
            except (OSError, ValueError):
                found = []
            if found and all(f["seq"] >= self.seq and (f.get("done") or not done) for f in found):
                return found
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"poking processes did not report {'done' if done else self.seq}: {found}")
            time.sleep(0.05)

    def order(self, interval: float | None, spread: bool = False) -> list[dict]:
        """Poke every INTERVAL s from now (first pokes spread over one interval), or pause (None)."""
        k = len(self.procs)
        for i, (ctl, p) in enumerate(zip(self.ctls, self.procs)):
            todo = (
                {"pause": True}
                if interval is None
                else {"interval": interval, "stagger": interval * i / k if spread else 0}
            )
            ctl.write_text(json.dumps(todo))
            p.send_signal(signal.SIGUSR1)
        self.seq += 1
        return self.read()

    def cpu(self) -> float:
        return sum(proc_cpu(p.pid) for p in self.procs)

    def memory(self) -> list[dict[str, float]]:
        return [proc_memory(p.pid) for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()


# --- the deferred side: N triggers in one event loop -------------------------------------------


class CountedState:
    """Wraps drp_campaign.bps.local_state with a call counter (the real function still runs)."""

    def __init__(self):
        self.calls = 0
        self.real = bpsrec.local_state

    def __call__(self, directory):
        self.calls += 1
        return self.real(directory)

    def __enter__(self):
        bpsrec.local_state = self
        return self

    def __exit__(self, *exc):
        bpsrec.local_state = self.real


async def wait_for_event(trigger: BpsRunTrigger, events: list) -> None:
    async for event in trigger.run():
        events.append(event.payload)


def start_triggers(dirs: list[Path], interval: float, events: list) -> list[asyncio.Task]:
    """One BpsRunTrigger per run as the operator defers it; first polls spread over one interval."""
    return [
        asyncio.create_task(
            wait_for_event(
                BpsRunTrigger(
                    run_dir=str(d),
                    wms="parsl",
                    run_id=str(d / "attempt-1" / "submit"),
                    site="FRDF",
                    campaign_file=str(settings.CAMPAIGNS_DIR / "test-3x3.yaml"),
                    poll_interval_s=interval,
                    first_poll_delay_s=interval * i / len(dirs),
                ),
                events,
            )
        )
        for i, d in enumerate(dirs)
    ]


async def cancel(tasks: list[asyncio.Task]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def trigger_heap_mb(dirs: list[Path]) -> float:
    """Python heap held by N waiting triggers (objects, coroutine frames, tasks), by tracemalloc;
    measured outside the CPU windows (tracemalloc slows allocation)."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tasks = start_triggers(dirs, 3600.0, [])
    await asyncio.sleep(0.5)  # every task is now in its first asyncio.sleep
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    await cancel(tasks)
    return held / 2**20


async def measure_phase(
    args, interval: float, dirs: list[Path], pokers: Pokers, counter: CountedState, last: bool
) -> dict:
    base_mem = proc_memory()
    events: list[dict] = []
    tasks = start_triggers(dirs, interval, events)
    poke_cpu0 = pokers.cpu()
    poke0 = pokers.order(interval, spread=True)
    calls0, cpu0, t0 = counter.calls, time.process_time(), time.monotonic()
    await asyncio.sleep(args.seconds)
    cpu1, calls1, wall = time.process_time(), counter.calls, time.monotonic() - t0
    mem, poke_mem = proc_memory(), pokers.memory()
    # Pokes so far; then pause, or (last window) go on poking until the runs end.
    poke1 = pokers.order(interval if last else None)
    poke_cpu1 = pokers.cpu()
    assert not events, f"{len(events)} triggers fired while every run was RUNNING"
    result = {
        "interval": interval,
        "wall": wall,
        "deferred_cpu": cpu1 - cpu0,
        "deferred_calls": calls1 - calls0,
        "deferred_mem": mem,
        "deferred_rss_delta": mem["rss"] - base_mem["rss"],
        "poke_cpu": poke_cpu1 - poke_cpu0,
        "poke_mem": poke_mem,
        "poke_calls": sum(s1["pokes"] - s0["pokes"] for s0, s1 in zip(poke0, poke1)),
    }
    if last:
        # Prove both loops work: every run ends; every trigger must fire, every sensor return.
        t_end = time.monotonic()
        finish(dirs)
        finish(pokers.dirs)
        while len(events) < len(dirs) and time.monotonic() - t_end < interval + 30:
            await asyncio.sleep(0.1)
        result["fire_s"] = time.monotonic() - t_end
        states = {e["state"] for e in events}
        assert len(events) == len(dirs) and states == {"FINISHED"}, (
            f"{len(events)}/{len(dirs)} triggers fired: {states}"
        )
        # Each sensor's execute() returned (its process then exits; that is not timed).
        done = pokers.read(timeout=interval + 60, done=True)
        assert all(s.get("done") for s in done), done
        result["poke_return_s"] = time.monotonic() - t_end
    await cancel(tasks)
    return result


# --- PanDA: one real iDDS request, status calls timed -------------------------------------------


class PandaBench:
    def __init__(self, args, root: Path):
        self.args = args
        self.work = root / "idds-work"
        self.env = {
            **os.environ,
            "DRP_WORK_DIR": str(self.work),
            "DRP_IDDS_DB": args.idds_db,
            "DRP_IDDS_PORT": str(args.idds_port),
            "DRP_PANDA_RELAY_PORT": str(args.relay_port),
        }
        self.started = False

    def sh(self, *argv: str, timeout: float = 180, env=None) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=env or self.env, capture_output=True, text=True, timeout=timeout)

    def start(self) -> str:
        proc = self.sh("bash", str(IDDS_SCRIPT), "start", "--no-clerk")
        self.started = True
        if proc.returncode != 0:
            raise RuntimeError((proc.stdout + proc.stderr).strip()[-600:])
        return proc.stdout.strip()

    def submit(self) -> int:
        """One real iDDS request: an empty iDDS workflow submitted through the relay's own code path."""
        idds_py = str(
            Path(self.env.get("DRP_IDDS_PREFIX", settings.PROJECT_ROOT / ".venvs" / "idds")) / "bin" / "python"
        )
        exports = self.sh(idds_py, "-m", "localservices.panda.config", "env").stdout
        env = dict(self.env)
        for line in exports.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
        code = (
            "import idds.common.utils as u; from idds.workflowv2.workflow import Workflow; "
            "from localservices.panda.relay import relay_idds_command as r; "
            "wf = Workflow(); wf.name = 'drp-bps-poll-cost'; "
            "print(r({'command_name': 'submit', 'args': u.json_dumps([wf]), 'manager': True}, 'drp'))"
        )
        proc = self.sh(idds_py, "-c", code, env=env)
        ok, request_id = json.loads(proc.stdout.strip().splitlines()[-1])
        if proc.returncode != 0 or not ok:
            raise RuntimeError(f"iDDS submit failed: {proc.stdout[-300:]} {proc.stderr[-600:]}")
        return int(request_id)

    def panda_env(self) -> dict[str, str]:
        from types import SimpleNamespace

        from drp_campaign.panda_connection import panda_environment

        stored = json.loads((self.work / "idds" / "connection.json").read_text())
        conn = SimpleNamespace(
            conn_id="drp_panda_bench",
            host=stored["host"],
            port=None,
            password=stored["password"],
            extra_dejson=stored["extra"],
        )
        saved = os.environ.get("DRP_WORK_DIR")
        os.environ["DRP_WORK_DIR"] = str(self.work)  # PANDA_CONFIG_ROOT goes under the work dir
        try:
            return panda_environment(conn)
        finally:
            os.environ.pop("DRP_WORK_DIR") if saved is None else os.environ.__setitem__("DRP_WORK_DIR", saved)

    def server_cpu(self, pg) -> float:
        pids = [
            p
            for name in ("idds", "relay")
            for p in process_tree(int((self.work / "idds" / "pids" / f"{name}.pid").read_text()))
        ]
        with pg.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            pids += [r[0] for r in cur.fetchall()]
        return sum(proc_cpu(p) for p in pids)

    def measure(self) -> dict:
        import psycopg2

        started = self.start()
        request_id = self.submit()
        trigger = BpsRunTrigger(
            run_dir=str(self.work), wms="panda", run_id=str(request_id), site="FRDF", panda_conn_id="drp_panda_bench"
        )
        env = self.panda_env()
        pg = psycopg2.connect(
            host=os.environ.get("DRP_PG_HOST", "127.0.0.1"),
            user=os.environ.get("DRP_PG_USER", "postgres"),
            dbname=self.args.idds_db,
        )
        pg.autocommit = True
        try:
            first_t = time.perf_counter()
            first_state = asyncio.run(trigger.state(env))  # imports pandaclient: not a steady-state call
            first_t = time.perf_counter() - first_t

            async def calls(n: int) -> list[str]:
                return [await trigger.state(env) for _ in range(n)]

            n = self.args.panda_calls
            srv0, cpu0, t0 = self.server_cpu(pg), time.process_time(), time.perf_counter()
            states = asyncio.run(calls(n))
            wall, cpu, srv = time.perf_counter() - t0, time.process_time() - cpu0, self.server_cpu(pg) - srv0
        finally:
            pg.close()
        assert first_state == "RUNNING" and set(states) == {"RUNNING"}, (first_state, set(states))
        return {
            "started": started,
            "request_id": request_id,
            "first_call_s": first_t,
            "calls": n,
            "wall": wall / n,
            "cpu": cpu / n,
            "server_cpu": srv / n,
        }

    def stop(self) -> None:
        if not self.started:
            return
        self.sh("bash", str(IDDS_SCRIPT), "stop", timeout=60)
        host, user = os.environ.get("DRP_PG_HOST", "127.0.0.1"), os.environ.get("DRP_PG_USER", "postgres")
        self.sh(
            "psql",
            "-h",
            host,
            "-U",
            user,
            "-qc",
            f'DROP DATABASE IF EXISTS "{self.args.idds_db}" WITH (FORCE)',
            timeout=60,
        )


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# --- report -------------------------------------------------------------------------------------


def row(label: str, deferred: str, poking: str) -> None:
    print(f"  {label:<34} {deferred:<34} {poking}")


def print_phase(args, r: dict, k: int, heap: float) -> None:
    n, per_min = args.runs, 60.0 / r["wall"]
    scale = n / k
    d_cpu = r["deferred_cpu"] * per_min
    p_cpu_k = r["poke_cpu"] * per_min
    p_cpu = p_cpu_k * scale
    d_calls = r["deferred_calls"] * per_min
    p_calls_k = r["poke_calls"] * per_min
    p_calls = p_calls_k * scale
    pm = r["poke_mem"]
    sum_pss, sum_uss, sum_rss = (sum(m[key] for m in pm) for key in ("pss", "uss", "rss"))
    # N processes: each one's private pages, plus the shared ones (libraries, page cache) once.
    p_mem = sum_uss * scale + (sum_pss - sum_uss)
    dm = r["deferred_mem"]
    print(f"\npoll interval {r['interval']:g} s, {n} runs waiting, window {r['wall']:.1f} s")
    row("", "deferred: BpsRunTrigger x N", "poking: sensor task per run")
    row("", "(measured, all N)", f"(measured K={k}, extrapolated x{scale:g})")
    row("processes", "1 (the triggerer)", f"{n} task processes (+{n} supervisors, not measured)")
    row("worker slots held", "0", f"{n}")
    row(
        "memory, MB",
        f"+{heap:.1f} heap of the N triggers",
        f"{p_mem:,.0f} (K: {sum_pss:,.0f} PSS, {sum_uss:,.0f} private)",
    )
    row(
        "",
        f"(process {dm['pss']:.0f} PSS; RSS {r['deferred_rss_delta']:+.1f})",
        f"(each {sum_rss / k:.0f} RSS, {sum_pss / k:.0f} PSS, {sum_uss / k:.0f} private)",
    )
    row("CPU s per minute", f"{d_cpu:.3f}", f"{p_cpu:.3f} (K: {p_cpu_k:.3f})")
    row(
        "status calls per minute",
        f"{d_calls:.0f} (expected {n * 60 / r['interval']:.0f})",
        f"{p_calls:.0f} (K: {p_calls_k:.0f})",
    )
    row(
        "CPU ms per status call",
        f"{1000 * r['deferred_cpu'] / max(1, r['deferred_calls']):.3f}",
        f"{1000 * r['poke_cpu'] / max(1, r['poke_calls']):.3f}",
    )
    print(
        f"  ratios poking / deferred: memory {p_mem / dm['pss']:,.0f}x against the whole triggerer process "
        f"({p_mem / heap:,.0f}x against what the N triggers add to it), "
        f"CPU {p_cpu / d_cpu if d_cpu else float('inf'):.2f}x, "
        f"worker slots {n} vs 0, processes {n} vs 1"
    )
    if "fire_s" in r:
        print(
            f"  checked: after the runs ended, all {n} triggers fired (FINISHED) within {r['fire_s']:.1f} s "
            f"and all {k} sensors returned within {r['poke_return_s']:.1f} s"
        )


def print_panda(args, p: dict, intervals: list[float]) -> None:
    n = args.runs
    print("\nPanDA: BpsRunTrigger(wms='panda').state() = request_state through pandaclient -> relay -> iDDS")
    print(f"  {p['started']}")
    print(
        f"  iDDS request {p['request_id']}; first call {p['first_call_s']:.2f} s (imports pandaclient); "
        f"then {p['calls']} calls, measured per call: wall {1000 * p['wall']:.1f} ms, controller CPU "
        f"{1000 * p['cpu']:.1f} ms, relay + iDDS + PostgreSQL CPU {1000 * p['server_cpu']:.1f} ms"
    )
    for interval in intervals:
        calls = n * 60 / interval
        busy = calls * p["wall"]
        print(
            f"  PROJECTED for {n} PanDA runs at {interval:g} s: {calls:.0f} calls/min, triggerer CPU "
            f"{calls * p['cpu']:.1f} s/min, server CPU {calls * p['server_cpu']:.1f} s/min; calls are serialized "
            f"(panda_connection._CALL_LOCK): {busy:.0f} s of calls per minute"
            f"{' - MORE THAN A MINUTE: polls fall behind' if busy > 60 else ''}"
        )


# --- main ---------------------------------------------------------------------------------------


async def run_phases(args, intervals, dirs, pokers) -> tuple[list[dict], float]:
    heap = await trigger_heap_mb(dirs)
    results = []
    with CountedState() as counter:
        for i, interval in enumerate(intervals):
            print(
                f"measuring: {args.runs} deferred triggers and {len(pokers.procs)} poking sensors, "
                f"poll interval {interval:g} s, {args.seconds:g} s ...",
                flush=True,
            )
            results.append(await measure_phase(args, interval, dirs, pokers, counter, last=i == len(intervals) - 1))
    return results, heap


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--poke":
        return poke_main(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=500, help="concurrent deferred step runs (default 500)")
    parser.add_argument(
        "--poll-intervals", default="30,5", help="seconds between polls, comma-separated (default 30,5)"
    )
    parser.add_argument("--seconds", type=float, default=60, help="measured window per interval (default 60)")
    parser.add_argument("--pokers", type=int, default=20, help="poking task processes really started (default 20)")
    parser.add_argument(
        "--panda", choices=("auto", "yes", "no"), default="auto", help="measure request_state on a local iDDS"
    )
    parser.add_argument("--panda-calls", type=int, default=50)
    parser.add_argument("--idds-port", type=int, default=8096)
    parser.add_argument("--relay-port", type=int, default=8097)
    parser.add_argument("--idds-db", default="drp_idds_pollbench")
    args = parser.parse_args()
    intervals = [float(x) for x in args.poll_intervals.split(",")]
    root = Path(tempfile.mkdtemp(prefix="bps-poll-cost-"))
    # The triggers' log lines (one per run every 30 polls) go to a file, as the triggerer's do
    # (Airflow's structlog factory writes to its `io`, stdout when None).
    trigger_log = open(root / "triggers.log", "w")  # noqa: SIM115
    factory = structlog.get_config()["logger_factory"]
    if hasattr(factory, "io"):
        factory.io = trigger_log
    launcher = start_launcher(int(sum(intervals) * 2 + args.seconds * len(intervals) + 600))
    pokers = None
    try:
        pokers = Pokers(root, make_run_dirs(root, "poke", args.pokers, launcher.pid))
        dirs = make_run_dirs(root, "deferred", args.runs, launcher.pid)
        print(
            f"{args.runs} run dirs in {root}, all RUNNING as pid {launcher.pid} ({bpsrec.LAUNCHER_NAME}); "
            f"{args.pokers} poking task processes starting ...",
            flush=True,
        )
        t = pokers.wait_ready(300)
        print(
            f"  they imported airflow.sdk + drp_campaign.operators.steps in {t:.1f} s "
            f"(each: {pokers.cpu() / args.pokers:.2f} s CPU at start, not in the figures below)",
            flush=True,
        )
        results, heap = asyncio.run(run_phases(args, intervals, dirs, pokers))
        panda = None
        if args.panda != "no":
            bench = PandaBench(args, root)
            try:
                if not (port_free(args.idds_port) and port_free(args.relay_port)):
                    raise RuntimeError(f"port {args.idds_port} or {args.relay_port} is in use")
                print(
                    f"measuring: PanDA request_state on a local iDDS (ports {args.idds_port}/{args.relay_port}) ...",
                    flush=True,
                )
                panda = bench.measure()
            except Exception as exc:  # noqa: BLE001 - optional part: say why and go on
                if args.panda == "yes":
                    raise
                print(f"  PanDA part skipped: {type(exc).__name__}: {exc}")
            finally:
                bench.stop()
    finally:
        if pokers:
            pokers.stop()
        os.killpg(launcher.pid, signal.SIGTERM)
        launcher.wait()
    print(
        f"\n== poll cost of waiting on BPS runs: {args.runs} runs, "
        "wms=parsl (run.json + exit file + /proc/<pid>/cmdline) =="
    )
    print(
        "measured: the deferred side for all N; the poking side for K processes. "
        "EXTRAPOLATED: the poking side's N figures."
    )
    for r in results:
        print_phase(args, r, args.pokers, heap)
    if panda:
        print_panda(args, panda, intervals)
    print(
        "\nnot measured: the triggerer's DB bookkeeping per trigger; the LocalExecutor supervisor process next to "
        "each poking task\n(it would add a process and its heartbeats per run: the poking side's real cost is higher)."
    )
    trigger_log.close()
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
