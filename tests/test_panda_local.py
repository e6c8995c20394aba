"""The real PanDA path on loopback: the real `bps` CLI with ctrl_bps_panda, pandaclient, the
local PanDA relay and the real iDDS server (scripts/idds-server.sh, localservices/panda).

Own ports (8094 iDDS, 8095 relay), database (drp_idds_test) and work dir. No PanDA pilots run
here, so a submitted request never runs quanta: what is checked is that every call really reaches
iDDS with the Connection's token, and that cancel and restart really change iDDS's state (the
plugin reports both as done even when iDDS refuses: docs/panda-local.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import yaml
from conftest import drop_database

from drp_campaign import graph, settings
from drp_campaign.bps import submit_config
from drp_campaign.config import load_campaign
from drp_campaign.panda_connection import (
    PandaConfigError,
    PandaError,
    _call,
    connection_id,
    panda_environment,
    request_state,
    request_status,
)
from localservices.panda.config import RELAY_KEY_HEADER

pytestmark = pytest.mark.integration

SCRIPT = settings.PROJECT_ROOT / "scripts" / "idds-server.sh"
CAMPAIGN = settings.CAMPAIGNS_DIR / "test-3x3.yaml"
STACK = settings.stack_prefix()
IDDS_PREFIX = Path(os.environ.get("DRP_IDDS_PREFIX") or settings.PROJECT_ROOT / ".venvs" / "idds")
TEST_DB, IDDS_PORT, RELAY_PORT = "drp_idds_test", "8094", "8095"
SITE, STEP, GROUP = "FRDF", "step1", graph.WorkGroup("g000", (2,))
KEY = "panda__2026-11-26T00-00-00"

for _env in (STACK, IDDS_PREFIX):
    if not (_env / "bin" / "python").exists():  # pragma: no cover - built by scripts/setup-envs.sh
        pytest.skip(f"environment missing at {_env}: run bash scripts/setup-envs.sh", allow_module_level=True)

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def idds(tmp_path_factory):
    """iDDS + relay brought up from nothing (no database, no work dir); stopped afterwards."""
    work = tmp_path_factory.mktemp("idds-work")
    env = {
        **os.environ,
        "DRP_WORK_DIR": str(work),
        "DRP_IDDS_DB": TEST_DB,
        "DRP_IDDS_PORT": IDDS_PORT,
        "DRP_PANDA_RELAY_PORT": RELAY_PORT,
        "DRP_IDDS_PREFIX": str(IDDS_PREFIX),
    }
    drop_database(TEST_DB)
    t0 = time.monotonic()
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=120)
    TIMINGS["bring-up"] = time.monotonic() - t0
    assert started.returncode == 0, started.stdout + started.stderr
    print(f"\niDDS + relay bring-up from nothing: {TIMINGS['bring-up']:.1f} s ({started.stdout.strip()})")
    try:
        yield {"env": env, "work": work, "home": work / "idds"}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        print("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in TIMINGS.items()))


def connection(idds, **override) -> SimpleNamespace:
    """An Airflow-Connection-like object from the connection.json the bootstrap wrote."""
    stored = json.loads((idds["home"] / "connection.json").read_text())
    fields = {
        "conn_id": connection_id(SITE),
        "host": stored["host"],
        "port": None,
        "schema": None,
        "login": None,
        "password": stored["password"],
        "extra_dejson": stored["extra"],
    }
    return SimpleNamespace(**{**fields, **override})


def panda_env(idds, **override) -> dict[str, str]:
    """What a worker would run `bps` with: its environment plus the Connection's."""
    old = os.environ.get("DRP_WORK_DIR")
    os.environ["DRP_WORK_DIR"] = str(idds["work"])  # PANDA_CONFIG_ROOT goes under the work dir
    try:
        panda = panda_environment(connection(idds, **override))
    finally:
        os.environ.pop("DRP_WORK_DIR") if old is None else os.environ.__setitem__("DRP_WORK_DIR", old)
    # The stack on PATH, as a site's setup command leaves it (bps runs `pipetask` by name).
    return {**idds["env"], **panda, "PATH": f"{STACK / 'bin'}:{os.environ['PATH']}"}


def bps(env: dict, *args: str, name: str | None = None) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    proc = subprocess.run([str(STACK / "bin" / "bps"), *args], env=env, capture_output=True, text=True, timeout=300)
    if name:
        TIMINGS[name] = time.monotonic() - t0
    return proc


