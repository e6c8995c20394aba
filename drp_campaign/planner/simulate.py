"""A step-level simulation of a planned campaign, walking the same stage graph the DAG is built from.

The model, stage by stage in dependency order (hours; TB; 1 Gbps = 0.45 TB/h):

* a site step at a site starts when what it runs after is done there (its first step: once the
  place hop has brought its inputs) and lasts (the work of its tracts, own and overlap, in
  core-hours, times the cores a core of work holds for its memory) / the site's cores, plus the
  plan's per-step overhead: the site's groups share its cores (a fluid model: no tail of groups);
* a global step runs at the hub once every site is done with what it runs after (the barrier);
* a hop moves its volume over the link between the hub and each site, one transfer after
  another on a link and direction, links full duplex: place moves the site's inputs; a fan_in its
  share of the hop's volume plus, for its carrying hop, the products of the steps before it; a
  fan_out the hop's volume from the hub; to_tape the products on the hub's disk not yet on tape;
* products leave a site after its last step (after_site, what the DAG's return hop does), or as
  they are made (per_group), and stay on its disk until safe at the hub; at the hub they stay
  until written to tape (at tape_gbps, streamed in per_group mode). A queue of products on a link
  of cumulative capacity C(t) delivers D(t) = C(t) + min over u <= t of (A(u) - C(u)), A(t)
  being what was made by then. Inputs and intermediates stay where they are until the end.

A site down from hour a to hour b either pauses (wait: its steps and transfers resume at b) or is
re-planned at a: its unfinished tracts move to the other sites, which process them from the
start (inputs placed again from the hub), their whole catch-up added to each receiver's first
step that ends after a (or its last step); what the down site had done for them is lost.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from drp_campaign.graph import Stage, build_graph

from .plan_config import Plan

TB_PER_GBPS_HOUR = 3600 / 8 / 1000
FOREVER = 1e12
PARTS = ("inputs", "scratch", "products")


@dataclass(frozen=True)
class Load:
    """What each site processes, as fractions of the campaign's work (its visits)."""

    own: dict[str, float]  # its own tracts
    overlap: dict[str, float]  # other sites' tracts processed a second time (site QA)

    def at(self, site: str) -> float:
        return self.own.get(site, 0.0) + self.overlap.get(site, 0.0)


@dataclass(frozen=True)
class Outage:
    site: str
    start_h: float
    end_h: float
    replan: dict[str, float] | None = None  # receiving site -> fraction of the campaign moved there; None: wait


@dataclass(frozen=True)
class Bar:
    """One stage at one site on the Gantt chart."""

    site: str
    stage: str
    kind: str  # step, global, hop, tape
    start: float
    end: float


@dataclass
class SiteResult:
    cores: int
    busy_h: float = 0.0  # the hours its cores are busy (site steps, and global steps at the hub)
    own_busy_h: float = 0.0  # of which its own tracts' site steps
    global_busy_h: float = 0.0  # of which global steps (the hub's)
    end_h: float = 0.0  # its last site step or transfer
    transfer_h: float = 0.0  # the hours its hops' transfers take
    peak_tb: float = 0.0
    peak_parts: dict[str, float] = field(default_factory=dict)
    quota_tb: float = 0.0

    @property
    def over_tb(self) -> float:
        return self.peak_tb - self.quota_tb


@dataclass
class Simulation:
    makespan_h: float
    bound_h: float  # the campaign's core-hours / every site's cores
    sites: dict[str, SiteResult]
    links_tb: dict[str, float]  # "A->B": TB moved
    bars: list[Bar]
    critical: list[str]  # site.stage, first to last
    times: np.ndarray  # hours
    storage: dict[str, dict[str, np.ndarray]]  # site -> part -> TB at each time
    lost_core_hours: float = 0.0  # work a re-plan threw away

    @property
    def ratio(self) -> float:
        return self.makespan_h / self.bound_h


