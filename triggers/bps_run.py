"""BpsRunTrigger: waits for one step group's BPS run in the triggerer, holding no worker slot.

Each poll is cheap (the WMS backend's poll_state, drp_campaign/wms/): for the local WMS (parsl)
two file checks in the run directory; for PanDA one `get_requests` through the site's PanDA server
to iDDS (pandaclient, no LSST stack), with the site's Connection as its environment. The full
per-quantum report is read once, by the operator, when the run has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from drp_campaign.wms import ENDED, backend


class BpsRunTrigger(BaseTrigger):
    def __init__(
        self,
        run_dir: str,
        wms: str,
        run_id: str | None = None,
        site: str = "",
        campaign_file: str = "",
        sites_file: str | None = None,
        panda_conn_id: str | None = None,
        poll_interval_s: float = 2.0,
        first_poll_delay_s: float = 0.0,
    ):
        super().__init__()
        self.run_dir = run_dir
        self.wms = wms
        self.run_id = run_id
        self.site = site
        self.campaign_file = campaign_file
        self.sites_file = sites_file
        self.panda_conn_id = panda_conn_id
        self.poll_interval_s = poll_interval_s
        self.first_poll_delay_s = first_poll_delay_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "drp_campaign.triggers.bps_run.BpsRunTrigger",
            {
                "run_dir": self.run_dir,
                "wms": self.wms,
                "run_id": self.run_id,
                "site": self.site,
                "campaign_file": self.campaign_file,
                "sites_file": self.sites_file,
                "panda_conn_id": self.panda_conn_id,
                "poll_interval_s": self.poll_interval_s,
                "first_poll_delay_s": self.first_poll_delay_s,
            },
        )

    async def _panda_env(self) -> dict[str, str]:
        from airflow.sdk import BaseHook

        from drp_campaign.panda_connection import panda_environment

        return panda_environment(await BaseHook.aget_connection(self.panda_conn_id))

    async def state(self, panda_env: dict[str, str] | None) -> str:
        return await backend(self.wms).apoll_state(Path(self.run_dir), self.run_id, panda_env)

    async def wait(self, panda_env: dict[str, str] | None, timeout_s: float, poll_s: float) -> str:
        """Poll for up to TIMEOUT_S (the operator's short wait before deferring); the last state."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (state := await self.state(panda_env)) not in ENDED and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(poll_s)
        return state

    async def run(self) -> AsyncIterator[TriggerEvent]:
        panda_env = await self._panda_env() if self.panda_conn_id else None
        await asyncio.sleep(self.first_poll_delay_s)  # the operator has just looked (see operators/steps.py)
        polls = 0
        while True:
            state = await self.state(panda_env)
            polls += 1
            if state in ENDED:
                yield TriggerEvent({"run_dir": self.run_dir, "state": str(state), "polls": polls})
                return
            if polls % 30 == 1:
                self.log.info("BPS run %s (%s): %s", self.run_id or self.run_dir, self.wms, state)
            await asyncio.sleep(self.poll_interval_s)

    async def on_kill(self) -> None:
        """Marked failed or cleared from the UI while waiting: cancel the run for real."""
        from drp_campaign import settings
        from drp_campaign.config import load_campaign
        from drp_campaign.stack import stack_argv

        site = load_campaign(self.campaign_file, self.sites_file).sites_config.sites[self.site]
        env = settings.site_environment()
        if self.panda_conn_id:
            env.update(await self._panda_env())
        proc = await asyncio.create_subprocess_exec(
            *stack_argv(site, "bps-cancel", ["--run-dir", self.run_dir]),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            self.log.error("cancelling BPS run %s failed: %s", self.run_dir, err.decode(errors="replace")[-1000:])
        else:
            self.log.info("cancelled BPS run %s: %s", self.run_dir, out.decode().strip())