def stack_python(env: dict, *args: str) -> None:
    proc = subprocess.run([str(STACK / "bin" / "python"), *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args[:3]}: {proc.stderr[-2000:]}"


def stackside(env: dict, *args: str) -> None:
    stack_python(env, "-m", "drp_campaign.stackside", *args)


def idds_get(idds, path: str, key: str | None = "relay's") -> requests.Response:
    """GET from iDDS's REST API directly, as the relay's DN, with the relay's key (or KEY)."""
    from localservices.panda import RELAY_DN

    headers = {"SSL-CLIENT-S-DN": RELAY_DN, "SSL-CLIENT-CERT": "test"}
    if key is not None:
        relay = json.loads((idds["home"] / "relay.json").read_text())
        headers[RELAY_KEY_HEADER] = relay["idds_key"] if key == "relay's" else key
    return requests.get(f"http://127.0.0.1:{IDDS_PORT}/idds{path}", headers=headers, timeout=30)


def idds_request(idds, request_id: int) -> dict:
    """The request as iDDS's REST API has it (asked directly, as the relay)."""
    answer = idds_get(idds, f"/request/{request_id}/null/false")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert len(found) == 1, found
    return found[0]


def status_name(request: dict) -> str:
    status = request["status"]
    return status["attributes"]["_name_"] if isinstance(status, dict) else str(status).rsplit(".", 1)[-1]


@pytest.fixture(scope="module")
def submitted(idds):
    """`bps submit` of one step group with wmsServiceClass PanDAService: the iDDS request id."""
    work = idds["work"]
    env = panda_env(idds)
    repo = work / "repos" / SITE
    campaign = load_campaign(CAMPAIGN)
    campaign = campaign.model_copy(update={"bps": campaign.bps.model_copy(update={"wms": "panda"})})
    chain = graph.site_chain(campaign, KEY)
    t0 = time.monotonic()
    stackside(env, "seed-repo", "--campaign", str(CAMPAIGN), "--site", SITE, "--repo", str(repo))
    stackside(env, "check-inputs", "--campaign", str(CAMPAIGN), "--site", SITE, "--repo", str(repo), "--chain", chain)
    TIMINGS["seed repo"] = time.monotonic() - t0
    pipeline = work / "bps" / f"{STEP}.yaml"
    stack_python(
        env,
        "-c",
        "import sys; from drp_campaign.config import load_campaign; "
        "from pathlib import Path; from drp_campaign.stackside.pipeline import write_pipeline; "
        "write_pipeline(load_campaign(sys.argv[1]).pipeline_spec, Path(sys.argv[2]), step=sys.argv[3])",
        str(CAMPAIGN),
        str(pipeline),
        STEP,
    )
    cfg = submit_config(
        campaign, SITE, STEP, GROUP, key=KEY, pipeline_yaml=pipeline, submit_dir=work / "bps" / "submit"
    )
    cfg["payload"]["butlerConfig"] = str(repo)
    # Where a PanDA job would fetch the quantum graph from (an S3/WebDAV endpoint at a DF).
    cfg["fileDistributionEndPoint"] = f"file://{work}/bps/distribution/"
    submit_yaml = work / "bps" / "submit.yaml"
    submit_yaml.write_text(yaml.safe_dump(cfg))
    proc = bps(env, "submit", str(submit_yaml), name="bps submit")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = re.search(r"Run Id: (\d+)", proc.stdout + proc.stderr)
    assert found, proc.stdout + proc.stderr
    return int(found.group(1))


def test_submit_creates_the_request_in_idds_owned_by_the_tokens_user(idds, submitted):
    request = idds_request(idds, submitted)
    assert request["username"] == "drp"
    # The Clerk takes a new request to Transforming (no PanDA tasks follow: no Transformer).
    state, TIMINGS["submit -> Transforming"] = wait_for_status(idds, submitted, {"Transforming"})
    assert state == "Transforming"


def test_status_and_report_come_from_idds(idds, submitted):
    env = panda_env(idds)
    status = bps(env, "status", "--id", str(submitted), name="bps status")
    # bps status exits with the state's WmsStates value and logs its name.
    assert "status: RUNNING" in status.stderr, status.stderr[-2000:]
    report = bps(env, "report", "--id", str(submitted), name="bps report")
    assert report.returncode == 0, report.stderr[-2000:]
    assert str(submitted) in report.stdout, report.stdout
    t0 = time.monotonic()
    assert request_state(env, submitted) == "RUNNING"
    TIMINGS["request_state"] = time.monotonic() - t0


def wait_for_status(idds, request_id: int, wanted: set[str], timeout: float = 60) -> tuple[str, float]:
    """Poll iDDS until the request reaches one of `wanted` (the Clerk works on a ~10 s cycle)."""
    t0 = time.monotonic()
    seen = []
    while True:
        state = status_name(idds_request(idds, request_id))
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in wanted or time.monotonic() - t0 > timeout:
            print(f"\n  iDDS states of request {request_id}: {' -> '.join(seen)} ({time.monotonic() - t0:.1f} s)")
            return state, time.monotonic() - t0
        time.sleep(0.5)


def test_cancel_really_changes_the_state_in_idds(idds, submitted):
    env = panda_env(idds)
    proc = bps(env, "cancel", "--id", str(submitted), name="bps cancel")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The Clerk applies the abort command: Cancelling (Cancelled would need the Transformer and
    # Carrier agents, which need a real PanDA; ctrl_bps maps Cancelling to RUNNING).
    state, TIMINGS["cancel -> Cancelling"] = wait_for_status(idds, submitted, {"Cancelling", "Cancelled"})
    print(f"  bps cancel said: {proc.stdout.strip()[-200:]}")
    assert state in ("Cancelling", "Cancelled"), state
    assert request_status(env, submitted) == state


def test_restart_really_changes_the_state_in_idds(idds, submitted):
    env = panda_env(idds)
    proc = bps(env, "restart", "--id", str(submitted), name="bps restart")
    assert proc.returncode == 0, proc.stderr[-2000:]
    print(f"\n  bps restart said: {(proc.stdout + proc.stderr).strip()[-300:]}")
    state, TIMINGS["restart -> Resuming"] = wait_for_status(idds, submitted, {"Resuming", "Transforming"})
    assert state in ("Resuming", "Transforming"), state
    assert (request_status(env, submitted), request_state(env, submitted)) == (state, "RUNNING")


def test_a_wrong_token_fails_clearly(idds, submitted):
    env = panda_env(idds, password="not-the-token")
    proc = bps(env, "status", "--id", str(submitted))
    out = proc.stdout + proc.stderr
    print(f"\nbps status with a wrong token: exit {proc.returncode}: {out.strip()[-400:]}")
    assert "invalid token" in out or proc.returncode != 0, out[-2000:]
    with pytest.raises(PandaError, match="invalid token"):
        request_state(env, submitted)


def test_an_unknown_request_id_fails_clearly(idds, submitted):
    env = panda_env(idds)
    proc = bps(env, "status", "--id", "987654")
    print(f"\nbps status of an unknown id: exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-300:]}")
    with pytest.raises(PandaError, match="no iDDS request 987654"):
        request_state(env, 987654)


def test_a_bad_connection_names_the_field(idds):
    with pytest.raises(PandaConfigError, match="'drp_panda_frdf': password"):
        panda_environment(connection(idds, password=""))
    with pytest.raises(PandaConfigError, match='extra has no "vo"'):
        panda_environment(connection(idds, extra_dejson={}))
    with pytest.raises(PandaConfigError, match="host must be the PanDA server URL"):
        panda_environment(connection(idds, host="127.0.0.1"))


def test_the_relay_refuses_a_call_without_a_token(idds):
    url = f"http://127.0.0.1:{RELAY_PORT}/server/panda/relay_idds_command"
    out = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", "-X", "POST", "-d", "command_name=ping", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "401" and "no bearer token" in body, out.stdout


def relay_call(idds, command: str, args=None, kwargs=None, manager: bool = True) -> requests.Response:
    """One relay_idds_command with the Connection's token, encoded as pandaclient encodes it."""
    stored = json.loads((idds["home"] / "connection.json").read_text())
    fields = {"command_name": command, "args": json.dumps(args or []), "kwargs": json.dumps(kwargs or {})}
    if manager:
        fields["manager"] = True
    return requests.post(
        f"http://127.0.0.1:{RELAY_PORT}/server/panda/relay_idds_command",
        json=fields,
        timeout=30,
        headers={"Authorization": f"Bearer {stored['password']}", "Origin": stored["extra"]["vo"]},
    )


def test_the_relay_serves_only_what_ctrl_bps_panda_calls_and_only_to_its_own_idds(idds):
    """#12 finding 6: a token holder could pick the iDDS host and call any client method (some
    read or write local files). Each refusal is a 403 before anything runs: the relay logs no call."""
    from localservices.panda.relay import COMMANDS

    assert set(COMMANDS) == {
        "ping",
        "get_status",
        "get_requests",
        "get_contents_output_ext",
        "submit",
        "submit_build",
        "update_build_request",
        "retry",
        "abort",
    }
    refused = {
        "another iDDS host": (relay_call(idds, "ping+http://127.0.0.1:9/idds"), "is not served"),
        "a method outside the list": (
            relay_call(idds, "download_contents", kwargs={"request_id": 1}),
            "is not relayed",
        ),
        "a private method": (relay_call(idds, "_get_client"), "is not relayed"),
        "the plain Client": (
            relay_call(idds, "get_requests", kwargs={"request_id": 1}, manager=False),
            "only iDDS's ClientManager",
        ),
        "an argument it never passes": (
            relay_call(idds, "get_requests", kwargs={"request_id": 1, "workload_id": 2}),
            "workload_id not relayed",
        ),
        "a class outside iDDS": (
            relay_call(idds, "submit", args=[{"module": "os", "class": "system", "attributes": {}}]),
            "outside iDDS",
        ),
    }
    for what, (answer, why) in refused.items():
        assert answer.status_code == 403 and why in answer.text, (what, answer.status_code, answer.text)
    with pytest.raises(PandaError, match="is not relayed"):  # through pandaclient, as bps would see it
        _call(panda_env(idds), "setup_local_configuration", local_config_root="/tmp")
    log = (idds["home"] / "logs" / "relay.out").read_text()
    ran = set(re.findall(r"command=([\w+:/.]+)", log))
    assert not ran & {
        "ping+http://127.0.0.1:9/idds",
        "download_contents",
        "_get_client",
        "setup_local_configuration",
    }, ran
    ping = relay_call(idds, "ping")  # what the relay does serve, to its own iDDS
    assert ping.status_code == 200 and ping.json()[0] is True, ping.text
    same_host = relay_call(idds, f"ping+{json.loads((idds['home'] / 'relay.json').read_text())['idds_host']}")
    assert same_host.status_code == 200 and same_host.json()[0] is True, same_host.text


def test_idds_answers_only_the_relay(idds):
    """#12 finding 6: iDDS takes the caller's DN from a header; without the key only the relay
    holds, a local process sending the relay's (super user's) DN gets 401, and iDDS never sees it."""
    no_key = idds_get(idds, "/ping", key=None)
    assert no_key.status_code == 401 and RELAY_KEY_HEADER in no_key.text, no_key.text
    assert idds_get(idds, "/ping", key="a-guess").status_code == 401
    assert idds_get(idds, "/request/1/null/false", key=None).status_code == 401
    assert idds_get(idds, "/ping").status_code == 200


def test_the_step_commands_submit_attach_cancel_and_restart_a_panda_run(idds, submitted, tmp_path):
    """What the step operator calls, on the PanDA path: bps-submit (idempotent), bps-cancel and a
    later bps-submit (a cleared task) that restarts the same request, each confirmed in iDDS."""
    doc = yaml.safe_load(CAMPAIGN.read_text())
    doc["pipeline"] = str(CAMPAIGN.parent / doc["pipeline"])
    doc["bps"]["wms"] = "panda"
    campaign_file = tmp_path / "panda-campaign.yaml"
    campaign_file.write_text(yaml.safe_dump(doc))
    env = panda_env(idds)
    repo = idds["work"] / "repos" / SITE  # seeded by the `submitted` fixture
    run_dir = tmp_path / "run"

    def step(*args: str) -> dict:
        proc = subprocess.run(
            [str(STACK / "bin" / "python"), "-m", "drp_campaign.stackside", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    submit = (
        "bps-submit",
        "--campaign",
        str(campaign_file),
        "--site",
        SITE,
        "--repo",
        str(repo),
        "--step",
        STEP,
        "--group",
        "g000",
        "--tracts",
        "2",
        "--key",
        KEY,
        "--chain",
        graph.site_chain(load_campaign(CAMPAIGN), KEY),
        "--run-dir",
        str(run_dir),
    )
    first = step(*submit)
    assert first["action"] == "submitted" and first["wms"] == "panda" and int(first["run_id"]) > 0
    request_id = int(first["run_id"])
    assert step("bps-status", "--run-dir", str(run_dir))["state"] == "RUNNING"
    again = step(*submit)
    assert again["action"] == "attached" and again["run_id"] == first["run_id"], "no second request"

    cancelled = step("bps-cancel", "--run-dir", str(run_dir))
    assert cancelled["action"] == "cancelled"
    assert status_name(idds_request(idds, request_id)) in ("Cancelling", "Cancelled")
    assert step("bps-status", "--run-dir", str(run_dir))["state"] == "CANCELLED"

    restarted = step(*submit)  # a cleared task: same definition, so the same request is restarted
    assert restarted["action"] == "restarted" and restarted["run_id"] == first["run_id"]
    assert status_name(idds_request(idds, request_id)) not in ("Cancelling", "Cancelled", "Failed")
