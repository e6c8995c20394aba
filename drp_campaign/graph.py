"""The campaign as a graph of stages, and the names everything in a campaign run gets.

Airflow-free: the DAG factory renders this graph as tasks; the stack side and the ledger use the
same names. A stage is a step (run per site, or once at the hub) or a hop (data moved between the
hub and the other sites). Which stages exist and how they depend on each other is configuration.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Literal

from .config import CampaignConfig
from .hops import Direction

StageKind = Literal["step", "hop"]


@dataclass(frozen=True)
class Stage:
    """One node of the campaign graph."""

    name: str
    kind: StageKind
    scope: Literal["site", "global"] | Direction  # a hop's is its direction (hops.py)
    after: tuple[str, ...]
    site: str | None = None  # where a global step runs
    dataset_types: tuple[str, ...] = ()  # what a hop moves

    @property
    def is_site_step(self) -> bool:
        return self.kind == "step" and self.scope == "site"

    @property
    def is_global_step(self) -> bool:
        return self.kind == "step" and self.scope == "global"


@dataclass(frozen=True)
class WorkGroup:
    """A slice of one step at one site: the tracts one pipetask/BPS run processes."""

    label: str
    tracts: tuple[int, ...]

    @property
    def overlap(self) -> bool:
        """Another site's tract, processed here too for the site-independence QA."""
        return is_overlap_label(self.label)

    def as_xcom(self) -> dict:
        return {"label": self.label, "tracts": list(self.tracts)}


OVERLAP_PREFIX = "overlap-t"


def is_overlap_label(label: str) -> bool:
    return label.startswith(OVERLAP_PREFIX)


def overlap_group(tract: int) -> WorkGroup:
    """The group of one overlap tract at its second site (one tract per group, whatever the
    campaign's tracts_per_group: each is compared on its own)."""
    return WorkGroup(label=f"{OVERLAP_PREFIX}{tract}", tracts=(tract,))


@dataclass
class CampaignGraph:
    campaign: CampaignConfig
    stages: dict[str, Stage] = field(default_factory=dict)  # in topological order

    @property
    def hub(self) -> str:
        return self.campaign.hub()

    def remote_sites(self) -> list[str]:
        """Sites that exchange data with the hub (every campaign site except the hub)."""
        return [s for s in self.campaign.campaign_sites() if s != self.hub]


def build_graph(campaign: CampaignConfig) -> CampaignGraph:
    """Turn the validated campaign into stages in dependency order."""
    raw: dict[str, Stage] = {}
    for step in campaign.steps.values():
        raw[step.name] = Stage(
            name=step.name,
            kind="step",
            scope=step.scope,
            after=tuple(step.after),
            site=(step.site or campaign.hub()) if step.scope == "global" else None,
        )
    for hop in campaign.hops.values():
        raw[hop.name] = Stage(
            name=hop.name,
            kind="hop",
            scope=hop.direction,
            after=tuple(hop.after),
            dataset_types=tuple(hop.dataset_types),
        )
    graph = CampaignGraph(campaign=campaign)
    placed: set[str] = set()
    while len(placed) < len(raw):
        ready = [n for n, s in raw.items() if n not in placed and set(s.after) <= placed]
        if not ready:  # config validation refuses cycles; this guards direct callers
            raise ValueError(f"campaign {campaign.name}: dependency cycle among {sorted(set(raw) - placed)}")
        for name in ready:
            graph.stages[name] = raw[name]
            placed.add(name)
    return graph


def run_selection(campaign: CampaignConfig, choices: dict) -> tuple[list[str], list[int]]:
    """A run's sites and tracts as its trigger form's CHOICES (its conf, or the params) name them:
    the campaign's sites when none are named; tracts as numbers (none: all of them)."""
    sites = list(choices.get("sites") or campaign.campaign_sites())
    tracts = [int(t) for t in (choices.get("tracts") or [])]
    return sites, tracts


def plan_groups(
    campaign: CampaignConfig,
    site: str,
    selected_tracts: list[int] | None = None,
    moved: dict[int, str] | None = None,
) -> list[WorkGroup]:
    """Split a site's tracts into groups of `tracts_per_group`, then one group per overlap tract it
    processes for the site-independence QA; empty when none is selected.

    MOVED (tract -> site, the run's failovers: drp_campaign/failover.py) takes a tract from its own
    site's groups to the site it was moved to, in a group named after the group it left
    (`FRDF-g000` at UKDF_RAL): its outputs are the new site's, and the names never clash with that
    site's own groups. A tract moved to the site that would process it a second time for the QA is
    no longer processed twice there."""
    moved = moved or {}
    groups = [
        WorkGroup(g.label, kept)
        for g in _own_groups(campaign, site, selected_tracts)
        if (kept := tuple(t for t in g.tracts if moved.get(t, site) == site))
    ]
    sources = {campaign.tract_site(t) for t, to in moved.items() if to == site}  # only these sites' groups
    for other in (s for s in campaign.campaign_sites() if s in sources and s != site):
        groups += [
            WorkGroup(f"{other}-{g.label}", here)
            for g in _own_groups(campaign, other, selected_tracts)
            if (here := tuple(t for t in g.tracts if moved.get(t) == site))
        ]
    wanted = set(selected_tracts or ())
    overlap = [t for t in campaign.overlap_tracts_at(site) if moved.get(t) != site and (not wanted or t in wanted)]
    return groups + [overlap_group(t) for t in overlap]


def _own_groups(campaign: CampaignConfig, site: str, selected_tracts: list[int] | None) -> list[WorkGroup]:
    """SITE's own tracts (those selected) in groups of tracts_per_group, labelled g000, g001, ..."""
    tracts = campaign.site_tracts(site)
    if selected_tracts:
        wanted = set(selected_tracts)
        tracts = [t for t in tracts if t in wanted]
    size = campaign.tracts_per_group
    return [
        WorkGroup(label=f"g{i // size:03d}", tracts=tuple(tracts[i : i + size])) for i in range(0, len(tracts), size)
    ]


