"""docker-compose.yml (for real deployments), checked as `docker-compose config` renders it with a
.env of dummy secrets: Airflow's own compose shape (an init both waits for, healthchecks, one logs
volume), one worker per site queue of configs/sites.yaml, the science stack inside the image, and
no secret with a default. Nothing is built or started (no Docker engine is needed)."""

import os
import re
import shlex
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from drp_campaign.config import load_sites
from drp_campaign.settings import PROJECT_ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed; .ci/run installs it"
)

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "deploy" / "Dockerfile"
ENV_EXAMPLE = PROJECT_ROOT / "deploy" / "env.example"
STACK_PREFIX = "/opt/lsst-stack"  # where the stack-worker image has the science stack
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$")
DONE = "service_completed_successfully"


def interpolations() -> list[re.Match]:
    return list(INTERPOLATION.finditer(COMPOSE_FILE.read_text()))


def required_variables() -> set[str]:
    """What the file refuses to go without (${NAME:?...})."""
    return {m["name"] for m in interpolations() if m["op"] == ":?"}


def dummy(name: str) -> str:
    return f"dummy-{name.lower().replace('_', '-')}"


def write_env(path: Path, names) -> Path:
    path.write_text("".join(f"{name}={dummy(name)}\n" for name in sorted(names)))
    return path


