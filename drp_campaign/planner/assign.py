"""Tracts to sites: contiguous runs along a ring-serpentine curve, sized by share.

The footprint's tracts are ordered ring by ring from the south, alternately east- and westwards
(a serpentine: consecutive tracts are neighbours, also across rings), and each tract weighs its
share of the campaign's visits (area x visit density). The curve is cut into one run per site, in
the plan's site order, at the cumulative shares: a site's tracts are one connected piece and
sites meet along few boundaries (rings, as the technote assigns them).

Shares are fixed (the plan's), or capacity-aware: start from each site's cores (per the memory a
core of work needs there), simulate, and move each site's share so that all would finish their
own work and transfers together: with slack_s the hours a site spends on what is not its own
tracts (its transfers and overlap tracts; not the global steps, which every site waits for) and H_s the core-hours a
whole campaign would hold there, x_s = cores_s (T - slack_s) / H_s, T chosen so that the shares
sum to 1. (Waiting at a barrier is left out: it depends on the others and would make the rounds
swing; what it costs shows in the simulation.) A site (not the hub)
whose storage peak would pass its quota is held at the share that fits (its peak taken as
proportional to its share) and the rest is shared among the others (water filling). A few rounds
converge. The hub holds every input and, until tape, everyone's products: its peak is checked,
not planned around (check_fits names what to raise).

Overlap tracts (the site-independence QA) are taken on the boundaries: tracts with a neighbour at
another site, processed a second time there; further layers inwards when the boundary holds too few.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from drp_campaign.config import ConfigError
from drp_campaign.errors import DrpError

from .plan_config import Plan
from .simulate import Load, Outage, Simulation, simulate
from .skymap import SkyMap, footprint, rings_sky_map

ROUNDS = 8
CONVERGED = 1e-4  # largest change of a share between rounds
STORAGE_MARGIN = 0.995  # a capped site's share keeps its peak this far under the quota


@dataclass(frozen=True)
class Sky:
    """The plan's tracts: geometry, each tract's fraction of the visits, and the curve order."""

    map: SkyMap
    weight: np.ndarray  # fraction of the campaign's visits; sums to 1
    order: np.ndarray  # positions of the tracts along the curve


@dataclass(frozen=True)
class Assignment:
    sky: Sky
    sites: list[str]
    site_of: np.ndarray  # per tract (position): index into sites
    overlap: dict[int, str]  # tract id -> the second site that processes it
    tracts_per_group: int

    def tracts(self, site: str) -> list[int]:
        return sorted(self.sky.map.ids[self.site_of == self.sites.index(site)].tolist())

    def fraction(self, site: str) -> float:
        return float(self.sky.weight[self.site_of == self.sites.index(site)].sum())

    def load(self) -> Load:
        position = {int(t): i for i, t in enumerate(self.sky.map.ids)}
        overlap = dict.fromkeys(self.sites, 0.0)
        for tract, second in self.overlap.items():
            overlap[second] += float(self.sky.weight[position[tract]])
        return Load({s: self.fraction(s) for s in self.sites}, overlap)


@dataclass(frozen=True)
class Planned:
    plan: Plan
    assignment: Assignment
    simulation: Simulation
    targets: dict[str, float]  # the shares asked of the cut
    capped: dict[str, float]  # sites held back by their storage: the share that fits

    @property
    def kind(self) -> str:
        return "capacity-aware" if self.plan.shares is None else "fixed"


def make_sky(plan: Plan) -> Sky:
    spec = plan.doc.skymap
    sky = footprint(rings_sky_map(spec.rings, spec.ra_start_deg), spec.dec_min_deg, spec.dec_max_deg, spec.max_tracts)
    if len(sky) == 0:
        raise ConfigError(
            plan.file,
            "skymap",
            f"no tract of the {spec.rings}-ring sky map has its centre in dec [{spec.dec_min_deg:g}, "
            f"{spec.dec_max_deg:g}] deg; widen the range (ring centres are {180 / (spec.rings + 1):.3g} deg apart)",
        )
    density = np.ones(len(sky))
    if spec.visit_density:
        decs = sorted(spec.visit_density)
        density = np.interp(np.degrees(sky.dec), decs, [spec.visit_density[d] for d in decs])
    weight = sky.area * density
    if weight.sum() <= 0:
        raise ConfigError(plan.file, "skymap.visit_density", "the visit density is 0 on every tract; raise it")
    # Serpentine: ring by ring from the south, RA ascending in even rings, descending in odd ones.
    ra = (sky.ra - math.radians(spec.ra_start_deg)) % (2 * math.pi)
    order = np.lexsort((np.where(sky.ring % 2 == 0, ra, -ra), sky.ring))
    return Sky(sky, weight / weight.sum(), order)


def cut(sky: Sky, sites: list[str], shares: dict[str, float]) -> np.ndarray:
    """Each tract (position) to the site whose stretch of the cumulative shares holds its middle."""
    w = sky.weight[sky.order]
    middle = np.cumsum(w) - w / 2
    bounds = np.cumsum([shares[s] for s in sites])[:-1]
    site_of = np.empty(len(w), dtype=int)
    site_of[sky.order] = np.searchsorted(bounds, middle, side="right")
    return site_of


def choose_overlap(sky: Sky, sites: list[str], site_of: np.ndarray, fraction: float) -> dict[int, str]:
    """round(FRACTION x tracts) tracts (at least one when FRACTION > 0), nearest the boundaries
    first and spread along the curve, each with the other site nearest to it."""
    count = max(1, round(fraction * len(site_of))) if fraction > 0 else 0
    if count == 0 or len(set(site_of.tolist())) < 2:
        return {}
    depth, other = _distance_to_other_sites(sky.map, site_of)
    rank = np.empty(len(site_of), dtype=int)
    rank[sky.order] = np.arange(len(site_of))
    chosen: list[int] = []
    for layer in sorted(set(depth[depth > 0].tolist())):
        members = np.flatnonzero(depth == layer)
        members = members[np.argsort(rank[members])]
        room = count - len(chosen)
        if len(members) <= room:
            chosen += members.tolist()
        else:
            chosen += members[np.linspace(0, len(members) - 1, room).round().astype(int)].tolist()
        if len(chosen) == count:
            break
    return {int(sky.map.ids[p]): sites[other[p]] for p in sorted(chosen, key=lambda p: sky.map.ids[p])}


def _distance_to_other_sites(sky: SkyMap, site_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each tract, how many steps away the nearest tract of another site is (1: a boundary
    tract), and that site (by the longest shared edge, for a boundary tract)."""
    depth = np.zeros(len(site_of), dtype=int)
    other = np.full(len(site_of), -1)
    contact = np.zeros(len(site_of))
    e = sky.edges
    for a, b, length in zip(e.a.tolist(), e.b.tolist(), e.length.tolist()):
        if site_of[a] != site_of[b]:
            for x, y in ((a, b), (b, a)):
                depth[x] = 1
                if length > contact[x]:
                    contact[x], other[x] = length, site_of[y]
    queue = deque(np.flatnonzero(depth == 1).tolist())
    neighbours = sky.neighbours()
    while queue:
        p = queue.popleft()
        for q in neighbours[p]:
            if depth[q] == 0 and site_of[q] == site_of[p]:
                depth[q], other[q] = depth[p] + 1, other[p]
                queue.append(q)
    return depth, other


