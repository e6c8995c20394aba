"""What a plan costs, as text: per site, the makespan against the lower bound and where the gap
goes, link volumes, the critical path; two plans side by side; a site-down what-if."""

from __future__ import annotations

from .assign import Planned
from .simulate import Simulation


def _days(hours: float) -> str:
    return f"{hours / 24:.1f}"


def duration(hours: float) -> str:
    """Hours as people say them: days for a campaign, seconds for the embedded 3x3."""
    if hours >= 48:
        return f"{hours / 24:.1f} days"
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{hours * 3600:.3g} s"


def volume(tb: float) -> str:
    if tb >= 1 or tb == 0:
        return f"{tb:,.0f} TB"
    return f"{tb * 1000:.3g} GB" if tb >= 1e-3 else f"{tb * 1e6:.3g} MB"


def headline(planned: Planned) -> str:
    plan, a, sim = planned.plan, planned.assignment, planned.simulation
    capped = "".join(f"; {s} held to {x:.3f} by its storage" for s, x in planned.capped.items())
    return (
        f"{plan.doc.name}: {len(a.sky.map):,} tracts of a {plan.doc.skymap.rings}-ring sky map at "
        f"{len(plan.sites)} sites, {planned.kind} shares{capped}; tracts_per_group {a.tracts_per_group}, "
        f"{len(a.overlap)} overlap tracts; makespan {duration(sim.makespan_h)} = {sim.ratio:.3f} x the lower bound"
    )


def gap(planned: Planned) -> str:
    """Where the hours between the lower bound and the makespan go."""
    plan, sim = planned.plan, planned.simulation
    cores = sum(cfg.cores for cfg in plan.sites.values())
    hub_cores = plan.sites[plan.hub].cores
    overlap = planned.assignment.load().overlap
    twice = sum(plan.doc.workload.core_hours * share for share in overlap.values()) / cores
    global_h = sum(b.end - b.start for b in sim.bars if b.kind == "global")
    idle_at_global = global_h * (cores - hub_cores) / cores
    rest = sim.makespan_h - sim.bound_h - twice - idle_at_global
    return (
        f"gap {duration(sim.makespan_h - sim.bound_h)}: overlap tracts processed twice {duration(twice)}, "
        f"the other sites idle during the global steps at {plan.hub} {duration(idle_at_global)}, "
        f"transfers, barriers, overheads and imbalance {duration(rest)}"
    )


def simulation_table(planned: Planned) -> list[str]:
    plan, a, sim = planned.plan, planned.assignment, planned.simulation
    lines = [
        f"{'site':<11} {'cores':>6} {'share':>6} {'tracts':>6} {'overlap':>7} {'groups':>6} "
        f"{'busy':>10} {'util':>5} {'peak':>9} {'quota TB':>9}  at the peak",
    ]
    for site, r in sim.sites.items():
        groups = -(-len(a.tracts(site)) // a.tracts_per_group) + sum(1 for s in a.overlap.values() if s == site)
        parts = ", ".join(f"{name} {volume(tb)}" for name, tb in r.peak_parts.items())
        over = f" OVER by {volume(r.over_tb)}" if r.over_tb > 0 else ""
        lines.append(
            f"{site:<11} {r.cores:>6,} {a.fraction(site):>6.3f} {len(a.tracts(site)):>6,} "
            f"{sum(1 for s in a.overlap.values() if s == site):>7} {groups:>6} {duration(r.busy_h):>10} "
            f"{r.busy_h / sim.makespan_h:>5.0%} {volume(r.peak_tb):>9} {r.quota_tb:>9,.0f}  {parts}{over}"
        )
    cores = sum(cfg.cores for cfg in plan.sites.values())
    lines += [
        f"makespan {duration(sim.makespan_h)}; lower bound {duration(sim.bound_h)} "
        f"({plan.doc.workload.core_hours:,.0f} core-h / {cores:,} cores); ratio {sim.ratio:.3f}",
        gap(planned),
        "links: " + ", ".join(f"{link} {volume(tb)}" for link, tb in sorted(sim.links_tb.items())),
        "critical path: " + " -> ".join(sim.critical),
    ]
    return lines


def report(planned: Planned) -> str:
    return "\n".join([headline(planned), *simulation_table(planned)])


def compare(left: Planned, right: Planned, labels: tuple[str, str]) -> str:
    """Two plans of the same campaign side by side, a row per figure."""
    rows: list[tuple[str, str, str]] = []

    def row(name: str, get) -> None:
        rows.append((name, get(left), get(right)))

    row("makespan, days", lambda p: _days(p.simulation.makespan_h))
    row("lower bound, days", lambda p: _days(p.simulation.bound_h))
    row("makespan / bound", lambda p: f"{p.simulation.ratio:.3f}")
    for site in left.plan.sites:
        row(f"{site} share", lambda p, s=site: f"{p.assignment.fraction(s):.3f}")
        row(f"{site} busy, days", lambda p, s=site: _days(p.simulation.sites[s].busy_h))
        row(f"{site} peak / quota, TB", lambda p, s=site: _storage(p.simulation, s))
    for link in sorted(set(left.simulation.links_tb) | set(right.simulation.links_tb)):
        row(f"{link}, TB", lambda p, k=link: f"{p.simulation.links_tb.get(k, 0.0):,.0f}")
    row("critical path through", lambda p: p.simulation.critical[0].split(".")[0])
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}  {labels[0]:>22}  {labels[1]:>22}"]
    lines += [f"{name:<{width}}  {a:>22}  {b:>22}" for name, a, b in rows]
    return "\n".join(lines)


def _storage(sim: Simulation, site: str) -> str:
    r = sim.sites[site]
    return f"{r.peak_tb:,.0f} / {r.quota_tb:,.0f}" + (" OVER" if r.over_tb > 0 else "")


def outage_report(
    planned: Planned, site: str, from_day: float, days: float, wait: Simulation, replan: Simulation | None
) -> str:
    base = planned.simulation
    lines = [f"{site} down for {days:g} days from day {from_day:g} (planned makespan {_days(base.makespan_h)} days):"]
    lines.append(
        f"  waiting for it: makespan {_days(wait.makespan_h)} days "
        f"(+{_days(wait.makespan_h - base.makespan_h)}), ratio {wait.ratio:.3f}"
    )
    if replan is None:
        lines.append(f"  re-planned: not possible, {site} is the hub (every hop and global step goes through it)")
    else:
        others = ", ".join(s for s in planned.plan.sites if s != site)
        over = [f"{s} {r.peak_tb:,.0f}/{r.quota_tb:,.0f} TB" for s, r in replan.sites.items() if r.over_tb > 0]
        lines.append(
            f"  re-planned onto {others}: makespan {_days(replan.makespan_h)} days "
            f"(+{_days(replan.makespan_h - base.makespan_h)}), {replan.lost_core_hours:,.0f} core-h of {site}'s "
            f"work lost; storage {'over quota at ' + ', '.join(over) if over else 'within every quota'}"
        )
    return "\n".join(lines)
