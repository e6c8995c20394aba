"""Run a stack-side command at a site, through that site's configured setup command.

This is how a real data facility is reached: `<setup command> && python -m drp_campaign.stackside
...` in a shell, exactly as an operator would type it there. The command prints one JSON object
(its result) on stdout; its stderr is the log, streamed line by line to the caller.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable

from . import settings
from .config import SiteConfig
from .errors import DrpError


class StackCommandError(DrpError):
    """The stack-side command could not run or did not produce a result."""


def stack_argv(site: SiteConfig, subcommand: str, args: list[str]) -> list[str]:
    # The site's own setup, then the command: through the site's warm stack server when one is
    # configured (settings.stack_server_dir), else a Python of its own.
    warm = " ".join(shlex.quote(word) for word in settings.warm_prefix(site.name))
    script = f'{site.stack_setup} && exec {warm + " " if warm else ""}python -m drp_campaign.stackside "$@"'
    return ["bash", "-c", script, f"drp-stack@{site.name}", subcommand, *args]


class StackCommand:
    """One run of a stack-side subcommand; `kill()` stops it and everything it started."""

    def __init__(self, site: SiteConfig, subcommand: str, args: list[str], extra_env: dict[str, str] | None = None):
        self.site = site
        self.extra_env = extra_env or {}
        self.subcommand = subcommand
        self.argv = stack_argv(site, subcommand, args)
        self.process: subprocess.Popen | None = None

    def run(self, log: Callable[[str], None] = print) -> dict:
        self.process = subprocess.Popen(
            self.argv,
            # Not the task's stdin: in an Airflow task that is the supervisor's socket, which a
            # command could talk to (and bash, finding a socket there, would read ~/.bashrc).
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**settings.site_environment(), **self.extra_env},
            start_new_session=True,  # its own process group, so kill() reaches pipetask too
        )
        stdout, stderr_lines = self._stream(log)
        code = self.process.wait()
        where = f"site {self.site.name}: stack command '{self.subcommand}'"
        if code != 0:
            tail = "\n".join(stderr_lines[-15:])
            raise StackCommandError(f"{where} failed (exit {code}):\n{tail}")
        try:
            return json.loads(stdout)
        except json.JSONDecodeError:
            raise StackCommandError(f"{where} printed no JSON result; stdout was: {stdout[-500:]!r}") from None

    def _stream(self, log: Callable[[str], None]) -> tuple[str, list[str]]:
        # stderr is the log: relay it as it comes; stdout holds only the JSON result.
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.append(self.process.stdout.read()), daemon=True)
        reader.start()
        lines: list[str] = []
        for line in self.process.stderr:
            line = line.rstrip("\n")
            lines.append(line)
            log(line)
        reader.join()
        return "".join(chunks), lines

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)


def run_stack(
    site: SiteConfig,
    subcommand: str,
    args: list[str],
    log: Callable[[str], None] = print,
    extra_env: dict[str, str] | None = None,
) -> dict:
    return StackCommand(site, subcommand, args, extra_env).run(log)