def simulate(plan: Plan, load: Load, outage: Outage | None = None) -> Simulation:
    if outage is not None and outage.replan is not None:
        baseline = _Run(plan, load, None).run()
        stopped = [b for b in baseline.bars if b.site == outage.site and b.kind == "step" and b.end > outage.start_h]
        if not stopped:  # its steps were done: only its transfers wait
            outage = Outage(outage.site, outage.start_h, outage.end_h)
    return _Run(plan, load, outage).run()


@dataclass
class _Pieces:
    """A cumulative amount made of linear pieces (t0, t1, amount); evaluated with numpy."""

    pieces: list[tuple[float, float, float]] = field(default_factory=list)

    def add(self, spans: list[tuple[float, float]], amount: float) -> None:
        total = sum(t1 - t0 for t0, t1 in spans)
        for t0, t1 in spans:
            self.pieces.append((t0, t1, amount * (t1 - t0) / total if total > 0 else amount))

    def __call__(self, t: np.ndarray) -> np.ndarray:
        out = np.zeros_like(t, dtype=float)
        for t0, t1, amount in self.pieces:
            if t1 > t0:
                out += amount * np.clip((t - t0) / (t1 - t0), 0.0, 1.0)
            else:
                out += np.where(t >= t0, amount, 0.0)
        return out

    def breaks(self) -> list[float]:
        return [t for t0, t1, _ in self.pieces for t in (t0, t1) if t < FOREVER]