def start_config(env_file: Path) -> subprocess.Popen:
    # The host's own values of the variables must not fill in for the .env under test.
    env = {k: v for k, v in os.environ.items() if k not in required_variables()}
    return subprocess.Popen(
        ["docker-compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    proc = start_config(write_env(tmp_path_factory.mktemp("compose") / ".env", required_variables()))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return yaml.safe_load(out)["services"]


def argv(command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command or [])


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume, short ("src:dst:mode") or long syntax."""
    pairs = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            pairs.append((str(volume.get("source", "")), volume["target"]))
        else:
            source, _, rest = volume.partition(":")
            pairs.append((source, rest.split(":")[0]))
    return pairs


def one_shots(services: dict) -> set[str]:
    """The services others wait for to complete: the init containers."""
    return {
        dep for s in services.values() for dep, cond in (s.get("depends_on") or {}).items() if cond["condition"] == DONE
    }


def airflow_services(services: dict) -> dict[str, dict]:
    """The services built from deploy/Dockerfile (Airflow with this project)."""
    return {name: s for name, s in services.items() if "build" in s}


def test_every_service_is_health_checked_or_a_one_shot_init(services):
    inits = one_shots(services)
    assert {"airflow-init", "rucio-init"} <= inits
    for name, service in services.items():
        if name in inits:
            assert service.get("restart") in (None, "no"), f"{name} runs once: it must not restart"
            assert not service.get("healthcheck"), f"{name} runs once: dependents wait for it to complete"
        else:
            check = service.get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
            assert service.get("restart") == "always", name


def test_every_airflow_service_waits_for_airflow_init_and_shares_one_logs_volume(services):
    airflow = airflow_services(services)
    for command in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert any(argv(s.get("command"))[:1] == [command] for s in airflow.values()), f"no Airflow {command}"
    for name, service in airflow.items():
        logs = [source for source, target in mounts(service) if target == "/opt/airflow/logs"]
        assert logs == ["airflow-logs"], f"{name}: task logs not on the shared named volume"
        if name != "airflow-init":  # the init runs as root, to give the volumes to AIRFLOW_UID
            assert service["user"].endswith(":0") and service["user"] != "0:0", f"{name} runs as root"
            assert service["depends_on"]["airflow-init"]["condition"] == DONE, name
    init = services["airflow-init"]
    script = PROJECT_ROOT / argv(init["command"])[0].replace("/opt/drp/", "", 1)
    assert script.is_file(), f"airflow-init runs {script}, which is not in the repository"
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_one_worker_per_site_queue_of_the_sites_file(services):
    """A Celery worker per site queue, an Edge worker for an Edge site (with neither metadata DB nor broker)."""
    sites = load_sites()
    queues = [site.airflow_queue for site in sites.sites.values()]
    edge_queues = {site.airflow_queue for site in sites.sites.values() if site.edge_worker}
    assert edge_queues, "the shipped sites file has an Edge site (UKDF_LANCS)"
    kinds = {("celery", "worker"): "-q", ("edge", "worker"): "--queues"}
    workers = {name: argv(s["command"]) for name, s in services.items() if tuple(argv(s.get("command"))[:2]) in kinds}
    consumed = []
    for name, args in workers.items():
        option = kinds[tuple(args[:2])]
        assert args.count(option) == 1, f"{name}: {args}"
        queue = args[args.index(option) + 1]
        assert "," not in queue, f"{name} consumes more than its site's queue: {queue}"
        assert (args[0] == "edge") == (queue in edge_queues), f"{name}: an Edge site's worker is an Edge worker"
        consumed.append(queue)
        assert services[name]["build"]["target"] == "stack-worker", f"{name} lacks the science stack"
        if args[0] == "edge":
            env = services[name]["environment"]
            assert ":1/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] and not env["AIRFLOW__CELERY__BROKER_URL"]
            assert "EdgeExecutor" in env["AIRFLOW__CORE__EXECUTOR"] and env["AIRFLOW__EDGE__API_URL"]
    assert Counter(consumed) == Counter(queues), "one worker per site queue, each consuming only its own"
    # Tasks without a queue go to the hub's worker (the global steps are on its queue anyway).
    hub_queue = sites.sites[sites.hub].airflow_queue
    for name, service in airflow_services(services).items():
        assert service["environment"]["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == hub_queue, name


def test_the_science_stack_is_in_the_image_never_mounted_from_the_host(services):
    assert f"ENV DRP_STACK_PREFIX={STACK_PREFIX}" in DOCKERFILE.read_text()
    for name, service in services.items():
        prefix = (service.get("environment") or {}).get("DRP_STACK_PREFIX")
        if prefix:
            assert prefix == STACK_PREFIX, name
        for source, target in mounts(service):
            assert not target.startswith(STACK_PREFIX), f"{name} mounts {source} as the stack"
            if source.startswith("/"):  # a bind mount: a file of the repository, never an environment
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"
                assert PROJECT_ROOT in Path(source).parents, f"{name} mounts {source} from outside the repository"
                assert ".venvs" not in Path(source).parts, f"{name} mounts a host environment: {source}"
    # Whatever runs stack commands (the workers, the triggerer) has the stack image.
    for name, service in airflow_services(services).items():
        command = argv(service.get("command"))
        if command[:2] == ["celery", "worker"] or command[:1] == ["triggerer"]:
            assert service["build"]["target"] == "stack-worker", name


def test_no_secret_has_a_default_and_each_reaches_the_services(services):
    secrets = set()
    for m in interpolations():
        if SECRET_NAME.search(m["name"]):
            secrets.add(m["name"])
            assert m["op"] == ":?", f"${{{m['name']}}} must be ${{{m['name']}:?...}}: no default, not even empty"
            assert m["name"] in m["arg"], f"the message for {m['name']} must name it"
    assert {"POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY", "RUCIO_DB_PASSWORD"} <= secrets
    rendered = yaml.safe_dump(services)
    for name in secrets:
        assert dummy(name) in rendered, f"{name} is required but no service gets it"
    # deploy/env.example lists every required variable, with no value filled in.
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    assert required_variables() <= example.keys()
    assert not any(example.values()), "deploy/env.example must not carry a value"


def test_every_required_variable_is_refused_by_name_when_unset():
    for m in interpolations():
        if m["op"] == ":?":
            assert m["name"] in m["arg"], f"the message of ${{{m['name']}:?...}} must name it"


# docker-compose honours that: a few real runs (each is a ~0.5 s start of docker-compose).
@pytest.mark.parametrize(
    "unset", [("AIRFLOW_JWT_SECRET", None), ("RUCIO_ACCOUNT_PASSWORD", None), ("POSTGRES_PASSWORD", "")]
)
def test_config_refuses_to_start_naming_a_secret_that_is_unset_or_empty(tmp_path, unset):
    name, value = unset
    assert name in required_variables()
    env_file = write_env(tmp_path / ".env", required_variables() - {name})
    if value is not None:
        env_file.write_text(env_file.read_text() + f"{name}={value}\n")
    proc = start_config(env_file)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, f"config went on without {name}"
    assert name in err, f"the refusal must name {name}: {err}"