GLOBAL_GROUP = WorkGroup(label="all", tracts=())


# A key is in every Butler file path twice; Airflow's own run ids give ~31 characters.
RUN_KEY_MAX = 64


def run_key(dag_run_id: str) -> str:
    """A campaign run's id made short and safe for collection, file and Rucio DID names.

    Airflow run ids hold ':' '+' and '.', awkward in paths, and the key appears twice in every
    Butler file path (directory and file name), which Rucio caps at 250 characters: keep
    milliseconds, drop a UTC offset (a '+' that went through a URL query arrives as ' ').

    The mapping is not injective (`c.a` and `c:a` give `c-a`): the ledger records which run id
    holds a key and refuses another (Ledger.claim_run_key). A run id with nothing usable in it
    gets a key made from its hash, never an empty one; a long one is cut to RUN_KEY_MAX.
    """
    key = re.sub(r"(T\d\d:\d\d:\d\d\.\d{3})\d*", r"\1", dag_run_id)
    key = re.sub(r"[+ ]00:00$", "", key)
    key = re.sub(r"[^A-Za-z0-9_-]+", "-", key).strip("-")
    digest = hashlib.sha256(dag_run_id.encode()).hexdigest()[:12]
    if len(key) > RUN_KEY_MAX:  # a long custom run id: its start, and a hash of all of it
        key = f"{key[: RUN_KEY_MAX - 13].rstrip('-_')}-{digest}"
    return key or f"run-{digest}"


def site_chain(campaign: CampaignConfig, key: str) -> str:
    """The CHAINED collection at each site that holds this run's inputs and everything made so far."""
    return f"{campaign.output_prefix}/{key}"


def output_run(campaign: CampaignConfig, key: str, site: str, step: str, group: str) -> str:
    """The RUN collection one group of one step writes to; stable across retries. An overlap
    group's is under the run's overlap root, out of every pattern and chain below but its own."""
    if is_overlap_label(group):
        return f"{overlap_chain(campaign, key, site)}/{step}/{group}"
    return f"{campaign.output_prefix}/{key}/{site}/{step}/{group}"


def overlap_root(campaign: CampaignConfig, key: str) -> str:
    """Where a run's overlap outputs live, at their site and once returned to the hub. Never a
    run's own prefix: run keys hold no '.'; so the site chains, the hops' site patterns and the
    tape hop's campaign pattern never see the second copy of a tract."""
    return f"{campaign.output_prefix}/{key}.overlap"


def overlap_chain(campaign: CampaignConfig, key: str, site: str) -> str:
    """The CHAINED collection an overlap group at SITE reads: its own RUNs first, then the site's
    chain (inputs, the fan-out's calibration). At the hub, its own RUNs hide the primary site's
    copies of the same tract that the hub holds."""
    return f"{overlap_root(campaign, key)}/{site}"


def overlap_runs_pattern(campaign: CampaignConfig, key: str, site: str) -> str:
    """Glob matching every RUN SITE made for overlap tracts in this campaign run."""
    return f"{overlap_chain(campaign, key, site)}/*"


def hop_selections(
    campaign: CampaignConfig,
    key: str,
    hop: str,
    source: str,
    selected_tracts: list[int] | None = None,
    moved: dict[int, str] | None = None,
) -> list[tuple[str, list[str]]]:
    """What a hop (not the place hop) sends from SOURCE, as (RUN glob, dataset types) pairs.

    The tape hop archives everything the hub holds for the run; a site sends what it made. A
    fan-in also brings home the source's copy of its overlap tracts, of the types the site QA
    compares only; a site that processes only overlap tracts in this run sends only those (and
    nothing, when the hop carries none of the compared types)."""
    hop_config = campaign.hops[hop]
    types = list(hop_config.dataset_types)
    if hop_config.direction == "to_tape":
        return [(campaign_runs_pattern(campaign, key), types)]
    if hop_config.direction != "fan_in":
        return [(site_runs_pattern(campaign, key, source), types)]
    groups = plan_groups(campaign, source, selected_tracts, moved)
    selections = [(site_runs_pattern(campaign, key, source), types)] if any(not g.overlap for g in groups) else []
    compared = [t for t in types if t in campaign.qa.compare]
    if compared and any(g.overlap for g in groups):
        selections.append((overlap_runs_pattern(campaign, key, source), compared))
    return selections


def export_hop_args(selections: list[tuple[str, list[str]]]) -> list[str]:
    """The stack side's `export-hop` arguments for SELECTIONS (hop_selections)."""
    (runs, types), *also = selections
    args = ["--collections", runs, "--dataset-types", ",".join(types)]
    for pattern, more in also:
        args += ["--also", f"{pattern}={','.join(more)}"]
    return args


def group_chain(campaign: CampaignConfig, key: str, site: str, group: str) -> str:
    """The chain a group of a step reads and joins once it succeeds."""
    return overlap_chain(campaign, key, site) if is_overlap_label(group) else site_chain(campaign, key)


def site_runs_pattern(campaign: CampaignConfig, key: str, site: str) -> str:
    """Glob matching every RUN a site produced in this campaign run (what a hop may send)."""
    return f"{campaign.output_prefix}/{key}/{site}/*"


def campaign_runs_pattern(campaign: CampaignConfig, key: str) -> str:
    """Glob matching every RUN of this campaign run at a site, whichever site made it (the hub
    holds its own and what the others sent, under the same names)."""
    return f"{campaign.output_prefix}/{key}/*"
