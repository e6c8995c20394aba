"""A ctrl_bps_parsl site for the local machine that runs jobs on threads, not worker processes.

Each BPS job is a bash command (`pipetask run-qbb ...`) that parsl runs as a subprocess either
way; the stock `Local` site also starts a HighThroughputExecutor worker pool (~20 s on 2 cores)
that buys nothing here. `site.local.cores` bounds the jobs running at once.
"""

from __future__ import annotations

from lsst.ctrl.bps.parsl.configuration import get_bps_config_value
from lsst.ctrl.bps.parsl.site import SiteConfig
from parsl.executors import ThreadPoolExecutor


class LocalThreads(SiteConfig):
    def get_executors(self):
        cores = get_bps_config_value(self.site, "cores", int, required=True)
        return [ThreadPoolExecutor(label="local", max_threads=cores)]

    def select_executor(self, job) -> str:
        return "local"