def tracts_per_group(plan: Plan, sky: Sky, sites: list[str], site_of: np.ndarray, overlap: dict[int, str]) -> int:
    """Tracts per group: about the plan's core-hours of a sensible submission, and no more groups per
    step at a site than Airflow maps (max_map_length, counting one group per overlap tract)."""
    mean_tract = plan.doc.workload.core_hours / len(sky.map)
    size = max(1, round(plan.doc.groups.core_hours / mean_tract))
    limit = plan.map_limit()
    for i, site in enumerate(sites):
        room = limit - sum(1 for second in overlap.values() if second == site)
        own = int(np.count_nonzero(site_of == i))
        if room <= 0:
            raise ConfigError(
                plan.file,
                "overlap",
                f"{site} would process more overlap tracts than max_map_length {limit} groups; lower the overlap",
            )
        size = max(size, math.ceil(own / room))
    return size


def assign(plan: Plan, sky: Sky, shares: dict[str, float]) -> Assignment:
    sites = list(plan.sites)
    site_of = cut(sky, sites, shares)
    overlap = choose_overlap(sky, sites, site_of, plan.doc.overlap)
    return Assignment(sky, sites, site_of, overlap, tracts_per_group(plan, sky, sites, site_of, overlap))


def plan_tracts(plan: Plan, sky: Sky | None = None) -> Planned:
    """The assignment and its simulation: by the plan's fixed shares, else capacity-aware."""
    sky = sky or make_sky(plan)
    if plan.shares is not None:
        assignment = assign(plan, sky, plan.shares)
        return Planned(plan, assignment, simulate(plan, assignment.load()), plan.shares, {})
    shares = capacity_shares(plan)
    capped: dict[str, float] = {}
    assignment = assign(plan, sky, shares)
    result = simulate(plan, assignment.load())
    for _ in range(ROUNDS):
        new, capped = _next_shares(plan, assignment, result, capped)
        if max(abs(new[s] - shares[s]) for s in shares) < CONVERGED:
            break
        shares = new
        assignment = assign(plan, sky, shares)
        result = simulate(plan, assignment.load())
    return Planned(plan, assignment, result, shares, capped)


