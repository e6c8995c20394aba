"""Where a campaign's time goes, and what the controller costs against a plain script (issue #11).

    make bench-campaign       # scripts/with-env.sh python benchmarks/campaign_cost.py [--parts 1,2,3]

1. One step group (USDF step1, one tract: 16 quanta) through the real `bps submit`, twice: with a
   Python started for every stack command (per-call: what a production site does) and through
   the site's warm stack server (the embedded default). Every process by kind: how many, their
   CPU and wall seconds, and the group's wall time from submit to its report.
2. The whole 3x3 in real Airflow (warm): wall time from trigger to end, the critical path (as
   `make benchmark`), and CPU by kind: the commands the warm servers ran (from their logs), the
   servers' own stack import, the Airflow services and Rucio (process-tree CPU before and after).
3. The same step groups and hops driven by a plain script with no Airflow (benchmarks/by_hand.py,
   sites in parallel, same stack commands, `bps submit` and Rucio calls): the controller's cost
   is the ratio of the two wall times.
Needs Rucio and Airflow running for parts 2 and 3 (make bench-campaign starts them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from drp_campaign import bps as bpsrec
from drp_campaign import graph, settings
from drp_campaign.config import load_campaign
from drp_campaign.stack import run_stack

HERE = Path(__file__).resolve().parent
STACK_PY = str(settings.stack_prefix() / "bin" / "python")
# What each kind of process is for: the controller's own calls, BPS's machinery, the quanta's jobs.
CLASSES = {
    "drp_campaign.stackside": "controller",
    "drp_campaign.stackside.warm run": "warm plumbing",
    "drp_campaign.stackside.warm serve": "warm plumbing",
    "bps": "BPS machinery",
    "pipetask qgraph": "BPS machinery",
    "pipetask pre-exec-init-qbb": "BPS machinery",
    "drp_campaign.stackside.butler_cli": "BPS machinery",
    "pipetask run-qbb": "quanta (the jobs)",
}


def kind(argv: list[str]) -> str:
    """`pipetask run-qbb`, `drp_campaign.stackside bps-submit`, `bps submit`, ... from a command line."""
    words = list(argv)
    if words and Path(words[0]).name.startswith("python"):
        words = words[1:]
    if words[:1] == ["-m"]:
        words = words[1:]
    if not words:
        return "python"
    name = Path(words[0]).name
    rest = [w for w in words[1:] if not w.startswith("-") and "/" not in w and not w.startswith("{")]
    return f"{name} {rest[0]}" if rest else name


def klass(what: str) -> str:
    for prefix, label in sorted(CLASSES.items(), key=lambda kv: -len(kv[0])):
        if what == prefix or what.startswith(prefix + " "):
            return label
    return "other"


def server_commands(log_dir: Path, since: float = 0.0) -> list[dict]:
    """The `command ...` lines the warm servers wrote (stackside/warm.py): one per forked command."""
    rows = []
    for log in log_dir.glob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            found = re.match(r"(\S+) command pid=(\d+) exit=(-?\d+) cpu_s=([\d.]+) wall_s=([\d.]+) what=(.*)", line)
            if found and time.mktime(time.strptime(found.group(1), "%Y-%m-%dT%H:%M:%S")) >= since - 1:
                rows.append(
                    {
                        "what": found.group(6),
                        "cpu_s": float(found.group(4)),
                        "wall_s": float(found.group(5)),
                        "site": log.stem,
                        "started": False,
                    }
                )
    return rows


def accounted(path: Path) -> list[dict]:
    """The Pythons that started (benchmarks/accounting/sitecustomize.py), by kind."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{"what": kind(r["argv"]), "cpu_s": r["cpu_s"], "wall_s": r["wall_s"], "started": True} for r in rows]


def stack_starts(rows: list[dict]) -> int:
    """Pythons that imported the stack: every started one but the warm clients (stdlib only)."""
    return sum(1 for r in rows if r["started"] and r["what"] != "drp_campaign.stackside.warm run")


def table(rows: list[dict], title: str) -> dict[str, float]:
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_kind[r["what"]].append(r)
    print(f"\n  {title}")
    print(f"    {'kind':<46} {'class':<18} {'n':>4} {'Python starts':>13} {'CPU s':>8} {'wall s':>8}")
    per_class: dict[str, float] = defaultdict(float)
    for what, group in sorted(by_kind.items(), key=lambda kv: -sum(r["cpu_s"] for r in kv[1])):
        cpu = sum(r["cpu_s"] for r in group)
        per_class[klass(what)] += cpu
        starts = sum(1 for r in group if r["started"])
        wall = sum(r["wall_s"] for r in group)
        print(f"    {what[:46]:<46} {klass(what):<18} {len(group):>4} {starts:>13} {cpu:>8.1f} {wall:>8.1f}")
    print(
        f"    {'total':<46} {'':<18} {len(rows):>4} {sum(1 for r in rows if r['started']):>13} "
        f"{sum(r['cpu_s'] for r in rows):>8.1f}"
    )
    print(
        "    CPU by class: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(per_class.items(), key=lambda kv: -kv[1]))
    )
    return per_class