def _served(made: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """What a queue has delivered, given what was MADE and its cumulative CAPACITY at sorted times
    from 0: D(t) = C(t) + min over u <= t of (A(u) - C(u))."""
    return capacity + np.minimum.accumulate(np.minimum(made - capacity, 0.0))


def _delivered(made: _Pieces, capacity: _Pieces, t: np.ndarray) -> np.ndarray:
    return _served(made(t), capacity(t))


class _Run:
    def __init__(self, plan: Plan, load: Load, outage: Outage | None):
        self.plan = plan
        self.doc = plan.doc
        self.load = load
        self.outage = outage
        self.graph = build_graph(plan.campaign)
        self.hub = plan.hub
        self.sites = list(plan.sites)
        self.W = self.doc.workload.core_hours
        self.done: dict[tuple[str, str | None], float] = {}
        self.cause: dict[tuple[str, str | None], tuple[str, str | None] | None] = {}
        self.bars: list[Bar] = []
        self.results = {s: SiteResult(cfg.cores, quota_tb=cfg.storage_tb) for s, cfg in plan.sites.items()}
        self.links_tb: dict[str, float] = defaultdict(float)
        self.inputs = {s: _Pieces() for s in self.sites}
        self.scratch = {s: _Pieces() for s in self.sites}
        self.made = {s: _Pieces() for s in self.sites}  # products
        self.home = {s: _Pieces() for s in self.sites}  # link capacity for products, site -> hub
        self.tape = _Pieces()
        self.lost = 0.0
        # a re-plan's receivers: catch-up work waiting for their first step that ends after the outage
        self.pending: dict[str, list[float] | None] = (
            {s: [0.0, 0.0, 0.0] for s in (outage.replan or {})} if outage else {}
        )
        self.last_step = [name for name, stage in self.graph.stages.items() if stage.is_site_step][-1:]

    # -- time ----------------------------------------------------------------------------------
    def _windows(self, *sites: str) -> list[tuple[float, float]]:
        o = self.outage
        if o is None or o.site not in sites:
            return []
        return [(o.start_h, FOREVER if o.replan is not None else o.end_h)]

    def _advance(self, start: float, hours: float, *sites: str) -> list[tuple[float, float]]:
        """The spans a task of HOURS starting at START is active, skipping the sites' down time."""
        spans, t = [], start
        for w0, w1 in self._windows(*sites):
            if t >= w1:
                continue
            if t + hours <= w0:
                break
            if t < w0:
                spans.append((t, w0))
                hours -= w0 - t
            t = w1
        if t >= FOREVER:  # stopped for good (a re-planned site): cut at the outage
            return spans or [(start, start)]
        spans.append((t, t + hours))
        return spans

    def _ready(self, stage: Stage, site: str | None) -> tuple[float, tuple[str, str | None] | None]:
        """When what STAGE runs after is done (at SITE, or everywhere for a global stage)."""
        best, why = 0.0, None
        after = stage.after
        if not after and stage.is_site_step and self.plan.campaign.place_hop() is not None:
            after = (self.plan.campaign.place_hop().name,)
        for name in after:
            if site is not None and (name, site) in self.done:
                nodes = [(name, site)]
            elif (name, None) in self.done:
                nodes = [(name, None)]
            else:
                nodes = [(name, s) for s in self.sites if (name, s) in self.done]
            for node in nodes:
                if self.done[node] >= best:
                    best, why = self.done[node], node
        return best, why

    def _record(self, stage: Stage, site: str, kind: str, spans, why) -> float:
        end = spans[-1][1]
        self.done[(stage.name, site)] = end
        self.cause[(stage.name, site)] = why
        self.bars.append(Bar(site, stage.name, kind, spans[0][0], end))
        if kind != "global":
            self.results[site].end_h = max(self.results[site].end_h, end)
        if kind == "hop":
            self.results[site].transfer_h += end - spans[0][0]
        return end

    # -- stages --------------------------------------------------------------------------------
    def run(self) -> Simulation:
        if self.doc.products_home == "per_group":  # products stream home as they are made
            for site in self.sites:
                self._open_home(site, 0.0)
        for stage in self.graph.stages.values():
            if stage.is_site_step:
                for site in self.sites:
                    self._site_step(stage, site)
            elif stage.is_global_step:
                self._global_step(stage)
            elif stage.scope == "to_tape":
                self._to_tape(stage)
            else:
                self._hop(stage)
        return self._result()

    def _step_hours(self, step: str, site: str, fraction: float) -> float:
        """Core-hours held at SITE for FRACTION of the campaign's STEP."""
        return self.W * self.doc.steps[step].cost * fraction * self.plan.inflation(site, step)

    def _site_step(self, stage: Stage, site: str) -> None:
        ready, why = self._ready(stage, site)
        cores = self.plan.sites[site].cores
        step = self.doc.steps[stage.name]
        own = self._step_hours(stage.name, site, self.load.own.get(site, 0.0))
        # What the step does here: core-hours, and the fractions of the campaign's products and intermediates.
        work = own + self._step_hours(stage.name, site, self.load.overlap.get(site, 0.0))
        made, kept = self.load.own.get(site, 0.0) * step.output, self.load.at(site) * step.scratch
        hours = work / cores
        if self._replanning() and site in self.outage.replan:
            work, made, kept, hours = self._with_moved(stage, site, ready, work, made, kept)
        overhead = self.doc.groups.overhead_hours if work > 0 else 0.0
        spans = self._advance(ready, overhead + hours, site)
        if self._replanning() and site == self.outage.site:  # it stops at the outage: what it did is lost
            done = min(work, max(sum(t1 - t0 for t0, t1 in spans) - overhead, 0.0) * cores)
            made, kept = (made * done / work, kept * done / work) if work > 0 else (made, kept)
            work = done
            self.lost += done
        result = self.results[site]
        result.busy_h += work / cores
        result.own_busy_h += min(own, work) / cores
        self._record(stage, site, "step", spans, why)
        if work > 0:
            self.made[site].add(spans, self.doc.workload.output_tb * made)
            self.scratch[site].add(spans, self.doc.workload.scratch_tb * kept)

    def _with_moved(self, stage: Stage, site: str, ready: float, work: float, made: float, kept: float) -> tuple:
        """A re-plan's receiving SITE: the moved tracts' part of this step is put aside (pending)
        until its first step that ends after the outage starts (or its last step), which then does
        all of it, once their inputs have been placed; every later step does its part as it goes."""
        cores = self.plan.sites[site].cores
        step, moved = self.doc.steps[stage.name], self.outage.replan[site]
        part = (self._step_hours(stage.name, site, moved), moved * step.output, moved * step.scratch)
        pending = self.pending[site]
        if pending is None:  # caught up
            work, made, kept = work + part[0], made + part[1], kept + part[2]
            return work, made, kept, work / cores
        if ready + work / cores <= self.outage.start_h and stage.name not in self.last_step:
            self.pending[site] = [a + b for a, b in zip(pending, part)]
            return work, made, kept, work / cores
        catch_up = [a + b for a, b in zip(pending, part)]
        self.pending[site] = None
        arrive = self._place_moved(site)
        hours = max((work + catch_up[0]) / cores, arrive - ready + catch_up[0] / cores)
        return work + catch_up[0], made + catch_up[1], kept + catch_up[2], hours

    def _place_moved(self, site: str) -> float:
        """The moved tracts' inputs, from the hub to SITE after the outage starts: when they are there."""
        o = self.outage
        if site == self.hub:  # it holds every input
            return o.start_h
        volume = self.doc.workload.input_tb * o.replan[site]
        spans = self._transfer(self.hub, site, o.start_h, volume)
        self.inputs[site].add(spans, volume)
        return spans[-1][1]

    def _transfer(self, source: str, dest: str, start: float, volume: float) -> list[tuple[float, float]]:
        rate = self.plan.link_gbps(source, dest) * TB_PER_GBPS_HOUR
        self.links_tb[f"{source}->{dest}"] += volume
        return self._advance(start, volume / rate, source, dest)

    def _global_step(self, stage: Stage) -> None:
        ready, why = self._ready(stage, None)
        cores = self.plan.sites[self.hub].cores
        work = self.W * self.doc.steps[stage.name].cost * self.plan.inflation(self.hub, stage.name)
        spans = self._advance(ready, work / cores + self.doc.groups.overhead_hours, self.hub)
        self.results[self.hub].busy_h += work / cores
        self.results[self.hub].global_busy_h += work / cores
        end = self._record(stage, self.hub, "global", spans, why)
        self.done[(stage.name, None)] = end
        self.cause[(stage.name, None)] = (stage.name, self.hub)

    def _hop(self, stage: Stage) -> None:
        direction = stage.scope
        carried = [step for step, hop in self.plan.carriers.items() if hop == stage.name]
        for site in self.sites:
            if direction == "fan_out":
                ready, why = self._ready(stage, None)
            else:
                ready, why = self._ready(stage, site)
            if site == self.hub:
                self._record(stage, site, "hop", [(ready, ready)], why)
                continue
            share = self.load.at(site)
            if self._replanning() and ready >= self.outage.start_h:
                if site == self.outage.site:  # nothing left to move
                    self._record(stage, site, "hop", [(ready, ready)], why)
                    continue
                share += self.outage.replan.get(site, 0.0)
            if direction == "place":
                volume = self.doc.workload.input_tb * self.load.at(site)
                spans = self._transfer(self.hub, site, ready, volume)
                self.inputs[site].add(spans, volume)
            elif direction == "fan_out":
                spans = self._transfer(self.hub, site, ready, self.doc.hops.get(stage.name, 0.0) * share)
            else:
                volume = self.doc.hops.get(stage.name, 0.0) * share
                if carried:
                    volume += self._products_home(site, ready)
                spans = self._transfer(site, self.hub, ready, volume)
            self._record(stage, site, "hop", spans, why)
        ends = {site: self.done[(stage.name, site)] for site in self.sites}
        last = max(ends, key=ends.get)
        self.done[(stage.name, None)] = ends[last]
        self.cause[(stage.name, None)] = (stage.name, last)

    def _replanning(self) -> bool:
        return self.outage is not None and self.outage.replan is not None

    def _products_home(self, site: str, start: float) -> float:
        """The TB of SITE's products still there at START; from then the link serves them."""
        self._open_home(site, start)
        t = self._grid([self.made[site], self.home[site]], start)
        backlog = float(self.made[site](t)[-1] - _delivered(self.made[site], self.home[site], t)[-1])
        products = float(self.made[site](np.array([start]))[0])
        self.links_tb[f"{site}->{self.hub}"] += products - backlog  # streamed before the hop
        return max(backlog, 0.0)

    def _open_home(self, site: str, start: float) -> None:
        """From START on, SITE's link to the hub serves its products (once: it stays open)."""
        if self.home[site].pieces or site == self.hub:
            return
        rate = self.plan.link_gbps(site, self.hub) * TB_PER_GBPS_HOUR
        for t0, t1 in self._advance(start, FOREVER, site, self.hub):
            self.home[site].pieces.append((t0, t1, rate * (t1 - t0)))

    def _to_tape(self, stage: Stage) -> None:
        ready, why = self._ready(stage, None)
        rate = self.doc.tape_gbps * TB_PER_GBPS_HOUR
        opened = ready if self.doc.products_home == "after_site" else 0.0
        self.tape.pieces.append((opened, FOREVER, rate * (FOREVER - opened)))
        arriving = self._at_hub()
        t = self._grid([*arriving.values(), self.tape], ready)
        total = sum(curve(t) for curve in arriving.values())
        backlog = float(total[-1] - _served(total, self.tape(t))[-1])
        spans = self._advance(ready, max(backlog, 0.0) / rate, self.hub)
        end = self._record(stage, self.hub, "tape", spans, why)
        self.done[(stage.name, None)] = end
        self.cause[(stage.name, None)] = (stage.name, self.hub)

    def _at_hub(self) -> dict[str, _Pieces | _Arrivals]:
        """What reaches the hub's disk over time: its own products, and each site's as delivered."""
        curves: dict[str, _Pieces | _Arrivals] = {self.hub: self.made[self.hub]}
        for site in self.sites:
            if site != self.hub and self.home[site].pieces:
                curves[site] = _Arrivals(self.made[site], self.home[site])
        return curves

    def _grid(self, curves, until: float, n: int = 2001) -> np.ndarray:
        breaks = [t for c in curves for t in c.breaks() if t <= until]
        return np.unique(np.concatenate([np.linspace(0.0, until, n), breaks, [until]]))

    # -- results -------------------------------------------------------------------------------
    def _result(self) -> Simulation:
        makespan = max(self.done.values())
        curves = [*self.inputs.values(), *self.scratch.values(), *self.made.values(), *self.home.values(), self.tape]
        t = self._grid(curves, makespan)
        storage = {}
        arriving = self._at_hub()
        for site in self.sites:
            parts = {"inputs": self.inputs[site](t), "scratch": self.scratch[site](t)}
            if site == self.hub:
                parts["inputs"] = parts["inputs"] + self.doc.workload.input_tb  # the hub holds every input
                total = sum(curve(t) for curve in arriving.values())
                parts["products"] = total - _served(total, self.tape(t))
            elif self.home[site].pieces:
                parts["products"] = self.made[site](t) - _delivered(self.made[site], self.home[site], t)
            else:
                parts["products"] = self.made[site](t)
            storage[site] = parts
            level = sum(parts.values())
            peak = int(np.argmax(level))
            result = self.results[site]
            result.peak_tb = float(level[peak])
            result.peak_parts = {name: float(values[peak]) for name, values in parts.items()}
        cores = sum(cfg.cores for cfg in self.plan.sites.values())
        return Simulation(
            makespan_h=makespan,
            bound_h=self.W / cores,
            sites=self.results,
            links_tb=dict(self.links_tb),
            bars=self.bars,
            critical=self._critical_path(),
            times=t,
            storage=storage,
            lost_core_hours=self.lost,
        )

    def _critical_path(self) -> list[str]:
        ends = [n for n in self.done if n[1] is not None]
        node = max(reversed(ends), key=lambda n: self.done[n])  # the last stage to end (the latest of ties)
        path = []
        while node is not None:
            if node[1] is not None:
                path.append(f"{node[1]}.{node[0]}")
            node = self.cause.get(node)
        return path[::-1]


@dataclass
class _Arrivals:
    """A site's products as they reach the hub: the queue on its link, delivered."""

    made: _Pieces
    link: _Pieces

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return _delivered(self.made, self.link, t)

    def breaks(self) -> list[float]:
        return self.made.breaks() + self.link.breaks()


def hours_to_days(hours: float) -> float:
    return hours / 24 if math.isfinite(hours) else hours
