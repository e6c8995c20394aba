"""Whether a plan fits: each site's storage at its peak, the time allotted, a tract for every share.

Each misfit is a `ConfigError` on the plan file naming the site, what does not fit and by how much.
"""

from __future__ import annotations

from drp_campaign.config import ConfigError

from .assign import Planned

PART_NAMES = {"inputs": "inputs", "scratch": "intermediates", "products": "products not yet safe"}


def check_fits(planned: Planned) -> None:
    plan, assignment, sim = planned.plan, planned.assignment, planned.simulation
    fixed = plan.shares is not None
    share_key = "shares" if isinstance(plan.doc.shares, str) else "shares.{site}"
    for site, target in planned.targets.items():
        if target > 0 and not assignment.tracts(site):
            raise ConfigError(
                plan.file,
                share_key.format(site=site),
                f"{site}'s share {target:.4f} is less than one of the {len(assignment.sky.map)} tracts; "
                "give it more or leave the site out",
            )
    for site, r in sim.sites.items():
        if r.over_tb <= 0:
            continue
        parts = ", ".join(f"{PART_NAMES[name]} {tb:,.0f}" for name, tb in r.peak_parts.items() if tb >= 0.5)
        if site == plan.hub and plan.doc.products_home == "after_site":
            key = "products_home"
            remedy = (
                f"products reach tape only once every site is done: send them home per_group "
                f"or raise {site}'s storage_tb"
            )
        elif site == plan.hub:
            key, remedy = "tape_gbps", f"raise tape_gbps ({plan.doc.tape_gbps:g}) or {site}'s storage_tb"
        elif fixed:
            key, remedy = share_key.format(site=site), "lower its share, or plan with shares: capacity"
        else:
            key, remedy = "links_gbps", f"raise its link to {plan.hub} or its storage_tb"
        raise ConfigError(
            plan.file,
            key,
            f"{site} would hold {r.peak_tb:,.0f} TB at its peak ({parts}), over its storage_tb "
            f"{r.quota_tb:,.0f} by {r.over_tb:,.0f} TB; {remedy}",
        )
    days = plan.doc.workload.days
    if days is not None and sim.makespan_h / 24 > days:
        site = max(sim.sites, key=lambda s: sim.sites[s].busy_h)
        r = sim.sites[site]
        why = (
            f"{site} computes for {r.busy_h / 24:.0f} days on its {r.cores:,} cores "
            f"({assignment.fraction(site):.2f} of the work)"
        )
        remedy = (
            f"plan with shares: capacity (the lower bound is {sim.bound_h / 24:.0f} days)"
            if fixed
            else f"the lower bound alone is {sim.bound_h / 24:.0f} days: add cores or allot more days"
        )
        raise ConfigError(
            plan.file,
            "shares" if fixed else "workload.days",
            f"the campaign would take {sim.makespan_h / 24:.0f} days, over the {days:g} allotted by "
            f"{sim.makespan_h / 24 - days:.0f}: {why}; {remedy}",
        )
