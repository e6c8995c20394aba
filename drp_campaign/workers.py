"""`drp-campaign worker`: start one data facility's Airflow Celery worker, on its site's queue only.

Each site's tasks carry that site's `airflow_queue` (sites.yaml); a worker consuming a queue no
site uses would sit idle while the campaign waits, and one consuming two sites' queues would run a
site's work next to the wrong Butler and storage: both are refused here, before Celery starts.

The worker names itself after its site (`<queue>@<host>` in Celery, `<host>:<queue>` as the task
instances' hostname, through Airflow's `[core] hostname_callable`), so that a task instance says
which site's worker ran it even when two workers share a machine, as they do here.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from drp_campaign.command import Command
from drp_campaign.config import ConfigError, load_sites
from drp_campaign.config.models import SitesConfig
from drp_campaign.errors import DrpError

# Set by `worker` for the worker and every task process it starts; read by `worker_hostname`.
WORKER_QUEUE_ENV = "DRP_WORKER_QUEUE"
HOSTNAME_CALLABLE = "drp_campaign.workers.worker_hostname"
DEFAULT_CONCURRENCY = 4


def site_queues(sites: SitesConfig) -> dict[str, str]:
    """Each Airflow queue a site's tasks go to, and its site."""
    return {site.airflow_queue: name for name, site in sites.sites.items()}


def check_queue(queue: str, sites: SitesConfig, sites_file: Path) -> str:
    """The site whose queue this is; a ConfigError naming the known queues otherwise."""
    queues = site_queues(sites)
    if queue not in queues:
        known = ", ".join(f"{q} ({site})" for q, site in sorted(queues.items()))
        raise ConfigError(
            sites_file,
            "sites.*.airflow_queue",
            f"no site uses the Airflow queue {queue!r}; a worker there would never get a task. "
            f"Start one per site queue: {known}",
        )
    return queues[queue]


def worker_hostname() -> str:
    """The hostname Airflow records on a task instance: the machine, and the site queue it serves."""
    host = socket.getfqdn()
    queue = os.environ.get(WORKER_QUEUE_ENV)
    return f"{host}:{queue}" if queue else host


def worker_argv(queue: str, concurrency: int) -> list[str]:
    # --skip-serve-logs: the workers here share a machine (one log-server port) and its log
    # directory, which the api-server reads itself; a worker at its own site serves its logs.
    return ["airflow", "celery", "worker", "--queues", queue, "--concurrency", str(concurrency),
            "--celery-hostname", f"{queue}@%h", "--without-mingle", "--without-gossip",
            "--skip-serve-logs"]  # fmt: skip


def _slots(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a worker needs at least 1 task slot, got {text!r}")
    return int(text)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", required=True, help="the site's airflow_queue in the sites file (e.g. usdf)")
    parser.add_argument("--sites", type=Path, default=None, metavar="FILE", help="default: configs/sites.yaml")
    parser.add_argument(
        "--concurrency",
        type=_slots,
        default=os.environ.get("DRP_WORKER_CONCURRENCY", str(DEFAULT_CONCURRENCY)),
        help=f"task slots on this worker (default $DRP_WORKER_CONCURRENCY or {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument("--check", action="store_true", help="only check the queue and the executor, start nothing")


def run(args: argparse.Namespace) -> int:
    from drp_campaign.settings import DEFAULT_SITES_FILE

    sites_file = args.sites or DEFAULT_SITES_FILE
    site = check_queue(args.queue, load_sites(sites_file), sites_file)
    executor = os.environ.get("AIRFLOW__CORE__EXECUTOR", "")
    if "CeleryExecutor" not in executor:
        raise DrpError(
            f"AIRFLOW__CORE__EXECUTOR is {executor or 'not set'!r}: a Celery worker needs CeleryExecutor "
            "(make demo EXECUTOR=celery, or DRP_EXECUTOR=celery before scripts/airflow-services.sh)"
        )
    argv = worker_argv(args.queue, args.concurrency)
    print(f"{site}: Celery worker on queue {args.queue!r}, {args.concurrency} slots: {' '.join(argv)}", flush=True)
    if args.check:
        return 0
    os.environ[WORKER_QUEUE_ENV] = args.queue
    os.environ["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = HOSTNAME_CALLABLE
    os.execvp(argv[0], argv)
    return 1  # not reached: exec replaces this process


COMMANDS = [Command("worker", "start this site's Airflow Celery worker on its queue only", _arguments, run)]
