"""A plan description (configs/plans/*.yaml): the sky, the workload, the sites and links, and the
campaign whose steps and hops the plan fills in. Validated like every configuration: one
`ConfigError` naming the file, the key path and what to do.

A plan names a template campaign (its pipeline, steps, hops, QA and BPS settings are kept as
they are); the planner decides its tracts per site, tracts_per_group and qa.overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from drp_campaign.config import CampaignConfig, ConfigError, SiteConfig, load_campaign, name_list
from drp_campaign.config.checks import ancestors_of, max_map_length
from drp_campaign.config.errors import KeyProblem, clip
from drp_campaign.config.models import MAX_GB_PER_CORE, MAX_STORAGE_TB, MAX_TRACT, ConfigModel, Text
from drp_campaign.config.names import CAMPAIGN_NAME
from drp_campaign.config.reading import absolute_path, read_mapping, validate_mapping
from drp_campaign.graph import build_graph

SHARE_SUM_TOLERANCE = 1e-6
MAX_OVERLAP = 0.5  # half the tracts processed twice: beyond that the QA costs more than it checks
Fraction = Annotated[float, Field(ge=0, le=1)]


class SkyMapSpec(ConfigModel):
    """A rings sky map (skymap.py) and the campaign's footprint on it."""

    rings: int = Field(ge=1, le=1000)  # lsst_cells_v1: 120
    ra_start_deg: float = Field(default=0.0, ge=0, lt=360)
    # The footprint: tracts whose centres lie in [dec_min_deg, dec_max_deg], the first
    # max_tracts of them by id (south to north) when given.
    dec_min_deg: float = Field(default=-90.0, ge=-90, le=90)
    dec_max_deg: float = Field(default=90.0, ge=-90, le=90)
    max_tracts: int | None = Field(default=None, gt=0, le=MAX_TRACT)
    # Visits per unit area by declination of the tract centre, {dec_deg: relative density},
    # linear in between and flat beyond; empty: uniform.
    visit_density: dict[float, Annotated[float, Field(ge=0, le=1e6)]] = Field(default={}, max_length=100)


class Workload(ConfigModel):
    """The campaign's totals; each tract gets its share by its visits (area x visit density)."""

    visits: int = Field(gt=0, le=10**9)
    core_hours: float = Field(gt=0, le=1e12)
    input_tb: float = Field(default=0, ge=0, le=MAX_STORAGE_TB)  # raws, calibrations: placed at the sites
    scratch_tb: float = Field(default=0, ge=0, le=MAX_STORAGE_TB)  # intermediates kept at the site that made them
    output_tb: float = Field(default=0, ge=0, le=MAX_STORAGE_TB)  # products: home to the hub, then tape
    days: float | None = Field(default=None, gt=0, le=36_500)  # the time allotted; a longer plan is refused


class StepWork(ConfigModel):
    """One campaign step's part of the workload."""

    cost: Fraction  # of the core-hours
    output: Fraction = 0.0  # of output_tb: products, taken home by the first fan_in hop after the step
    scratch: Fraction = 0.0  # of scratch_tb: kept at the site until the campaign ends
    # Memory a core of this step's work needs; a site with less per core holds cores idle for it.
    # Unset: the campaign's bps request for the step (request_memory_mb / request_cpus).
    memory_gb: float | None = Field(default=None, gt=0, le=MAX_GB_PER_CORE)


class Groups(ConfigModel):
    """How a site's tracts are cut into groups (one BPS submission per step and group)."""

    core_hours: float = Field(gt=0, le=1e9)  # the work of a sensible submission
    overhead_hours: float = Field(default=0.0, ge=0, le=1000)  # per step and site: submit, quantum graph
    max_map_length: int | None = Field(default=None, gt=0, le=1_000_000)  # unset: Airflow's (config.checks)


