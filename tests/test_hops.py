"""What a hop's direction means (drp_campaign/hops.py), on the 3x3 campaign; Airflow-free."""

from typing import get_args

import pytest

from drp_campaign import hops
from drp_campaign.config import load_campaign
from drp_campaign.settings import CAMPAIGNS_DIR


@pytest.fixture(scope="module")
def campaign():
    return load_campaign(CAMPAIGNS_DIR / "test-3x3.yaml")


# (hop, site): source, destination, source RSE, destination RSE, destination label, dataset named after
PAIRS = {
    ("place_inputs", "FRDF"): ("USDF", "FRDF", "USDF_DISK", "FRDF_DISK", "FRDF", "FRDF"),
    ("place_inputs", "UKDF_RAL"): ("USDF", "UKDF_RAL", "USDF_DISK", "UKDF_RAL_DISK", "UKDF_RAL", "UKDF_RAL"),
    ("gather_for_step2c", "FRDF"): ("FRDF", "USDF", "FRDF_DISK", "USDF_DISK", "USDF", "FRDF"),
    ("gather_for_step2c", "UKDF_RAL"): ("UKDF_RAL", "USDF", "UKDF_RAL_DISK", "USDF_DISK", "USDF", "UKDF_RAL"),
    ("distribute_step2c", "FRDF"): ("USDF", "FRDF", "USDF_DISK", "FRDF_DISK", "FRDF", "USDF"),
    ("distribute_step2c", "UKDF_RAL"): ("USDF", "UKDF_RAL", "USDF_DISK", "UKDF_RAL_DISK", "UKDF_RAL", "USDF"),
    ("return_products", "FRDF"): ("FRDF", "USDF", "FRDF_DISK", "USDF_DISK", "USDF", "FRDF"),
    ("return_products", "UKDF_RAL"): ("UKDF_RAL", "USDF", "UKDF_RAL_DISK", "USDF_DISK", "USDF", "UKDF_RAL"),
    # The tape hop's tasks are the hub's; a site's release task sees the same pair.
    ("archive_products", "USDF"): ("USDF", "USDF", "USDF_DISK", "USDF_TAPE", "USDF_TAPE", "USDF"),
    ("archive_products", "FRDF"): ("USDF", "USDF", "USDF_DISK", "USDF_TAPE", "USDF_TAPE", "USDF"),
}


@pytest.mark.parametrize(("hop", "site"), PAIRS)
def test_each_directions_ends_for_the_3x3(campaign, hop, site):
    ends = hops.hop_ends(campaign, hop, site)
    got = (
        ends.source,
        ends.destination,
        ends.source_rse,
        ends.destination_rse,
        ends.destination_label,
        ends.dataset_end,
    )
    assert got == PAIRS[(hop, site)]


def test_every_direction_the_config_accepts_has_a_meaning(campaign):
    accepted = get_args(type(campaign.hops["place_inputs"]).model_fields["direction"].annotation)
    assert set(accepted) == set(hops.DIRECTIONS) == set(get_args(hops.Direction))


def test_the_lifetime_goes_on_the_rule_that_holds_the_sites_copy(campaign):
    month = 30 * 86400
    fan_in = hops.hop_ends(campaign, "gather_for_step2c", "FRDF")  # lifetime_days: 30
    assert (fan_in.source_lifetime_s, fan_in.destination_lifetime_s) == (month, None)
    assert hops.hop_ends(campaign, "return_products", "FRDF").source_lifetime_s is None  # none asked
    every = campaign.model_copy(
        update={"hops": {n: h.model_copy(update={"lifetime_days": 30}) for n, h in campaign.hops.items()}}
    )
    place = hops.hop_ends(every, "place_inputs", "FRDF")
    assert (place.source_lifetime_s, place.destination_lifetime_s) == (None, month)
    assert hops.hop_ends(every, "distribute_step2c", "FRDF").destination_lifetime_s == month
    tape = hops.hop_ends(every, "archive_products", "USDF")  # the hub keeps its copies
    assert (tape.source_lifetime_s, tape.destination_lifetime_s) == (None, None)
    assert hops.lifetime_s(campaign.hops["gather_for_step2c"]) == month


def test_which_source_copies_are_held():
    assert {d for d, w in hops.DIRECTIONS.items() if w.holds_source} == {"place", "fan_in", "to_tape"}


def test_a_dataset_name_parses_back_to_its_run_hop_and_site(campaign):
    for hop, site in PAIRS:
        end = hops.hop_ends(campaign, hop, site).dataset_end
        did = hops.hop_dataset_did(campaign, "manual__2026-01-01T00-00-00", hop, end)
        scope, name = did.split(":")
        assert scope == "test-3x3" and name == f"manual__2026-01-01T00-00-00/{hop}/{end}"
        assert hops.parse_hop_dataset_name(name) == ("manual__2026-01-01T00-00-00", hop, end)
        assert hops.hop_dataset_name(*hops.parse_hop_dataset_name(name)) == name


@pytest.mark.parametrize("name", ["", "key", "key/hop", "key/hop/site/extra", "a/b/c/d/e"])
def test_a_name_of_another_shape_is_not_a_hop_dataset(name):
    assert hops.parse_hop_dataset_name(name) is None


def test_a_dataset_read_back_names_where_it_came_from_and_where_it_goes(campaign):
    """What the inventory asks of a name it read from Rucio matches what the hop's tasks did."""
    run_sites = ["FRDF", "UKDF_RAL"]
    for hop, site in PAIRS:
        ends = hops.hop_ends(campaign, hop, site)
        assert hops.dataset_source(campaign, hop, ends.dataset_end) == ends.source
        goes_to = hops.dataset_destinations(campaign, hop, ends.dataset_end, run_sites)
        if ends.way.to_tape:
            assert goes_to == [] and hops.archive_rses(campaign, hop) == ["USDF_TAPE", "IDAC_UK_DISK"]
        else:
            assert ends.destination in goes_to
    assert hops.dataset_destinations(campaign, "distribute_step2c", "USDF", run_sites) == run_sites  # one for all
    assert hops.dataset_destinations(campaign, "gather_for_step2c", "FRDF", run_sites) == ["USDF"]
    assert hops.dataset_destinations(campaign, "place_inputs", "FRDF", run_sites) == ["FRDF"]
