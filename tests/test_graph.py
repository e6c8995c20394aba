"""The campaign graph and the names a run's collections get (Airflow-free)."""

import fnmatch

from drp_campaign import graph
from drp_campaign.config import load_campaign
from drp_campaign.settings import CAMPAIGNS_DIR


def campaign():
    return load_campaign(CAMPAIGNS_DIR / "test-3x3.yaml")


def test_stages_are_in_dependency_order():
    g = graph.build_graph(campaign())
    order = list(g.stages)
    for name, stage in g.stages.items():
        for dep in stage.after:
            assert order.index(dep) < order.index(name), f"{dep} must come before {name}"
    assert order[0] == "step1" and order[-2:] == ["final_qa", "archive_products"]


def test_stage_kinds_follow_the_campaign_file():
    g = graph.build_graph(campaign())
    assert g.stages["step2c"].is_global_step and g.stages["step2c"].site == "USDF"
    assert g.stages["step2b"].is_site_step
    assert g.stages["gather_for_step2c"].scope == "fan_in"
    assert g.stages["gather_for_step2c"].dataset_types == ("isolated_star", "preliminary_visit_summary")
    assert g.stages["distribute_step2c"].scope == "fan_out"
    assert g.stages["archive_products"].scope == "to_tape" and g.stages["archive_products"].kind == "hop"
    assert g.remote_sites() == ["FRDF", "UKDF_RAL"]


def test_groups_split_a_sites_tracts_and_honour_the_selection():
    c = campaign()
    assert [g.tracts for g in graph.plan_groups(c, "FRDF")] == [(2,), (3,)]
    assert [g.label for g in graph.plan_groups(c, "FRDF")] == ["g000", "g001"]
    assert [g.tracts for g in graph.plan_groups(c, "FRDF", [3, 4])] == [(3,)]
    assert graph.plan_groups(c, "FRDF", [0]) == []
    c.tracts_per_group = 2
    assert [g.tracts for g in graph.plan_groups(c, "USDF")] == [(0, 1), (4,)], "an overlap tract is a group alone"


def test_a_failed_over_tract_runs_only_at_its_new_site_in_a_group_named_after_the_one_it_left():
    c = campaign()
    moved = {2: "UKDF_RAL", 3: "UKDF_RAL"}
    assert graph.plan_groups(c, "FRDF", moved=moved) == [], "FRDF keeps nothing"
    at_ral = graph.plan_groups(c, "UKDF_RAL", moved=moved)
    assert [(g.label, g.tracts) for g in at_ral] == [
        ("g000", (4,)),
        ("g001", (5,)),
        ("FRDF-g000", (2,)),
        ("FRDF-g001", (3,)),
    ], "UKDF_RAL's overlap copy of tract 2 is gone: its product is made there now"
    assert [g.label for g in graph.plan_groups(c, "USDF", moved=moved)] == ["g000", "g001", "overlap-t4"]
    assert [(g.label, g.tracts) for g in graph.plan_groups(c, "UKDF_RAL", [3, 5], moved)] == [
        ("g000", (5,)),
        ("FRDF-g000", (3,)),
    ], "groups of the selected tracts, as without a failover"
    assert graph.output_run(c, "k", "UKDF_RAL", "step1", "FRDF-g000") == "drp/test-3x3/k/UKDF_RAL/step1/FRDF-g000"
    c.tracts_per_group = 2
    assert [(g.label, g.tracts) for g in graph.plan_groups(c, "USDF", moved={2: "USDF"})] == [
        ("g000", (0, 1)),
        ("FRDF-g000", (2,)),
        ("overlap-t4", (4,)),
    ], "a group half moved: the tract moved goes, the other stays at FRDF"
    assert [(g.label, g.tracts) for g in graph.plan_groups(c, "FRDF", moved={2: "USDF"})] == [("g000", (3,))]


def test_run_key_is_safe_for_paths_and_collections():
    key = graph.run_key("manual__2026-11-25T17:00:00.123456+00:00")
    assert key == "manual__2026-11-25T17-00-00-123"
    assert graph.run_key("manual__2026-11-25T17:00:00.123456 00:00") == key, "a '+' decoded as ' ' in a URL query"
    assert graph.run_key("scheduled__2026-11-25T03:00:00+00:00") == "scheduled__2026-11-25T03-00-00"
    assert graph.output_run(campaign(), key, "FRDF", "step2b", "g001") == f"drp/test-3x3/{key}/FRDF/step2b/g001"
    assert graph.site_runs_pattern(campaign(), key, "FRDF") == f"drp/test-3x3/{key}/FRDF/*"


