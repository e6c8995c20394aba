"""`drp-campaign worker`: start one data facility's Airflow worker, on its site's queue only.

Each site's tasks carry that site's `airflow_queue` (sites.yaml); a worker consuming a queue no
site uses would sit idle while the campaign waits, and one consuming two sites' queues would run a
site's work next to the wrong Butler and storage: both are refused here, before a worker starts.

A site's worker is a Celery worker (CeleryExecutor, the broker reachable from the site), or, for a
site marked `edge_worker` when the deployment also runs the Edge executor, an Airflow Edge worker,
which only calls out over HTTP(S) to the api-server (`task_placement` sends that site's tasks to
the Edge executor).

The worker names itself after its site (`<queue>@<host>` in Celery, `<host>-<queue>` as the task
instances' hostname, through Airflow's `[core] hostname_callable` or the Edge worker's hostname),
so that a task instance says which site's worker ran it even when workers share a machine, as here.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from drp_campaign.command import Command
from drp_campaign.config import ConfigError, load_sites
from drp_campaign.config.models import SiteConfig, SitesConfig
from drp_campaign.errors import DrpError

# Set by `worker` for the worker and every task process it starts; read by `worker_hostname`.
WORKER_QUEUE_ENV = "DRP_WORKER_QUEUE"
HOSTNAME_CALLABLE = "drp_campaign.workers.worker_hostname"
DEFAULT_CONCURRENCY = 4
EXECUTOR_ENV = "AIRFLOW__CORE__EXECUTOR"
EDGE_EXECUTOR = "EdgeExecutor"  # the alias of airflow.providers.edge3.executors.EdgeExecutor


def edge_deployed() -> bool:
    """This deployment runs the Edge executor too ([core] executor lists it, as scripts/env.sh and
    docker-compose.yml set Airflow's options)."""
    return EDGE_EXECUTOR in os.environ.get(EXECUTOR_ENV, "")


def task_placement(site: SiteConfig) -> dict:
    """The operator arguments that send a site's task to its workers: its queue, and for an Edge
    site the Edge executor when deployed (without it, e.g. the LocalExecutor demo, the task runs on
    the default executor like the others)."""
    if site.edge_worker and edge_deployed():
        return {"queue": site.airflow_queue, "executor": EDGE_EXECUTOR}
    return {"queue": site.airflow_queue}


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


def worker_hostname(queue: str | None = None) -> str:
    """The hostname Airflow records on a task instance: the machine, and the site queue it serves."""
    host = socket.getfqdn()
    queue = queue or os.environ.get(WORKER_QUEUE_ENV)
    # "-", not ":": edge3 5.1.0 signs the URL-quoted worker name and checks the unquoted one, so
    # a name that changes when quoted is refused (403, "Invalid method in token authorization").
    return f"{host}-{queue}" if queue else host


def worker_argv(queue: str, concurrency: int, edge: bool = False) -> list[str]:
    if edge:  # it uploads its tasks' logs to the api-server itself
        return ["airflow", "edge", "worker", "--queues", queue, "--concurrency", str(concurrency),
                "--edge-hostname", worker_hostname(queue)]  # fmt: skip
    # --skip-serve-logs: the workers here share a machine (one log-server port) and its log
    # directory, which the api-server reads itself; a worker at its own site serves its logs.
    return ["airflow", "celery", "worker", "--queues", queue, "--concurrency", str(concurrency),
            "--celery-hostname", f"{queue}@%h", "--without-mingle", "--without-gossip",
            "--skip-serve-logs"]  # fmt: skip


# An Edge worker reaches the controller only through the api-server: neither Airflow's metadata DB
# nor the broker is given to it (a closed port stands in for the DB: Airflow's CLI logs one warning).
NO_METADATA_DB = "postgresql+psycopg2://edge-worker-has-no-db@127.0.0.1:1/none"


def withhold_central_services(env: dict) -> None:
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = NO_METADATA_DB
    for name in [n for n in env if n.startswith("AIRFLOW__CELERY")]:
        del env[name]


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
    sites = load_sites(sites_file)
    site = check_queue(args.queue, sites, sites_file)
    edge = sites.sites[site].edge_worker and edge_deployed()
    executor = os.environ.get(EXECUTOR_ENV, "")
    if not edge and "CeleryExecutor" not in executor:
        raise DrpError(
            f"{EXECUTOR_ENV} is {executor or 'not set'!r}: {site}'s worker needs CeleryExecutor "
            "(make demo EXECUTOR=celery, or DRP_EXECUTOR=celery before scripts/airflow-services.sh)"
        )
    argv = worker_argv(args.queue, args.concurrency, edge)
    kind = "Edge" if edge else "Celery"
    print(f"{site}: {kind} worker on queue {args.queue!r}, {args.concurrency} slots: {' '.join(argv)}", flush=True)
    if args.check:
        return 0
    os.environ[WORKER_QUEUE_ENV] = args.queue
    os.environ["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = HOSTNAME_CALLABLE
    if edge:
        withhold_central_services(os.environ)
    os.execvp(argv[0], argv)
    return 1  # not reached: exec replaces this process


COMMANDS = [Command("worker", "start this site's Airflow worker (Celery or Edge) on its queue only", _arguments, run)]
