"""A warm science-stack process per site: the stack imported once, each command forked from it.

Why: here a Python that imports the LSST stack spends ~2.5 s of CPU before doing anything, and a
3x3 campaign starts a few hundred of them (the operators' stack calls, `bps submit`, `pipetask
qgraph`, every BPS job, every final job). Forked from a process that has imported them already,
the same commands start in a few tens of milliseconds.

    python -m drp_campaign.stackside.warm run --dir D --site S -- ARGV...   run ARGV warm (the client)
    python -m drp_campaign.stackside.warm serve --dir D --site S            the server (the client starts it)
    python -m drp_campaign.stackside.warm stop --dir D                      stop every server under D

D holds each site's pid, lock and log files (and its socket, unless that path would be too long).

ARGV is what the per-call path runs: `python -m MODULE ...`, `pipetask ...`, `bps ...` or `butler
...` of this stack. The command gets the client's environment, working directory, stdin, stdout
and stderr, and its exit code is the client's. When the client dies (its process group killed,
e.g. a cancelled run), the server kills the command's process group: stopping the client stops
the command, as with a plain process. Anything the server cannot serve (another program, another
Python, a server that does not come up) runs the plain way, by exec: the warm path is an
optimisation, never a requirement.

The client imports only the standard library (it must start fast). The server refuses a request
whose code stamp differs from its own (the package or the stack changed since it started) and
exits; the client then starts a fresh one. It also exits after DRP_STACK_SERVER_IDLE_S idle.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Console scripts the server runs in-process: name -> (module, function).
ENTRY_POINTS = {
    "pipetask": ("lsst.ctrl.mpexec.cli.pipetask", "main"),
    "bps": ("lsst.ctrl.bps.cli.bps", "main"),
    "butler": ("lsst.daf.butler.cli.butler", "main"),
}
# Imported once by the server: what the stack-side commands, BPS and its jobs load.
PRELOAD = (
    "lsst.daf.butler",
    "lsst.daf.butler.cli.butler",
    "lsst.pipe.base",
    "lsst.pipe.base.tests.mocks",
    "lsst.pipe.base.quantum_provenance_graph",
    "lsst.ctrl.mpexec.cli.pipetask",
    "lsst.ctrl.bps.cli.bps",
    "lsst.ctrl.bps.drivers",
    "lsst.ctrl.bps.parsl",
    "drp_campaign.stackside.bps_run",
    "drp_campaign.stackside.repo",
    "drp_campaign.stackside.hop",
    "drp_campaign.stackside.placement",
    "drp_campaign.stackside.step",
    "drp_campaign.stackside.sky",
    "drp_campaign.stackside.parsl_site",
    "drp_campaign.wms.parsl",
)
HEADER = struct.Struct("!I")
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes
START_TIMEOUT_S = 90.0
KILL_GRACE_S = 10.0


# No helper threads in the server (a process is forked safely only with one thread): pyarrow's
# jemalloc background thread and OpenBLAS's pool would start at import otherwise.
SERVER_ENV = {"JE_ARROW_MALLOC_CONF": "background_thread:false", "OPENBLAS_NUM_THREADS": "1"}
# What fixes an interpreter when it starts (its sys.path, the libraries it loads): a forked
# command keeps the server's, so a server serves only callers whose values match its own. Every
# other variable is the command's own.
INTERPRETER_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONNOUSERSITE",
    "PYTHONUSERBASE",
    "PYTHONSAFEPATH",
    "PYTHONPLATLIBDIR",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
)


def interpreter_key() -> str:
    """Names this interpreter and the environment that shaped it at start."""
    values = [sys.executable, *(f"{k}={os.environ.get(k, '')}" for k in INTERPRETER_ENV)]
    return hashlib.sha256("\0".join(values).encode()).hexdigest()[:10]


class Files:
    """Where one site's server keeps its socket, pid, lock and log. A site whose setup shapes the
    interpreter differently (another PYTHONPATH, say) gets a server of its own."""

    def __init__(self, directory: Path | str, site: str, key: str | None = None):
        self.key = key or interpreter_key()
        name = f"{site}-{self.key}"
        self.dir = Path(directory)
        self.socket = socket_path(directory, name)
        self.pid = self.dir / f"{name}.pid"
        self.lock = self.dir / f"{name}.lock"
        self.log = self.dir / f"{name}.log"


def socket_path(directory: Path | str, site: str) -> str:
    """The server's socket for one site; a short path in /tmp when the work dir's is too long."""
    path = str(Path(directory) / f"{site}.sock")
    if len(path) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]
    return str(Path(tempfile.gettempdir()) / f"drp-stack-{digest}.sock")


def code_stamp() -> str:
    """Changes when this package's code or the stack's installed packages change."""
    package = Path(__file__).resolve().parent.parent
    newest = max((p.stat().st_mtime_ns for p in package.rglob("*.py")), default=0)
    installed = max((p.stat().st_mtime_ns for p in Path(sys.prefix).glob("lib/python*/site-packages")), default=0)
    return f"{sys.executable}:{newest}:{installed}"


# --- the client ----------------------------------------------------------------------------------


def servable(argv: list[str]) -> bool:
    """Is ARGV a command of this very stack that the server knows how to run?"""
    if not argv:
        return False
    exe = shutil.which(argv[0])
    if not exe or Path(exe).parent.resolve() != Path(sys.executable).parent.resolve():
        return False
    name = Path(argv[0]).name
    return name in ENTRY_POINTS or (name.startswith("python") and len(argv) >= 3 and argv[1] == "-m")


def run(files: Files, site: str, argv: list[str]) -> int:
    """Run ARGV through the server (starting it if need be); exec it plainly if that cannot be."""
    if servable(argv):
        conn = _connect_or_start(files, site)
        if conn is not None:
            code = _request(conn, argv)
            if code is not None:
                return code
            # refused before it ran (the server was stale and has exited): a fresh one serves it
            conn = _connect_or_start(files, site)
            if conn is not None and (code := _request(conn, argv)) is not None:
                return code
    os.execvp(argv[0], argv)  # the plain way; does not return


def _request(conn: socket.socket, argv: list[str]) -> int | None:
    """Send the command with our stdio; wait for its exit code. None: refused (stale server)."""
    payload = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "stamp": code_stamp()}).encode()
    reply = b""
    with conn:
        try:
            socket.send_fds(conn, [HEADER.pack(len(payload))], [0, 1, 2])
            conn.sendall(payload)
            while chunk := conn.recv(64):
                reply += chunk
        except (ConnectionResetError, BrokenPipeError):
            return None  # never accepted: the server was closing, the command did not run
    text = reply.decode().strip()
    if text == "stale":
        return None  # the command did not run
    if not text.startswith("exit "):
        # The server went away while the command ran: running it again could do the work twice.
        print("warm stack server died while the command ran; not run again", file=sys.stderr)
        return 1
    return int(text.split()[1])


def _connect(sock_path: str) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(sock_path)
        return conn
    except OSError:
        conn.close()
        return None


def _connect_or_start(files: Files, site: str) -> socket.socket | None:
    if conn := _connect(files.socket):
        return conn
    files.dir.mkdir(parents=True, exist_ok=True)
    with open(files.lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others find it running
        if conn := _connect(files.socket):
            return conn
        with open(files.log, "a") as log:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "drp_campaign.stackside.warm",
                    "serve",
                    "--dir",
                    str(files.dir),
                    "--site",
                    site,
                    "--key",
                    files.key,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={**os.environ, **SERVER_ENV},
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and server.poll() is None:
            if conn := _connect(files.socket):
                return conn
            time.sleep(0.05)
    print(
        f"warm stack server for {site} did not start (log: {files.log}); running the command plainly", file=sys.stderr
    )
    return None


# --- the server ----------------------------------------------------------------------------------


def serve(files: Files, idle_s: float) -> None:
    import importlib
    import warnings

    t0 = time.monotonic()
    for name in PRELOAD:
        importlib.import_module(name)
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threads > 1:  # OpenBLAS and jemalloc are fork-aware; still, say so
        print(f"{_now()} warning: {threads - 1} helper thread(s) started while importing the stack", flush=True)
    warnings.filterwarnings("ignore", "This process .* is multi-threaded, use of fork", DeprecationWarning)
    stamp = code_stamp()
    Path(files.socket).unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(files.socket)
    listener.listen(128)
    files.pid.write_text(str(os.getpid()))
    print(
        f"{_now()} serving on {files.socket} (pid {os.getpid()}), stack imported in {time.monotonic() - t0:.1f} s",
        flush=True,
    )
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    children: dict[int, socket.socket] = {}  # command pid -> its client's connection
    orphans: dict[int, float] = {}  # command pid -> when its client went away
    started: dict[int, tuple[float, str]] = {}  # command pid -> (start, what), for the log
    last_active = time.monotonic()
    listening = True
    try:
        # A stale or stopping server stops listening at once but lets running commands finish.
        while listening or children or orphans:
            if listening and (stopping or (not children and not orphans and time.monotonic() - last_active > idle_s)):
                print(f"{_now()} {'stopping' if stopping else f'idle for {idle_s:.0f} s'}; exiting", flush=True)
                listening = _stop_listening(listener, files)
            waiting = [listener, *children.values()] if listening else list(children.values())
            readable, _, _ = select.select(waiting, [], [], 0.2)
            for ready in readable:
                if ready is listener:
                    conn, _ = listener.accept()
                    pid, what = _fork_command(conn, listener, children, stamp)
                    if pid is None:  # stale: stop listening first, so the client's retry starts a fresh one
                        listening = _stop_listening(listener, files)
                        conn.sendall(b"stale\n")
                        conn.close()
                    elif pid > 0:
                        children[pid] = conn
                        started[pid] = (time.monotonic(), what)
                else:  # a client's connection is readable only when it closed: the client died
                    pid = next(p for p, c in children.items() if c is ready)
                    _kill_group(pid, signal.SIGTERM)
                    orphans.setdefault(pid, time.monotonic())
                    children.pop(pid).close()
            for pid, since in list(orphans.items()):
                if time.monotonic() - since > KILL_GRACE_S:
                    _kill_group(pid, signal.SIGKILL)
            _reap(children, orphans, started)
            if children or orphans:
                last_active = time.monotonic()
    finally:
        if listening:
            _stop_listening(listener, files)


def _stop_listening(listener: socket.socket, files: Files) -> bool:
    """Close and unlink our socket (not a successor's); returns the new `listening` (False)."""
    listener.close()
    if files.pid.exists() and files.pid.read_text() == str(os.getpid()):
        Path(files.socket).unlink(missing_ok=True)
        files.pid.unlink(missing_ok=True)
    return False


def _fork_command(conn: socket.socket, listener: socket.socket, children: dict, stamp: str) -> tuple[int | None, str]:
    """Fork the requested command; (its pid, what it is), pid 0 for a bad request, None when stale."""
    conn.settimeout(10)
    try:
        header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
        (size,) = HEADER.unpack(header)
        payload = b""
        while len(payload) < size:
            payload += conn.recv(size - len(payload))
        request = json.loads(payload)
    except (OSError, ValueError, struct.error) as exc:
        print(f"{_now()} bad request: {exc}", flush=True)
        conn.close()
        return 0, ""
    if request.get("stamp") != stamp:
        print(f"{_now()} code changed since start ({request.get('stamp')} != {stamp}); exiting", flush=True)
        for fd in fds:
            os.close(fd)
        return None, ""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the command
        code = 1
        try:
            listener.close()
            for other in children.values():
                other.close()
            conn.close()
            os.setsid()  # its own group: the server can stop it and all it started
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            code = _run_in_process(request["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - the command's own traceback, as a plain process shows it
            import traceback

            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001 - a closed pipe: nothing left to say
                    pass
            os._exit(code if 0 <= code < 256 else 1)
    for fd in fds:
        os.close(fd)
    conn.settimeout(None)
    return pid, describe(request["argv"])


def _run_in_process(argv: list[str]) -> int:
    import runpy

    name = Path(argv[0]).name
    if name in ENTRY_POINTS:
        module, function = ENTRY_POINTS[name]
        sys.argv = [name, *argv[1:]]
        sys.modules["__main__"].__package__ = None  # click names the program from this, else "python -m ...warm"
        result = getattr(sys.modules[module], function)()
        return result if isinstance(result, int) else 0
    sys.argv = [argv[2], *argv[3:]]
    runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    return 0


def describe(argv: list[str]) -> str:
    """What a command is, for the log and the benchmarks: `pipetask run-qbb`, `drp_campaign.stackside bps-submit`."""
    name = Path(argv[0]).name
    words = argv[2:] if name.startswith("python") and argv[1:2] == ["-m"] else [name, *argv[1:]]
    return " ".join(w for w in words[:4] if not w.startswith("-") and "/" not in w)[:80]


def _reap(children: dict[int, socket.socket], orphans: dict[int, float], started: dict[int, tuple[float, str]]) -> None:
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        orphans.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        t0, what = started.pop(pid, (time.monotonic(), "?"))
        # One line per command: what ran, how it ended, its CPU (with what it waited for) and wall.
        print(
            f"{_now()} command pid={pid} exit={code} cpu_s={usage.ru_utime + usage.ru_stime:.2f} "
            f"wall_s={time.monotonic() - t0:.2f} what={what}",
            flush=True,
        )
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(f"exit {code if code >= 0 else 128 - code}\n".encode())
            except OSError:
                pass
            conn.close()


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all(directory: Path) -> list[int]:
    """Stop every server whose socket lives in DIRECTORY (make stop, the tests' teardown)."""
    stopped = []
    for pid_file in Path(directory).glob("*.pid"):
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
        except (ValueError, ProcessLookupError, PermissionError):
            pid_file.unlink(missing_ok=True)
    return stopped


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drp_campaign.stackside.warm", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("run", help="run a stack command through the site's warm server")
    sp.add_argument("--dir", required=True)
    sp.add_argument("--site", required=True)
    sp.add_argument("argv", nargs=argparse.REMAINDER)
    sp = sub.add_parser("serve", help="import the stack once and serve commands on a Unix socket")
    sp.add_argument("--dir", required=True)
    sp.add_argument("--site", required=True)
    sp.add_argument("--key", required=True, help="the interpreter key of the clients it serves")
    sp.add_argument("--idle-s", type=float, default=float(os.environ.get("DRP_STACK_SERVER_IDLE_S", 1800)))
    sp = sub.add_parser("stop", help="stop every warm server whose socket is in a directory")
    sp.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    if args.command == "run":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            parser.error("run: give the command after --")
        return run(Files(args.dir, args.site), args.site, command)
    if args.command == "serve":
        serve(Files(args.dir, args.site, args.key), args.idle_s)
        return 0
    print(json.dumps({"stopped": stop_all(Path(args.dir))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
