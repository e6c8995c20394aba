"""The warm stack server (drp_campaign/stackside/warm.py): a command run through it behaves as the
same command run plainly (environment, working directory, stdio, exit code), a killed client
stops its command, a server whose code changed hands over to a fresh one, and what it cannot
serve runs the plain way."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from drp_campaign.settings import stack_prefix

pytestmark = pytest.mark.integration

PY = str(stack_prefix() / "bin" / "python")


def warm(tmp_path: Path, *argv: str, **kwargs) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{stack_prefix() / 'bin'}:{os.environ['PATH']}",
        "PYTHONPATH": str(tmp_path),
        **kwargs.pop("env", {}),
    }
    return subprocess.run(
        [
            PY,
            "-m",
            "drp_campaign.stackside.warm",
            "run",
            "--dir",
            str(tmp_path / "servers"),
            "--site",
            "TEST",
            "--",
            *argv,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        **kwargs,
    )


@pytest.fixture
def servers(tmp_path):
    yield tmp_path / "servers"
    subprocess.run([PY, "-m", "drp_campaign.stackside.warm", "stop", "--dir", str(tmp_path / "servers")], check=False)


def server_pid(servers: Path) -> int:
    [pid_file, *_] = sorted(servers.glob("TEST-*.pid"), key=lambda p: p.stat().st_mtime)
    return int(pid_file.read_text())


def test_a_command_through_the_server_sees_what_a_plain_one_would(tmp_path, servers):
    code = "import os, sys; print(os.getcwd(), os.environ['PROBE'], sys.stdin.read()); sys.exit(7)"
    (tmp_path / "cwd").mkdir()
    first = warm(tmp_path, "python", "-c", "pass")  # -c is not served: runs plainly, starts nothing
    assert first.returncode == 0 and not list(servers.glob("*.pid"))

    script = tmp_path / "probe.py"
    script.write_text(code)
    proc = warm(tmp_path, "python", "-m", "probe", cwd=tmp_path / "cwd", input="from stdin", env={"PROBE": "value"})
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout.strip() == f"{tmp_path / 'cwd'} value from stdin"
    assert server_pid(servers) != os.getpid(), "a server was started and served it"

    # A console script of the stack, served in-process: its own exit code and usage text.
    pid = server_pid(servers)
    usage = warm(tmp_path, "pipetask", "no-such-command")
    assert usage.returncode == 2 and "No such command" in usage.stderr and usage.stderr.startswith("Usage: pipetask")
    assert server_pid(servers) == pid, "the same server served both"

    # PYTHONPATH shapes an interpreter when it starts (a fork keeps the server's): a site whose
    # setup sets another one is served by a server of its own, which sees its path.
    other = tmp_path / "other"
    other.mkdir()
    (other / "probe.py").write_text("print('the other probe')")
    proc = warm(tmp_path, "python", "-m", "probe", env={"PYTHONPATH": str(other)})
    assert proc.returncode == 0 and proc.stdout.strip() == "the other probe"
    assert len(list(servers.glob("TEST-*.pid"))) == 2


def test_killing_the_client_stops_the_command(tmp_path, servers):
    marker = tmp_path / "still-running"
    (tmp_path / "sleeper.py").write_text(
        f"import time, pathlib\nfor _ in range(600):\n    pathlib.Path({str(marker)!r}).touch()\n    time.sleep(0.1)\n"
    )
    env = {**os.environ, "PATH": f"{stack_prefix() / 'bin'}:{os.environ['PATH']}", "PYTHONPATH": str(tmp_path)}
    client = subprocess.Popen(
        [
            PY,
            "-m",
            "drp_campaign.stackside.warm",
            "run",
            "--dir",
            str(servers),
            "--site",
            "TEST",
            "--",
            "python",
            "-m",
            "sleeper",
        ],
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.1)
    os.killpg(client.pid, signal.SIGKILL)  # as a cancel kills the launcher's process group
    client.wait()
    time.sleep(1.5)  # the server notices the closed connection within 0.2 s
    marker.unlink()
    time.sleep(1.0)
    assert not marker.exists(), "the command outlived its client"


def test_a_server_whose_code_changed_hands_over_to_a_fresh_one(tmp_path, servers):
    assert warm(tmp_path, "python", "-m", "json.tool", input="{}").returncode == 0
    old = server_pid(servers)
    # What a `git pull` or a pip install does: the package's code is newer than the server.
    module = Path(__file__).resolve().parent.parent / "drp_campaign" / "stackside" / "_errors.py"
    os.utime(module)
    proc = warm(tmp_path, "python", "-m", "json.tool", input='{"a": 1}')
    assert proc.returncode == 0 and '"a": 1' in proc.stdout
    assert server_pid(servers) != old
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(old, 0)
            time.sleep(0.1)


def test_the_per_call_path_and_the_warm_path_give_the_same_answer(tmp_path, monkeypatch):
    """What a production site runs (a Python per command) and the embedded default (forked from
    the site's warm server), through the site's real setup command: the same result."""
    from drp_campaign.config import load_sites
    from drp_campaign.settings import CAMPAIGNS_DIR
    from drp_campaign.stack import run_stack

    site = load_sites().sites["FRDF"]
    monkeypatch.setenv("DRP_WORK_DIR", str(tmp_path))
    answers = {}
    for mode in ("per-call", "warm"):
        monkeypatch.setenv("DRP_STACK_SERVER", mode)
        answer = run_stack(
            site, "software-report", ["--campaign", str(CAMPAIGNS_DIR / "test-3x3.yaml")], log=lambda line: None
        )
        answer.pop("elapsed_s")
        answers[mode] = answer
        assert bool(list((tmp_path / "stack-servers").glob("FRDF-*.pid"))) == (mode == "warm")
    assert answers["warm"] == answers["per-call"] and answers["warm"]["pipeline_sha"]