def capacity_shares(plan: Plan) -> dict[str, float]:
    """Each site's cores over the core-hours its share of the site steps holds there (memory)."""
    rate = _rates(plan)
    return {s: v / sum(rate.values()) for s, v in rate.items()}


def _rates(plan: Plan) -> dict[str, float]:
    """The share of the campaign's site steps each site does in an hour: its cores over the
    core-hours the whole of them would hold there (more than the work where memory is short)."""
    steps = [name for name, step in plan.campaign.steps.items() if step.scope == "site"]
    work = plan.doc.workload.core_hours
    return {
        site: cfg.cores / (work * sum(plan.doc.steps[s].cost * plan.inflation(site, s) for s in steps))
        for site, cfg in plan.sites.items()
    }


def _next_shares(
    plan: Plan, assignment: Assignment, result: Simulation, capped: dict[str, float]
) -> tuple[dict[str, float], dict[str, float]]:
    """Shares with which every site would finish together, the storage-capped ones held."""
    capped = dict(capped)
    for site, r in result.sites.items():
        share = assignment.fraction(site)
        # The hub holds every input and everyone's products until tape: its own share changes little.
        if site != plan.hub and r.peak_tb > r.quota_tb * STORAGE_MARGIN and share > 0:
            capped[site] = min(capped.get(site, 1.0), share * r.quota_tb * STORAGE_MARGIN / r.peak_tb)
    rate = _rates(plan)
    slack = {s: r.transfer_h + r.busy_h - r.own_busy_h - r.global_busy_h for s, r in result.sites.items()}
    held: dict[str, float] = {}
    while True:
        free = [s for s in plan.sites if s not in held]
        rest = 1.0 - sum(held.values())
        if not free:
            raise ConfigError(
                plan.file,
                "workload",
                "no assignment fits every site's storage: "
                + ", ".join(f"{s} holds at most {held[s]:.3f} of the work" for s in held)
                + f" ({sum(held.values()):.3f} in all); raise storage_tb or lower the volumes",
            )
        finish = (rest + sum(slack[s] * rate[s] for s in free)) / sum(rate[s] for s in free)
        shares = {s: max(rate[s] * (finish - slack[s]), 0.0) for s in free}
        norm = sum(shares.values())
        shares = {s: v * rest / norm for s, v in shares.items()}
        over = [s for s in free if shares[s] > capped.get(s, math.inf)]
        if not over:
            return {**shares, **held}, capped
        held.update({s: capped[s] for s in over})


def site_down(planned: Planned, site: str, from_day: float, days: float) -> tuple[Simulation, Simulation | None]:
    """SITE down for DAYS from FROM_DAY: the campaign waiting for it, and with its work re-planned
    onto the others in proportion to their shares (None for the hub: every hop and global step
    goes through it, so nothing can take its place)."""
    plan, assignment = planned.plan, planned.assignment
    if site not in plan.sites:
        raise DrpError(f"{site} is not one of the plan's sites ({', '.join(plan.sites)}); name one of them")
    if from_day < 0 or days <= 0 or not math.isfinite(from_day + days):
        raise DrpError(
            f"an outage starts on day 0 or later and lasts more than 0 days (got day {from_day:g}, {days:g} days)"
        )
    start, end = from_day * 24, (from_day + days) * 24
    load = assignment.load()
    wait = simulate(plan, load, Outage(site, start, end))
    if site == plan.hub:
        return wait, None
    others = {s: assignment.fraction(s) for s in plan.sites if s != site}
    total = sum(others.values())
    moved = {s: load.own[site] * share / total for s, share in others.items()}
    return wait, simulate(plan, load, Outage(site, start, end, replan=moved))
