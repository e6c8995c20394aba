"""What a hop's direction means: who sends, who receives, at which RSE, under which Rucio dataset
name, and which copy the hop's lifetime applies to.

Airflow-free, and the one place that knows it: the DAG renderer, the hop operators, the inventory,
the report and the benchmarks ask here. A new direction is a new row of DIRECTIONS (and its tasks
in the DAG renderer). A hop runs between the hub and one other site, the hop's `site`; the tape
hop is the hub's own, from its disk to its tape RSE (then to the IDACs it names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:  # the config models may import Direction from here
    from .config import CampaignConfig, HopConfig

Direction = Literal["place", "fan_in", "fan_out", "to_tape"]
End = Literal["source", "destination"]


@dataclass(frozen=True)
class Way:
    """The meaning of one direction."""

    site_end: End | None  # which end the hop's non-hub site is; None: the hub to its own tape
    named_after: End  # one Rucio dataset per source, or per destination (each its own selection)
    holds_source: bool  # a rule of its own holds the source copy, so Rucio decides when it may go
    to_tape: bool  # the hub's tape RSE receives the whole run's products, whichever site made them

    @property
    def per_site(self) -> bool:
        """One pair per non-hub site (its tasks in that site's group); else once, at the hub."""
        return self.site_end is not None

    @property
    def gathers(self) -> bool:
        """The sites send what they made to the hub."""
        return self.site_end == "source"

    @property
    def names_site(self) -> bool:
        """Its datasets are named after the non-hub site (so a dataset tells which site took part)."""
        return self.site_end == self.named_after


DIRECTIONS: dict[Direction, Way] = {
    # The campaign's inputs, hub -> every other site, before anything runs there.
    "place": Way(site_end="destination", named_after="destination", holds_source=True, to_tape=False),
    # Every site -> hub disk.
    "fan_in": Way(site_end="source", named_after="source", holds_source=True, to_tape=False),
    # Hub -> every site: one dataset that every site gets.
    "fan_out": Way(site_end="destination", named_after="source", holds_source=False, to_tape=False),
    # Hub disk -> hub tape.
    "to_tape": Way(site_end=None, named_after="source", holds_source=True, to_tape=True),
}


def way(direction: str) -> Way:
    """What DIRECTION means (a hop's `direction`, a graph stage's `scope`)."""
    return DIRECTIONS[direction]


def lifetime_s(hop: HopConfig) -> int | None:
    """The hop's `lifetime_days` as Rucio takes it; None: no lifetime."""
    return int(hop.lifetime_days * 86400) if hop.lifetime_days else None


@dataclass(frozen=True)
class HopEnds:
    """One hop as the tasks of one site's pair see it."""

    hop: str
    direction: Direction
    site: str  # the non-hub end (the hub itself for the tape hop)
    source: str
    destination: str  # the site whose storage receives the copy (the hub for fan-in and tape)
    source_rse: str
    destination_rse: str  # the hub's tape RSE for the tape hop
    dataset_end: str  # the site the hop's Rucio dataset is named after
    # Lifetimes go on the rule that holds the site's copy (a site need not keep intermediates):
    # a fan-in's source hold, a fan-out's or place's destination rule. The hub keeps its copies.
    source_lifetime_s: int | None
    destination_lifetime_s: int | None

    @property
    def way(self) -> Way:
        return way(self.direction)

    @property
    def destination_label(self) -> str:
        """What the ledger and logs call the destination: a site, or the tape RSE."""
        return self.destination_rse if self.way.to_tape else self.destination


def hop_ends(campaign: CampaignConfig, hop: str, site: str) -> HopEnds:
    """The pair of hop HOP that SITE (its non-hub end) takes part in."""
    config = campaign.hops[hop]
    rule = way(config.direction)
    hub = campaign.hub()
    source = site if rule.site_end == "source" else hub
    destination = site if rule.site_end == "destination" else hub
    rses = campaign.sites_config.sites[destination].rucio
    lifetime = lifetime_s(config)
    return HopEnds(
        hop=hop,
        direction=config.direction,
        site=site,
        source=source,
        destination=destination,
        source_rse=campaign.sites_config.sites[source].rucio.disk_rse,
        destination_rse=rses.tape_rse if rule.to_tape else rses.disk_rse,
        dataset_end=source if rule.named_after == "source" else destination,
        source_lifetime_s=lifetime if rule.site_end == "source" else None,
        destination_lifetime_s=lifetime if rule.site_end == "destination" else None,
    )


def idac_rse(campaign: CampaignConfig, idac: str) -> str:
    return campaign.sites_config.idacs[idac].rse


def archive_rses(campaign: CampaignConfig, hop: str) -> list[str]:
    """Where a tape hop's dataset ends up: the hub's tape RSE, then each IDAC's the hop names."""
    tape = hop_ends(campaign, hop, campaign.hub()).destination_rse
    return [tape, *(idac_rse(campaign, i) for i in campaign.hops[hop].idacs)]


# --- Rucio dataset names -------------------------------------------------------------------------


class HopDatasetName(NamedTuple):
    """One Rucio dataset of a hop: `{run key}/{hop}/{end}` in the campaign's scope."""

    run_key: str
    hop: str
    end: str  # the site it is named after (HopEnds.dataset_end)


def hop_dataset_name(run_key: str, hop: str, end: str) -> str:
    return f"{run_key}/{hop}/{end}"


def hop_dataset_did(campaign: CampaignConfig, run_key: str, hop: str, end: str) -> str:
    """One Rucio dataset per (run, hop, END site): the scope is the campaign."""
    return f"{campaign.name}:{hop_dataset_name(run_key, hop, end)}"


def parse_hop_dataset_name(name: str) -> HopDatasetName | None:
    """A dataset name (no scope) split back into its parts; None for a name of another shape.
    Run keys, hop and site names hold no '/' (graph.run_key, the config's name checks)."""
    parts = name.split("/")
    return HopDatasetName(*parts) if len(parts) == 3 else None


def dataset_source(campaign: CampaignConfig, hop: str, end: str) -> str:
    """The site that sent the hop's dataset named after END (registered there in place)."""
    return end if way(campaign.hops[hop].direction).site_end == "source" else campaign.hub()


def dataset_destinations(campaign: CampaignConfig, hop: str, end: str, run_sites: list[str]) -> list[str]:
    """The sites whose disk receives the hop's dataset named after END, of RUN_SITES (the run's
    non-hub sites); none for the tape hop (archive_rses)."""
    rule = way(campaign.hops[hop].direction)
    if rule.to_tape:
        return []
    if rule.named_after == "destination":
        return [end]
    return list(run_sites) if rule.site_end == "destination" else [campaign.hub()]