class PlanDocument(ConfigModel):
    loader_filled: ClassVar[frozenset[str]] = frozenset({"file"})

    file: Path = Field(strict=False)
    name: str  # of the campaign written
    description: Text
    campaign: Path = Field(strict=False)  # the template campaign, relative to this file
    sites_file: Path | None = Field(default=None, strict=False)  # relative to this file; default configs/sites.yaml
    sites: list[str] = Field(min_length=1, max_length=100)  # in the order they take the sky along the curve
    # capacity: by cores (and memory per core), storage and the simulated timeline; fixed: the
    # sites file's work_share; or {site: share}, normalised.
    shares: Literal["capacity", "fixed"] | dict[str, Annotated[float, Field(gt=0, le=1e6)]] = "capacity"
    skymap: SkyMapSpec
    workload: Workload
    steps: dict[str, StepWork] = Field(min_length=1, max_length=200)
    hops: dict[str, Annotated[float, Field(ge=0, le=MAX_STORAGE_TB)]] = {}  # TB a fan_in/fan_out moves besides products
    links_gbps: dict[str, Annotated[float, Field(gt=0, le=1e6)]] = Field(min_length=1, max_length=100)
    tape_gbps: float = Field(gt=0, le=1e6)  # the hub's disk -> tape
    # after_site: a site's products go home after its last step (what the DAG's return hop does);
    # per_group: each group's products go home as they are made (the DAG does not do this yet).
    products_home: Literal["after_site", "per_group"] = "after_site"
    overlap: float = Field(default=0.0, ge=0, le=MAX_OVERLAP)  # fraction of tracts processed twice (site QA)
    groups: Groups

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not CAMPAIGN_NAME.accepts(value):
            raise KeyProblem((), CAMPAIGN_NAME.problem(value, "it names the campaign written", "is not a slug: use"))
        return value

    @field_validator("links_gbps")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        for key in value:
            if key.count("-") != 1:
                raise KeyProblem((key,), f"{clip(key)} is not a link; name it SITE-SITE, e.g. USDF-FRDF")
        return value


@dataclass(frozen=True)
class Plan:
    """A checked plan: its document, the template campaign and the sites it plans for."""

    doc: PlanDocument
    campaign: CampaignConfig  # the template
    sites: dict[str, SiteConfig]  # the plan's sites, in its order
    hub: str
    shares: dict[str, float] | None  # fixed shares (normalised), or None: capacity-aware
    carriers: dict[str, str]  # step writing products -> the fan_in hop that takes them home

    @property
    def file(self) -> Path:
        return self.doc.file

    def link_gbps(self, a: str, b: str) -> float:
        links = self.doc.links_gbps
        return links.get(f"{a}-{b}") or links[f"{b}-{a}"]

    def memory_gb(self, step: str) -> float:
        """Memory per core of work of STEP: the plan's, else the campaign's BPS request."""
        own = self.doc.steps[step].memory_gb
        if own is not None:
            return own
        request = self.campaign.bps.for_step(step)
        return request.request_memory_mb / 1024 / request.request_cpus

    def inflation(self, site: str, step: str) -> float:
        """Cores a core of STEP's work holds at SITE: more than 1 where memory per core is short."""
        return max(1.0, self.memory_gb(step) / self.sites[site].gb_per_core)

    def with_shares(self, mode: Literal["capacity", "fixed"]) -> Plan:
        """This plan, capacity-aware or with the sites file's work shares."""
        if mode == "capacity":
            return replace(self, shares=None)
        total = math.fsum(cfg.work_share for cfg in self.sites.values())
        return replace(self, shares={s: cfg.work_share / total for s, cfg in self.sites.items()})

    def map_limit(self) -> int:
        return self.doc.groups.max_map_length or max_map_length()


def load_plan(path: str | Path, sites_path: str | Path | None = None) -> Plan:
    """Read and check a plan file, its template campaign and the sites file (SITES_PATH overrides
    the plan's sites_file)."""
    file = absolute_path(path)
    doc = validate_mapping(PlanDocument, read_mapping(file), file, {"file": file})
    if sites_path is None and doc.sites_file is not None:
        sites_path = file.parent / doc.sites_file
    template = absolute_path(file.parent / doc.campaign)
    campaign = load_campaign(template, sites_path)
    return _check(doc, campaign)


