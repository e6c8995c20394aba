"""`drp-campaign worker`: a site's Celery worker is started on its own queue only, and says so.

The workers themselves run in the end-to-end module (CeleryExecutor, one per site queue): there
the task instances' hostnames prove which worker ran what. Here: what is refused before Celery
starts, and what a worker is started with."""

import pytest

from drp_campaign import cli, workers
from drp_campaign.config import ConfigError, load_sites
from drp_campaign.settings import DEFAULT_SITES_FILE

SITES = load_sites()


def test_each_site_has_its_own_queue_and_the_worker_is_started_on_it_only():
    assert workers.site_queues(SITES) == {
        "usdf": "USDF",
        "frdf": "FRDF",
        "ukdf_ral": "UKDF_RAL",
        "ukdf_lancs": "UKDF_LANCS",
    }
    assert workers.check_queue("frdf", SITES, DEFAULT_SITES_FILE) == "FRDF"
    argv = workers.worker_argv("frdf", 3)
    assert argv[:3] == ["airflow", "celery", "worker"]
    assert argv[argv.index("--queues") + 1] == "frdf" and argv[argv.index("--concurrency") + 1] == "3"
    assert argv[argv.index("--celery-hostname") + 1] == "frdf@%h"


def test_a_queue_no_site_uses_is_refused_naming_the_queues_there_are():
    with pytest.raises(ConfigError) as caught:
        workers.check_queue("chdf", SITES, DEFAULT_SITES_FILE)
    message = str(caught.value)
    assert "no site uses the Airflow queue 'chdf'" in message and "frdf (FRDF)" in message
    assert str(DEFAULT_SITES_FILE) in message


@pytest.mark.parametrize(
    "argv, executor, status, phrase",
    [
        (["--queue", "chdf"], "CeleryExecutor", 2, "sites.*.airflow_queue: no site uses the Airflow queue 'chdf'"),
        (["--queue", "usdf"], "LocalExecutor", 1, "'LocalExecutor': USDF's worker needs CeleryExecutor"),
        (["--queue", "usdf", "--concurrency", "0"], "CeleryExecutor", 2, "at least 1 task slot, got '0'"),
    ],
)
def test_the_command_refuses_bad_input_before_starting_anything(monkeypatch, capsys, argv, executor, status, phrase):
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    monkeypatch.setattr(workers.os, "execvp", lambda *a: pytest.fail(f"started a worker: {a}"))
    try:
        code = cli.main(["worker", *argv])
    except SystemExit as exc:  # argparse refuses a bad option value itself
        code = exc.code
    assert code == status
    assert phrase in capsys.readouterr().err


@pytest.fixture
def started(monkeypatch) -> list[list[str]]:
    """The argv each worker the command would exec; the environment it sets is undone after."""
    monkeypatch.delenv(workers.WORKER_QUEUE_ENV, raising=False)
    monkeypatch.delenv("AIRFLOW__CORE__HOSTNAME_CALLABLE", raising=False)
    argvs: list[list[str]] = []
    monkeypatch.setattr(workers.os, "execvp", lambda file, argv: argvs.append(argv))
    return argvs


def test_the_command_starts_celery_on_the_queue_and_names_the_hostname_after_it(monkeypatch, capsys, started):
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    cli.main(["worker", "--queue", "ukdf_ral", "--concurrency", "2"])
    assert started == [workers.worker_argv("ukdf_ral", 2)]
    assert "UKDF_RAL: Celery worker on queue 'ukdf_ral', 2 slots" in capsys.readouterr().out
    # What Airflow then records on each task instance the worker runs ([core] hostname_callable).
    assert workers.os.environ["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == workers.HOSTNAME_CALLABLE
    assert workers.worker_hostname().endswith("-ukdf_ral")
    monkeypatch.delenv(workers.WORKER_QUEUE_ENV)
    assert workers.worker_hostname() == workers.socket.getfqdn()


def test_check_only_starts_nothing(monkeypatch, capsys):
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setattr(workers.os, "execvp", lambda *a: pytest.fail("started a worker"))
    assert cli.main(["worker", "--queue", "usdf", "--check"]) == 0
    assert "--queues usdf" in capsys.readouterr().out


EDGE_DEPLOYED = "CeleryExecutor,airflow.providers.edge3.executors.EdgeExecutor"


def test_an_edge_site_gets_an_edge_worker_with_neither_metadata_db_nor_broker(monkeypatch, capsys, started):
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", EDGE_DEPLOYED)
    monkeypatch.setenv("AIRFLOW__CELERY__BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://postgres@127.0.0.1:5432/x")
    cli.main(["worker", "--queue", "ukdf_lancs", "--concurrency", "2"])
    [argv] = started
    assert argv[:3] == ["airflow", "edge", "worker"] and argv[argv.index("--queues") + 1] == "ukdf_lancs"
    assert argv[argv.index("--edge-hostname") + 1].endswith("-ukdf_lancs")
    assert "UKDF_LANCS: Edge worker on queue 'ukdf_lancs'" in capsys.readouterr().out
    assert workers.os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == workers.NO_METADATA_DB
    assert "AIRFLOW__CELERY__BROKER_URL" not in workers.os.environ


def test_an_edge_site_runs_on_the_default_executor_where_edge_is_not_deployed(monkeypatch):
    lancs, usdf = SITES.sites["UKDF_LANCS"], SITES.sites["USDF"]
    assert lancs.edge_worker and not usdf.edge_worker
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", EDGE_DEPLOYED)
    assert workers.task_placement(lancs) == {"queue": "ukdf_lancs", "executor": "EdgeExecutor"}
    assert workers.task_placement(usdf) == {"queue": "usdf"}
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert workers.task_placement(lancs) == {"queue": "ukdf_lancs"}