# --- part 1: one step group, per-call against warm ---------------------------------------------


def stop_servers(directory: Path) -> None:
    pids = [int(p.read_text()) for p in directory.glob("*.pid")] if directory.exists() else []
    subprocess.run(
        [STACK_PY, "-m", "drp_campaign.stackside.warm", "stop", "--dir", str(directory)],
        capture_output=True,
        check=False,
    )
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


def one_step_group(campaign_file: str) -> None:
    work = settings.work_dir() / "bench-campaign"
    campaign = load_campaign(campaign_file)
    site = campaign.sites_config.sites["USDF"]
    saved = dict(os.environ)
    os.environ.update(DRP_WORK_DIR=str(work), PYTHONPATH=str(HERE / "accounting"))
    repo = str(work / "repos" / "USDF")
    chain = "bench/input"
    try:
        if not (work / "repos" / "USDF").exists():
            os.environ["DRP_STACK_SERVER"] = "warm"
            run_stack(
                site,
                "seed-repo",
                ["--campaign", campaign_file, "--site", "USDF", "--repo", repo, "--all-tracts"],
                log=lambda _: None,
            )
            run_stack(
                site,
                "check-inputs",
                ["--campaign", campaign_file, "--site", "USDF", "--repo", repo, "--chain", chain],
                log=lambda _: None,
            )
        print(
            "1. one step group: USDF step1, tract 0 (16 quanta), submitted with the real `bps submit` (ctrl_bps_parsl)"
        )
        results = {}
        # per-call; warm with the server started by this group (its import counted); warm with
        # the server already running (the steady state of a campaign).
        for label, mode, fresh in (
            ("per-call", "per-call", True),
            ("warm, cold server", "warm", True),
            ("warm", "warm", False),
        ):
            servers = work / "stack-servers"
            if fresh:
                stop_servers(servers)
            for log in servers.glob("*.log"):
                log.write_text("")
            os.environ["DRP_STACK_SERVER"] = mode
            if not fresh:  # the site's server up before the clock starts: a campaign's steady state
                run_stack(site, "count-datasets", ["--repo", repo, "--collections", chain], log=lambda _: None)
                for log in servers.glob("*.log"):
                    log.write_text("")
            accounting = work / f"accounting-{label.replace(' ', '-').replace(',', '')}.jsonl"
            accounting.unlink(missing_ok=True)
            os.environ["DRP_ACCOUNTING_FILE"] = str(accounting)
            key = f"bench-{mode}-{int(time.time())}"
            run_dir = work / "bps" / key
            t0 = time.monotonic()
            run_stack(
                site,
                "bps-submit",
                [
                    "--campaign",
                    campaign_file,
                    "--site",
                    "USDF",
                    "--repo",
                    repo,
                    "--step",
                    "step1",
                    "--group",
                    "g000",
                    "--tracts",
                    "0",
                    "--key",
                    key,
                    "--chain",
                    chain,
                    "--run-dir",
                    str(run_dir),
                ],
                log=lambda _: None,
            )
            while bpsrec.local_state(run_dir) == "RUNNING":
                time.sleep(0.2)
            report = run_stack(
                site, "bps-report", ["--campaign", campaign_file, "--run-dir", str(run_dir)], log=lambda _: None
            )
            wall = time.monotonic() - t0
            assert report["status"] == "succeeded", report
            if label == "warm, cold server":
                stop_servers(servers)  # the server's own accounting line is written as it exits
            os.environ.pop("DRP_ACCOUNTING_FILE")
            rows = [
                r
                for r in accounted(accounting) + server_commands(servers)
                if r["what"] != "drp_campaign.stackside.warm stop"
            ]
            table(rows, f"{label}: wall {wall:.1f} s from submit to report, {report['quanta']['succeeded']} quanta")
            results[label] = (wall, sum(r["cpu_s"] for r in rows), stack_starts(rows))
        (pw, pc, ps) = results["per-call"]
        for label in ("warm, cold server", "warm"):
            ww, wc, ws = results[label]
            print(
                f"\n  per-call / {label}: wall {pw:.1f} / {ww:.1f} s = {pw / ww:.1f}x; CPU {pc:.1f} / {wc:.1f} s = "
                f"{pc / wc:.1f}x; Pythons importing the stack {ps} / {ws}"
            )
        stop_servers(work / "stack-servers")
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --- part 2: the 3x3 in Airflow; part 3: the same by hand ---------------------------------------