def _check(doc: PlanDocument, campaign: CampaignConfig) -> Plan:
    file = doc.file
    known = campaign.sites_config.sites
    for i, site in enumerate(doc.sites):
        if site not in known:
            raise ConfigError(
                file, f"sites[{i}]", f"unknown site {clip(site)}; use one of {name_list(known)} (the sites file)"
            )
        if site in doc.sites[:i]:
            raise ConfigError(file, f"sites[{i}]", f"{site} is listed twice; name each site once")
    hub = campaign.hub()
    if hub not in doc.sites:
        raise ConfigError(file, "sites", f"the hub {hub} must be one of the sites: global steps and every hop use it")
    if doc.skymap.dec_min_deg > doc.skymap.dec_max_deg:
        raise ConfigError(
            file,
            "skymap",
            f"dec_min_deg {doc.skymap.dec_min_deg:g} is above dec_max_deg {doc.skymap.dec_max_deg:g}; swap them",
        )
    _check_steps(doc, campaign)
    for hop, volume in doc.hops.items():
        if hop not in campaign.hops or campaign.hops[hop].direction not in ("fan_in", "fan_out"):
            movers = [n for n, h in campaign.hops.items() if h.direction in ("fan_in", "fan_out")]
            raise ConfigError(
                file,
                f"hops.{hop}",
                f"not a fan_in or fan_out hop of {campaign.file.name}; use one of {name_list(movers)}",
            )
    for key in doc.links_gbps:
        for end in key.split("-"):
            if end not in doc.sites:
                raise ConfigError(
                    file, f"links_gbps.{key}", f"{clip(end)} is not one of the plan's sites ({name_list(doc.sites)})"
                )
    for site in doc.sites:
        if site != hub and f"{hub}-{site}" not in doc.links_gbps and f"{site}-{hub}" not in doc.links_gbps:
            raise ConfigError(
                file, "links_gbps", f"no link between {hub} and {site}; add {hub}-{site}: <Gbps each way>"
            )
    sites = {site: known[site] for site in doc.sites}
    return Plan(doc, campaign, sites, hub, _fixed_shares(doc, sites), _carriers(doc, campaign))


def _carriers(doc: PlanDocument, campaign: CampaignConfig) -> dict[str, str]:
    """Each step's products go home with the first fan_in hop after it."""
    ancestors = ancestors_of(campaign)
    fan_ins = [
        name
        for name in build_graph(campaign).stages
        if name in campaign.hops and campaign.hops[name].direction == "fan_in"
    ]
    carriers = {}
    for step, work in doc.steps.items():
        if not work.output:
            continue
        hop = next((name for name in fan_ins if step in ancestors[name]), None)
        if hop is None:
            raise ConfigError(
                doc.file,
                f"steps.{step}.output",
                f"{step} writes products but no fan_in hop of {campaign.file.name} runs after it to take them home; "
                "set output to 0 or add the hop to the campaign",
            )
        carriers[step] = hop
    return carriers


def _check_steps(doc: PlanDocument, campaign: CampaignConfig) -> None:
    file = doc.file
    for step in doc.steps:
        if step not in campaign.steps:
            raise ConfigError(
                file, f"steps.{step}", f"not a step of {campaign.file.name}; use one of {name_list(campaign.steps)}"
            )
    missing = [step for step in campaign.steps if step not in doc.steps]
    if missing:
        raise ConfigError(file, "steps", f"no work given for {name_list(missing)}; add each with its cost")
    for step, work in doc.steps.items():
        if campaign.steps[step].scope == "global" and (work.output or work.scratch):
            raise ConfigError(
                file,
                f"steps.{step}",
                "a global step's outputs stay at the hub or go out by a fan_out hop: give them in hops, "
                "not as output or scratch",
            )
    totals = {"cost": 1.0, "output": doc.workload.output_tb, "scratch": doc.workload.scratch_tb}
    for key, total in totals.items():
        share = math.fsum(getattr(work, key) for work in doc.steps.values())
        if total and abs(share - 1) > SHARE_SUM_TOLERANCE:
            raise ConfigError(file, f"steps.*.{key}", f"the steps' {key} shares sum to {share:.6g}, not 1; adjust them")


def _fixed_shares(doc: PlanDocument, sites: dict[str, SiteConfig]) -> dict[str, float] | None:
    if doc.shares == "capacity":
        return None
    given = {site: cfg.work_share for site, cfg in sites.items()} if doc.shares == "fixed" else doc.shares
    for site in given:
        if site not in sites:
            raise ConfigError(doc.file, f"shares.{site}", f"not one of the plan's sites ({name_list(sites)})")
    for site in sites:
        if site not in given:
            raise ConfigError(doc.file, "shares", f"no share for {site}; give every site of the plan a share")
    total = math.fsum(given.values())
    return {site: given[site] / total for site in sites}
