"""The planned campaign as a file: the template campaign with the plan's tracts, tracts_per_group
and qa.overlap, written only once it loads as the DAG factory will load it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from drp_campaign.config import CampaignConfig, ConfigError, load_campaign, read_mapping
from drp_campaign.config.reading import absolute_path
from drp_campaign.errors import DrpError

from .assign import Planned


def dag_caveat(plan) -> str | None:
    """What the written campaign's DAG does not do as PLAN assumes, if anything (shown wherever
    the plan is: the CLI, the written file's header, the campaign view)."""
    if plan.doc.products_home == "per_group":
        return (
            "planned with products_home: per_group (each group's products go home as they are made); the DAG "
            "does not do that yet: its return hop runs after a site's last step, so a run holds products at "
            "the sites, and at the hub before tape, longer than planned"
        )
    return None


def campaign_document(planned: Planned, out: Path) -> dict[str, Any]:
    """The template's mapping with what the plan decides; its pipeline path made relative to OUT."""
    plan, assignment = planned.plan, planned.assignment
    doc = read_mapping(plan.campaign.file)
    pipeline = os.path.relpath(plan.campaign.pipeline, absolute_path(out).parent)
    tracts = {site: assignment.tracts(site) for site in assignment.sites if assignment.tracts(site)}
    overlap = {tract: site for tract, site in sorted(assignment.overlap.items())}
    planned_keys = {
        "name": plan.doc.name,
        "description": plan.doc.description,
        "pipeline": pipeline,
        "output_prefix": f"drp/{plan.doc.name}",
        "tracts": tracts,
        "tracts_per_group": assignment.tracts_per_group,
    }
    doc = {key: planned_keys.get(key, value) for key, value in doc.items()}
    doc.update({key: value for key, value in planned_keys.items() if key not in doc})
    doc["qa"] = {**doc.get("qa", {}), "overlap": overlap}
    return doc


def write_campaign(planned: Planned, out: str | Path) -> CampaignConfig:
    """Write the campaign to OUT if it loads (with the plan's sites file); else nothing is written."""
    out = absolute_path(out)
    if not out.parent.is_dir():
        raise DrpError(f"cannot write {out}: directory {out.parent} does not exist; create it first")
    doc = campaign_document(planned, out)
    header = (
        f"# Written by `drp-campaign plan {planned.plan.file.name}`: tracts, tracts_per_group and qa.overlap\n"
        f"# are the plan's; the rest is {planned.plan.campaign.file.name}'s. Edit the plan, not this file.\n"
    )
    if caveat := dag_caveat(planned.plan):
        header += f"# Note: {caveat}.\n"
    text = header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110)
    temporary = out.with_name(f".{out.name}.planning")
    try:
        temporary.write_text(text)
        try:
            campaign = load_campaign(temporary, planned.plan.campaign.sites_config.file)
        except ConfigError as exc:
            raise ConfigError(
                planned.plan.file, exc.key_path, f"the planned campaign does not load: {exc.problem}"
            ) from None
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return campaign.model_copy(update={"file": out})
