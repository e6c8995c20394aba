"""StackHook: reaches a site's science stack through the site's setup command."""

from __future__ import annotations

from airflow.sdk import BaseHook

from drp_campaign.config import SiteConfig
from drp_campaign.stack import StackCommand


class StackHook(BaseHook):
    """Runs stack-side subcommands at one site and returns their JSON results.

    Owns the running subprocess so the operator's on_kill can stop it (and the pipetask under it).
    """

    def __init__(self, site: SiteConfig):
        super().__init__()
        self.site = site
        self._current: StackCommand | None = None

    def run(self, subcommand: str, args: list[str], extra_env: dict[str, str] | None = None) -> dict:
        self._current = StackCommand(self.site, subcommand, args, extra_env)
        self.log.info("site %s: %s", self.site.name, " ".join(self._current.argv[4:]))
        try:
            return self._current.run(log=lambda line: self.log.info("[%s] %s", self.site.name, line))
        finally:
            self._current = None

    def kill(self) -> None:
        if self._current:
            self._current.kill()