def own_cpu(pid: int) -> float:
    """CPU seconds of one process alone (a warm server: its import and its loop, not its commands)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its descendants, living or reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = defaultdict(list)
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = fields
            children[int(fields[1])].append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            f = stats[p]
            total += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / tick
        todo += children.get(p, [])
    return total


def service_pids() -> dict[str, int]:
    pids = {}
    for name, directory in (
        ("Airflow", Path(os.environ["AIRFLOW_HOME"]) / "pids"),
        ("Rucio", settings.work_dir() / "rucio" / "pids"),
    ):
        for f in directory.glob("*.pid"):
            pids[f"{name} {f.stem}"] = int(f.read_text())
    return pids


def whole_campaign(campaign_file: str) -> float:
    from controller_overhead import run_campaign

    from drp_campaign.airflow_client import AirflowClient

    campaign = load_campaign(campaign_file)
    subprocess.run(["drp-campaign", "seed", campaign_file], check=True, stdout=subprocess.DEVNULL)
    servers = settings.work_dir() / "stack-servers"
    stop_servers(servers)  # fresh servers: their stack import is counted in this run
    pids = service_pids()
    before = {name: tree_cpu(pid) for name, pid in pids.items()}
    since = time.time()
    client = AirflowClient()
    t0 = time.perf_counter()
    run_id = run_campaign(client, campaign)
    measured = time.perf_counter() - t0
    run = client.dag_run(campaign.dag_id(), run_id)
    wall = (dt.datetime.fromisoformat(run["end_date"]) - dt.datetime.fromisoformat(run["start_date"])).total_seconds()
    server_cpu = {f.stem: own_cpu(int(f.read_text())) for f in servers.glob("*.pid")}
    print(
        f"\n2. the 3x3 in Airflow ({run_id}): {wall:.1f} s from the run's start to its end "
        f"({measured:.1f} s from the client's trigger)"
    )
    rows = server_commands(servers, since)
    rows += [
        {"what": "drp_campaign.stackside.warm serve", "cpu_s": cpu, "wall_s": 0.0, "started": True}
        for cpu in server_cpu.values()
    ]
    per_class = table(rows, "commands the warm servers ran (and the servers' own import)")
    services = {name: tree_cpu(pid) - before[name] for name, pid in pids.items()}
    print(
        "    services' CPU during the run: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(services.items(), key=lambda kv: -kv[1]))
    )
    stack_starts = len(server_cpu)
    print(
        f"    Pythons that imported the stack: {stack_starts} (one warm server per site); "
        f"commands forked from them: {len(rows) - stack_starts}"
    )
    airflow_cpu = sum(v for k, v in services.items() if k.startswith("Airflow"))
    rucio_cpu = sum(v for k, v in services.items() if k.startswith("Rucio"))
    print(
        f"    CPU: controller (Airflow {airflow_cpu:.1f} s + stack calls "
        f"{per_class.get('controller', 0):.1f} s), BPS machinery {per_class.get('BPS machinery', 0):.1f} s, "
        f"quanta's jobs {per_class.get('quanta (the jobs)', 0):.1f} s, Rucio {rucio_cpu:.1f} s"
    )
    return wall


def by_hand(campaign_file: str) -> float:
    from by_hand import ByHand

    campaign = load_campaign(campaign_file)
    key = graph.run_key(f"by_hand__{dt.datetime.now(dt.UTC).isoformat()}")
    runner = ByHand(campaign, key)
    wall = runner.run()
    print(f"\n3. the same steps and hops by a plain script (benchmarks/by_hand.py, no Airflow): {wall:.1f} s")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("campaign", nargs="?", default=str(settings.CAMPAIGNS_DIR / "test-3x3.yaml"))
    parser.add_argument(
        "--parts", default="1,2,3", help="which parts to run (1: one group, 2: the 3x3 in Airflow, 3: by hand)"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    sys.path.insert(0, str(HERE))
    if "1" in parts:
        one_step_group(args.campaign)
    ours = whole_campaign(args.campaign) if "2" in parts else None
    script = by_hand(args.campaign) if "3" in parts else None
    if ours and script:
        print(
            f"\ncontroller cost = 3x3 in Airflow / the same by hand = {ours:.1f} / {script:.1f} s = {ours / script:.2f}"
        )


if __name__ == "__main__":
    main()
