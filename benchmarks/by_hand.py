"""The 3x3 driven the way it was run by hand: a plain script, no Airflow (the baseline of #11).

The same stack commands the operators call (check-inputs, export-inputs, export-hop, bps-submit,
bps-report, ingest-hop), the same `bps submit`, the same Rucio calls (register, replicate, wait
for the rule), through the same warm stack servers; sites in parallel threads, each step's
groups in parallel, the global steps and the tape hop after every site got there. What it leaves
out, because a person running it by hand would: the software check, the ledger and its verify
tasks, the source-copy hold rules, the releases and the report. It does the site QA (overlap
tracts processed at a second site, compared at the hub), as a person checking results would.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from drp_campaign import bps as bpsrec
from drp_campaign import graph, settings
from drp_campaign.config import CampaignConfig
from drp_campaign.hops import hop_dataset_did, hop_ends, idac_rse, way
from drp_campaign.stack import run_stack
from drp_campaign.transfer import transfer_service
from drp_campaign.transfer.base import Manifest

POLL_S = 0.5  # as the operators' inline waits


class ByHand:
    def __init__(self, campaign: CampaignConfig, key: str):
        self.campaign = campaign
        self.key = key
        self.graph = graph.build_graph(campaign)
        self.hub = self.graph.hub
        self.sites = campaign.campaign_sites()
        self.done = {name: threading.Event() for name, s in self.graph.stages.items() if not self._per_site(s)}
        self.dir = settings.work_dir() / "by-hand" / key
        self.log: list[tuple[float, str]] = []
        self.t0 = 0.0

    @staticmethod
    def _per_site(stage) -> bool:
        return stage.is_site_step or (stage.kind == "hop" and way(stage.scope).per_site)

    def _say(self, text: str) -> None:
        self.log.append((time.monotonic() - self.t0, text))

    # -- the pieces -----------------------------------------------------------------------------
    def stack(self, site: str, subcommand: str, args: list[str]) -> dict:
        return run_stack(self.campaign.sites_config.sites[site], subcommand, args, log=lambda line: None)

    def repo(self, site: str) -> str:
        return str(self.campaign.sites_config.sites[site].butler_repo_path())

    def service(self):
        from drp_campaign.transfer.rucio import rucio_client

        info = json.loads((settings.work_dir() / "rucio" / "connection.json").read_text())
        return transfer_service("rucio", rucio_client(info))

    def step_group(self, site: str, step: str, group: graph.WorkGroup) -> None:
        run_dir = self.dir / "bps" / site / step / group.label
        args = [
            "--campaign",
            str(self.campaign.file),
            "--site",
            site,
            "--repo",
            self.repo(site),
            "--step",
            step,
            "--group",
            group.label,
            "--key",
            self.key,
            "--chain",
            graph.group_chain(self.campaign, self.key, site, group.label),
            "--run-dir",
            str(run_dir),
        ]
        if group.tracts:
            args += ["--tracts", ",".join(map(str, group.tracts))]
        self.stack(site, "bps-submit", args)
        while bpsrec.local_state(run_dir) == "RUNNING":
            time.sleep(POLL_S)
        result = self.stack(site, "bps-report", ["--campaign", str(self.campaign.file), "--run-dir", str(run_dir)])
        if result["status"] != "succeeded":
            raise RuntimeError(f"{site} {step} {group.label}: {result['status']}: {result['failed_quanta'][:3]}")
        self._say(f"{site} {step} {group.label}")

    def step(self, site: str, step: str) -> None:
        groups = (
            graph.plan_groups(self.campaign, site)
            if self.campaign.steps[step].scope == "site"
            else [graph.GLOBAL_GROUP]
        )
        with ThreadPoolExecutor(len(groups)) as pool:
            list(pool.map(lambda g: self.step_group(site, step, g), groups))

    def move(
        self,
        hop: str,
        source: str,
        dest_rse: str,
        *,
        selection: tuple[str, list[str]],
        dest_site: str | None,
        did_site: str,
        chain: str = "",
    ) -> None:
        """Export at the source, register, replicate, wait for the rule, ingest at the destination."""
        service = self.service()
        manifest = self.dir / "manifests" / hop / f"{did_site}-{dest_rse}.json"
        subcommand, args = selection
        self.stack(source, subcommand, [*args, "--repo", self.repo(source), "--manifest", str(manifest)])
        did = hop_dataset_did(self.campaign, self.key, hop, did_site)  # the operators' own name for it
        service.register(did, self.campaign.sites_config.sites[source].rucio.disk_rse, Manifest.read(manifest))
        rule = service.replicate(did, dest_rse)
        while (status := service.rule_status(rule)).state != "OK":
            if status.state in ("STUCK", "SUSPENDED"):
                raise RuntimeError(f"{hop} {did} -> {dest_rse}: rule {rule} {status.state}")
            time.sleep(POLL_S)
        if dest_site:
            registered = manifest.with_suffix(".registered.json")
            service.manifest(did).write(registered)
            self.stack(
                dest_site,
                "ingest-hop",
                [
                    "--repo",
                    self.repo(dest_site),
                    "--manifest",
                    str(registered),
                    "--replica-dir",
                    str(service.replica_dir(dest_rse)),
                    "--chain",
                    chain,
                    "--not-chained",
                    graph.overlap_runs_pattern(self.campaign, self.key, "*"),
                ],
            )
        self._say(f"{hop} {did_site} -> {dest_rse}")

    def hop(self, stage, site: str) -> None:
        ends = hop_ends(self.campaign, stage.name, site)  # the pair as the operators see it
        if stage.scope == "place":  # inputs go into collections of their own, not the run's chain
            tracts = ",".join(str(t) for g in graph.plan_groups(self.campaign, site) for t in g.tracts)
            selection = ("export-inputs", ["--campaign", str(self.campaign.file), "--site", site, "--tracts", tracts])
            chain = ""
        else:  # what the source made, and the second copy of its overlap tracts (site QA)
            selections = graph.hop_selections(self.campaign, self.key, stage.name, ends.source)
            if not selections:
                return
            selection = ("export-hop", graph.export_hop_args(selections))
            chain = graph.site_chain(self.campaign, self.key)
        self.move(
            stage.name,
            ends.source,
            ends.destination_rse,
            selection=selection,
            dest_site=ends.destination,
            did_site=ends.dataset_end,
            chain=chain,
        )

    # -- the campaign ---------------------------------------------------------------------------
    def site_thread(self, site: str) -> None:
        checked = False
        for stage in self.graph.stages.values():
            for dep in stage.after:
                if dep in self.done:
                    self.done[dep].wait()
            if stage.is_site_step:
                if not checked:  # what check_inputs does: inputs counted, the run's chain made
                    groups = graph.plan_groups(self.campaign, site)
                    tracts = ",".join(str(t) for g in groups for t in g.tracts)
                    overlap = ["--overlap-chain", graph.overlap_chain(self.campaign, self.key, site)]
                    self.stack(
                        site,
                        "check-inputs",
                        [
                            "--campaign",
                            str(self.campaign.file),
                            "--site",
                            site,
                            "--repo",
                            self.repo(site),
                            "--tracts",
                            tracts,
                            "--chain",
                            graph.site_chain(self.campaign, self.key),
                            *(overlap if any(g.overlap for g in groups) else []),
                        ],
                    )
                    checked = True
                self.step(site, stage.name)
            elif self._per_site(stage) and site != self.hub:
                self.hop(stage, site)
            if (stage.name, site) in self.arrived:
                self.arrived[(stage.name, site)].set()

    def global_thread(self) -> None:
        for stage in self.graph.stages.values():
            if self._per_site(stage):
                continue
            for dep in stage.after:
                for site in self.sites:
                    self.arrived[(dep, site)].wait() if (dep, site) in self.arrived else self.done[dep].wait()
            if stage.is_global_step:
                self.step(stage.site, stage.name)
            else:  # to tape, then each IDAC
                hop = self.campaign.hops[stage.name]
                selection = (
                    "export-hop",
                    [
                        "--collections",
                        graph.campaign_runs_pattern(self.campaign, self.key),
                        "--dataset-types",
                        ",".join(stage.dataset_types),
                    ],
                )
                ends = hop_ends(self.campaign, stage.name, self.hub)  # nothing is ingested at tape
                self.move(
                    stage.name,
                    ends.source,
                    ends.destination_rse,
                    selection=selection,
                    dest_site=None,
                    did_site=ends.dataset_end,
                )
                service = self.service()
                for idac in hop.idacs:
                    did = hop_dataset_did(self.campaign, self.key, stage.name, ends.dataset_end)
                    rule = service.replicate(did, idac_rse(self.campaign, idac))
                    while (state := service.rule_status(rule).state) != "OK":
                        if state in ("STUCK", "SUSPENDED"):
                            raise RuntimeError(f"{stage.name} -> {idac}: rule {rule} {state}")
                        time.sleep(POLL_S)
                    self._say(f"{stage.name} -> {idac}")
            self.done[stage.name].set()

    def site_qa_thread(self) -> None:
        """What site_qa does, once every fan-in bringing a compared type home has arrived."""
        compared = set(self.campaign.qa.compare)
        for name, stage in self.graph.stages.items():
            if stage.scope == "fan_in" and compared & set(stage.dataset_types):
                for site in self.sites:
                    self.arrived[(name, site)].wait()
        report_dir = str(self.dir / "site-qa")
        args = ["--campaign", str(self.campaign.file), "--repo", self.repo(self.hub), "--key", self.key]
        result = self.stack(self.hub, "site-qa", [*args, "--report-dir", report_dir])
        if not result["ok"]:
            raise RuntimeError(f"site QA failed:\n{result['failure_message']}")
        self._say("site_qa")

    def run(self) -> float:
        """Run the campaign; returns its wall time in seconds."""
        self.arrived = {
            (n, s): threading.Event() for n, st in self.graph.stages.items() if self._per_site(st) for s in self.sites
        }
        self.t0 = time.monotonic()
        errors: list[BaseException] = []

        def guarded(target, *args):
            try:
                target(*args)
            except BaseException as exc:  # noqa: BLE001 - reported after the join
                errors.append(exc)
                for event in [*self.done.values(), *self.arrived.values()]:
                    event.set()  # let the other threads finish instead of waiting forever

        threads = [threading.Thread(target=guarded, args=(self.site_thread, s)) for s in self.sites]
        threads.append(threading.Thread(target=guarded, args=(self.global_thread,)))
        if self.campaign.qa.overlap:
            threads.append(threading.Thread(target=guarded, args=(self.site_qa_thread,)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return time.monotonic() - self.t0


def main() -> None:
    import argparse

    from drp_campaign.config import load_campaign

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("campaign")
    parser.add_argument("--key", default=f"by-hand-{int(time.time())}")
    args = parser.parse_args()
    runner = ByHand(load_campaign(args.campaign), args.key)
    wall = runner.run()
    for t, what in runner.log:
        print(f"  {t:7.1f} s  {what}")
    print(f"by hand: {wall:.1f} s ({Path(runner.dir)})")


if __name__ == "__main__":
    main()