def test_an_overlap_tract_is_one_more_group_at_its_second_site_only():
    c = campaign()  # qa.overlap: {2: UKDF_RAL, 4: USDF}
    assert [g.label for g in graph.plan_groups(c, "USDF")] == ["g000", "g001", "overlap-t4"], "the hub too"
    ral = graph.plan_groups(c, "UKDF_RAL")
    assert [(g.label, g.tracts, g.overlap) for g in ral] == [
        ("g000", (4,), False),
        ("g001", (5,), False),
        ("overlap-t2", (2,), True),
    ]
    assert not any(g.overlap for g in graph.plan_groups(c, "FRDF")), "its own site runs it as one of its own"
    assert [g.label for g in graph.plan_groups(c, "UKDF_RAL", [2])] == ["overlap-t2"]
    assert [g.label for g in graph.plan_groups(c, "UKDF_RAL", [4])] == ["g000"]


def test_overlap_outputs_live_outside_every_pattern_and_chain_of_the_run():
    c, key = campaign(), "manual__2026-11-25T17-00-00-123"
    run = graph.output_run(c, key, "UKDF_RAL", "step5", "overlap-t2")
    assert run == f"drp/test-3x3/{key}.overlap/UKDF_RAL/step5/overlap-t2"
    assert graph.group_chain(c, key, "UKDF_RAL", "overlap-t2") == f"drp/test-3x3/{key}.overlap/UKDF_RAL"
    assert graph.group_chain(c, key, "UKDF_RAL", "g000") == graph.site_chain(c, key)
    assert fnmatch.fnmatchcase(run, graph.overlap_runs_pattern(c, key, "UKDF_RAL"))
    # Fan-ins send the site pattern, the tape hop the campaign pattern: neither holds it.
    for pattern in (graph.site_runs_pattern(c, key, "UKDF_RAL"), graph.campaign_runs_pattern(c, key)):
        assert not fnmatch.fnmatchcase(run, pattern)
    # What a hop's ingest keeps out of the hub's chain: every site's overlap RUNs, none of its own.
    not_chained = graph.overlap_runs_pattern(c, key, "*")
    assert fnmatch.fnmatchcase(run, not_chained)
    assert not fnmatch.fnmatchcase(graph.output_run(c, key, "UKDF_RAL", "step5", "g000"), not_chained)


def test_a_fan_in_also_brings_home_the_compared_types_of_the_second_sites_overlap_copy():
    c, key = campaign(), "k"
    own, second = graph.site_runs_pattern(c, key, "UKDF_RAL"), graph.overlap_runs_pattern(c, key, "UKDF_RAL")
    products = ["deep_coadd", "object_table", "qa_metrics", "visit_summary"]
    assert graph.hop_selections(c, key, "return_products", "UKDF_RAL") == [
        (own, products),
        (second, ["object_table", "qa_metrics", "visit_summary"]),
    ]
    assert graph.hop_selections(c, key, "return_products", "FRDF") == [
        (graph.site_runs_pattern(c, key, "FRDF"), products)
    ]
    gather = ["isolated_star", "preliminary_visit_summary"]
    assert graph.hop_selections(c, key, "gather_for_step2c", "UKDF_RAL") == [(own, gather)], "not compared: not sent"
    # Only FRDF's tract 2 selected: UKDF_RAL sends its overlap copy home, and nothing to step2c.
    assert graph.hop_selections(c, key, "return_products", "UKDF_RAL", [2]) == [
        (second, ["object_table", "qa_metrics", "visit_summary"])
    ]
    assert graph.hop_selections(c, key, "gather_for_step2c", "UKDF_RAL", [2]) == []
    assert graph.hop_selections(c, key, "archive_products", "USDF")[0][0] == graph.campaign_runs_pattern(c, key)
    args = graph.export_hop_args(graph.hop_selections(c, key, "return_products", "UKDF_RAL"))
    assert args == [
        "--collections",
        own,
        "--dataset-types",
        ",".join(products),
        "--also",
        f"{second}=object_table,qa_metrics,visit_summary",
    ]
