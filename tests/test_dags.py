"""DAG integrity: every campaign DAG imports cleanly and has the campaign's shape."""

import os
import time

import pytest

os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow.dag_processing.dagbag import DagBag  # noqa: E402

from drp_campaign.settings import PROJECT_ROOT  # noqa: E402


@pytest.fixture(scope="module")
def dagbag():
    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"campaign_test_3x3", "campaign_nightly"}


def test_each_site_has_its_own_group_with_every_site_step_mapped(dagbag):
    dag = dagbag.dags["campaign_test_3x3"]
    for site in ("USDF", "FRDF", "UKDF_RAL"):
        for step in ("step1", "step2a", "step2b", "step2d", "step2e", "step3", "step4", "step5"):
            task = dag.get_task(f"{site}.{step}")
            assert task.task_group.group_id == site
            assert type(task).__name__ == "MappedOperator", f"{site}.{step} should be mapped over work groups"
        assert f"{site}.check_inputs" in dag.get_task(f"{site}.step1").upstream_task_ids
    assert "UKDF_LANCS.step1" not in dag.task_dict


def test_global_steps_wait_for_every_site_and_run_at_the_hub(dagbag):
    dag = dagbag.dags["campaign_test_3x3"]
    step2c = dag.get_task("USDF.step2c")
    assert step2c.upstream_task_ids == {"USDF.review_step2c"}, "the 3x3 asks for a review first"
    assert dag.get_task("USDF.review_step2c").upstream_task_ids == {
        "FRDF.gather_for_step2c.verify",
        "UKDF_RAL.gather_for_step2c.verify",
        "USDF.step2b",
    }
    assert dag.get_task("USDF.final_qa").upstream_task_ids == {
        "FRDF.return_products.verify",
        "UKDF_RAL.return_products.verify",
        "USDF.step5",
    }
    assert dag.get_task("USDF.archive_products.register").upstream_task_ids == {"USDF.final_qa"}


def test_the_tape_hop_is_confirmed_before_any_site_copy_is_released(dagbag):
    dag = dagbag.dags["campaign_test_3x3"]
    chain = ["register", "replicate", "wait", "confirm_tape"]
    for before, after in zip(chain, chain[1:]):
        assert f"USDF.archive_products.{before}" in dag.get_task(f"USDF.archive_products.{after}").upstream_task_ids
    assert type(dag.get_task("USDF.archive_products.wait")).__name__ == "HopReplicationSensor"
    for site in ("FRDF", "UKDF_RAL"):
        release = dag.get_task(f"{site}.release_site_copies")
        # (and its own return hop, already upstream of the tape: for the grid's order)
        assert release.upstream_task_ids == {"USDF.archive_products.confirm_tape", f"{site}.return_products.verify"}
        assert release.queue == site.lower()
    assert "USDF.release_site_copies" not in dag.task_dict, "the hub keeps its copies"
    assert dag.get_task("campaign_report").upstream_task_ids == {
        "USDF.archive_products.confirm_tape",
        "FRDF.release_site_copies",
        "UKDF_RAL.release_site_copies",
        "USDF.archive_products.confirm_IDAC_UK",
        "USDF.site_qa",
    }


def test_the_site_qa_runs_at_the_hub_once_the_second_sites_copies_are_home(dagbag):
    dag = dagbag.dags["campaign_test_3x3"]
    qa = dag.get_task("USDF.site_qa")
    assert type(qa).__name__ == "SiteQaOperator" and qa.queue == "usdf"
    # After every fan-in that carries a compared type (return_products), not the step2c gather.
    assert qa.upstream_task_ids == {"FRDF.return_products.verify", "UKDF_RAL.return_products.verify", "USDF.step5"}
    assert qa.retries == dag.default_args["retries"], "a QA failure is not retried: SiteQaFailed is a fail exception"


def test_products_go_to_the_idacs_the_tape_hop_names_only_after_tape(dagbag):
    dag = dagbag.dags["campaign_test_3x3"]
    group = "USDF.archive_products"
    copy, wait, confirm = (dag.get_task(f"{group}.{t}_IDAC_UK") for t in ("to", "wait", "confirm"))
    assert copy.upstream_task_ids == {f"{group}.confirm_tape"}
    assert wait.upstream_task_ids == {copy.task_id} and confirm.upstream_task_ids == {wait.task_id}
    assert (type(copy).__name__, type(wait).__name__, type(confirm).__name__) == (
        "CopyToIdacOperator",
        "HopReplicationSensor",
        "ConfirmIdacOperator",
    )
    assert (copy.idac, confirm.idac, copy.hop) == ("IDAC_UK", "IDAC_UK", "archive_products")
    assert {copy.queue, wait.queue, confirm.queue} == {"usdf"}
    assert dag.get_task(f"{group}.confirm_tape").downstream_task_ids == {
        copy.task_id,
        "FRDF.release_site_copies",
        "UKDF_RAL.release_site_copies",
        "campaign_report",
    }
    assert not [t for t in dag.task_dict if "IDAC_FR" in t], "only the IDACs the campaign names"
    assert not [t for t in dagbag.dags["campaign_nightly"].task_dict if "IDAC" in t]


def test_hops_are_register_replicate_wait_ingest_verify(dagbag):
    dag = dagbag.dags["campaign_test_3x3"]
    chain = ["register", "replicate", "wait", "ingest", "verify"]
    for site in ("FRDF", "UKDF_RAL"):
        for hop in ("gather_for_step2c", "distribute_step2c", "return_products"):
            for before, after in zip(chain, chain[1:]):
                assert f"{site}.{hop}.{before}" in dag.get_task(f"{site}.{hop}.{after}").upstream_task_ids
        assert dag.get_task(f"{site}.distribute_step2c.register").upstream_task_ids == {
            "USDF.step2c",
            f"{site}.gather_for_step2c.verify",  # already upstream of step2c: for the grid's order
        }
        # ... whose skip (a site with only an overlap tract sends nothing for step2c) it does not take
        assert dag.get_task(f"{site}.distribute_step2c.register").trigger_rule == "none_failed_min_one_success"
        assert dag.get_task(f"{site}.step2d").upstream_task_ids == {
            f"{site}.check_inputs",
            f"{site}.distribute_step2c.verify",
        }
    assert not any(t.startswith("USDF.gather_for_step2c") for t in dag.task_dict), "the hub sends nothing to itself"


def test_the_wait_is_deferrable_and_queues_follow_the_sites(dagbag):
    dag = dagbag.dags["campaign_test_3x3"]
    assert type(dag.get_task("FRDF.gather_for_step2c.wait")).__name__ == "HopReplicationSensor"
    assert dag.get_task("FRDF.gather_for_step2c.register").queue == "frdf"
    assert dag.get_task("FRDF.gather_for_step2c.ingest").queue == "usdf"
    assert dag.get_task("FRDF.distribute_step2c.ingest").queue == "frdf"


def test_the_trigger_form_offers_sites_tracts_and_dry_run(dagbag):
    dag = dagbag.dags["campaign_test_3x3"]
    params = dag.params
    assert params["sites"] == ["USDF", "FRDF", "UKDF_RAL"]
    assert params["tracts"] is None and params["dry_run"] is False, "no tracts picked: every tract"
    assert dag.schedule is None
    assert dagbag.dags["campaign_nightly"].schedule == "0 3 * * *"


def test_the_trigger_form_picks_sites_and_tracts_from_the_campaigns_and_refuses_others(dagbag):
    from airflow.sdk.definitions.param import ParamValidationError

    params = dagbag.dags["campaign_test_3x3"].params
    sites, tracts = params.get_param("sites"), params.get_param("tracts")
    assert sites.schema["examples"] == ["USDF", "FRDF", "UKDF_RAL"], "a multi-select, not free text"
    assert sites.schema["values_display"]["FRDF"].startswith("FRDF (CC-IN2P3): tracts ")
    assert tracts.schema["examples"] == [str(t) for t in range(6)] and tracts.schema["values_display"]["2"] == (
        "tract 2 (FRDF)"
    )
    assert (
        tracts.resolve(["0", "2"]) == ["0", "2"] and tracts.resolve([0, 2]) == [0, 2] and tracts.resolve(None) is None
    )
    for bad in ([99], ["x"]):
        with pytest.raises(ParamValidationError):
            tracts.resolve(bad)
    with pytest.raises(ParamValidationError):
        sites.resolve(["USDF", "NOWHERE"])
    assert all(params.get_param(name).description for name in params), "help text on each field"


def test_parsing_is_fast_and_touches_no_services(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("DAG parsing must not open network connections")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    t0 = time.perf_counter()
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    assert time.perf_counter() - t0 < 30  # generous: a sanity bound, the benchmark measures speed


def test_a_bad_campaign_file_is_left_out_and_logged_while_good_ones_load(tmp_path, caplog):
    from drp_campaign.dag_factory import build_all_dags
    from drp_campaign.settings import CAMPAIGNS_DIR

    pipeline = str(CAMPAIGNS_DIR.parent / "pipelines" / "drp-mock.yaml")
    good = (CAMPAIGNS_DIR / "test-3x3.yaml").read_text().replace("../pipelines/drp-mock.yaml", pipeline)
    (tmp_path / "good.yaml").write_text(good)
    (tmp_path / "bad.yaml").write_text(
        good.replace("name: test-3x3", "name: bad-one").replace("FRDF: [2, 3]", "FRDF: [2, 1]")
    )
    with caplog.at_level("ERROR"):
        dags = build_all_dags(tmp_path)
    assert list(dags) == ["campaign_test_3x3"]
    assert "bad.yaml" in caplog.text and "tract 1" in caplog.text


def test_one_bad_file_of_any_kind_loses_only_its_own_dag(tmp_path, caplog, monkeypatch):
    """A refused config, an unexpected error and a file that takes too long (#12 finding 3)."""
    from drp_campaign import dag_factory
    from drp_campaign.settings import CAMPAIGNS_DIR

    pipeline = str(CAMPAIGNS_DIR.parent / "pipelines" / "drp-mock.yaml")
    good = (CAMPAIGNS_DIR / "test-3x3.yaml").read_text().replace("../pipelines/drp-mock.yaml", pipeline)
    (tmp_path / "good.yaml").write_text(good)
    laughs = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else 'lol'}]\n" for i in range(9))
    (tmp_path / "laughs.yaml").write_text(laughs + good.replace("name: test-3x3", "name: *l8"))
    for name in ("crash", "slow"):
        (tmp_path / f"{name}.yaml").write_text(good.replace("name: test-3x3", f"name: {name}"))
    (tmp_path / "twin.yaml").write_text(good)  # the same campaign name: the first file keeps its DAG
    real_load = dag_factory.load_campaign

    def load(path, *args):
        if path.name == "crash.yaml":  # a fault the config checks do not foresee
            raise RuntimeError("injected: something no check foresaw")
        if path.name == "slow.yaml":
            time.sleep(60)
        return real_load(path, *args)

    monkeypatch.setattr(dag_factory, "load_campaign", load)
    t0 = time.monotonic()
    with caplog.at_level("ERROR"):
        dags = dag_factory.build_all_dags(tmp_path, budget_s=1.0)
    assert time.monotonic() - t0 < 20
    assert list(dags) == ["campaign_test_3x3"] and str(tmp_path / "good.yaml") in dags["campaign_test_3x3"].doc_md
    errors = {r.getMessage().split(":")[1].strip().rsplit("/", 1)[-1]: r for r in caplog.records}
    assert set(errors) == {"crash.yaml", "laughs.yaml", "slow.yaml", "twin.yaml"}, caplog.text
    assert "injected: something no check foresaw" in errors["crash.yaml"].exc_text
    assert "expands to more than 100000 values" in errors["laughs.yaml"].getMessage()
    assert "not loaded within 1 s" in errors["slow.yaml"].getMessage()
    assert f"is already the DAG of {tmp_path / 'good.yaml'}" in errors["twin.yaml"].getMessage()


def test_the_time_budget_keeps_an_outer_alarm():
    """Airflow times the whole DAG file with SIGALRM too: the budget must not swallow that alarm."""
    import signal

    from drp_campaign.dag_factory import _time_budget

    rang = []
    previous = signal.signal(signal.SIGALRM, lambda *_: rang.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 5.0)
        with _time_budget(1.0, PROJECT_ROOT / "x.yaml"):
            pass
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 3.0 < left <= 5.0 and signal.getsignal(signal.SIGALRM) is not None and not rang
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_the_grid_lists_each_sites_tasks_in_data_path_order(dagbag):
    """Airflow's grid, sorted topologically (scripts/env.sh), orders a group's tasks by the edges
    inside the group: a site's fan-out and release follow its own latest task too (#15)."""
    for dag_id, site in (("campaign_test_3x3", "FRDF"), ("campaign_nightly", "UKDF_LANCS")):
        group = dagbag.dags[dag_id].task_group_dict[site]
        order = [node.node_id.removeprefix(f"{site}.") for node in group.topological_sort()]
        assert order == [
            "check_software", "place_inputs", "check_inputs", "step1", "step2a", "step2b", "gather_for_step2c",
            "distribute_step2c", "step2d", "step2e", "step3", "step4", "step5", "return_products",
            "release_site_copies",
        ], (dag_id, order)  # fmt: skip


def test_a_dr_sized_campaign_takes_tract_numbers_and_a_task_names_a_tract_the_campaign_lacks():
    """Beyond PICK_LIST_TRACTS the form takes numbers (a 10,000-entry pick list would be copied into
    every task's params); a tract the campaign does not have then fails the first task naming it."""
    from airflow.sdk.exceptions import AirflowFailException

    from drp_campaign.dag_factory import PICK_LIST_TRACTS, _tracts_param
    from drp_campaign.operators.steps import CheckInputsOperator

    many = list(range(PICK_LIST_TRACTS + 1))
    param = _tracts_param(many, dict.fromkeys(many, "FRDF"))
    assert "enum" not in param.schema["items"] and param.resolve([0, PICK_LIST_TRACTS]) == [0, PICK_LIST_TRACTS]
    assert "0-200 (201 in the campaign)" in param.description
    campaign = PROJECT_ROOT / "configs" / "campaigns" / "test-3x3.yaml"
    task = CheckInputsOperator(task_id="check_inputs", site="FRDF", campaign_file=str(campaign))
    assert task.selected_tracts({"params": {"tracts": ["2", 3]}}) == [2, 3]
    with pytest.raises(AirflowFailException, match="tracts 7, 99 are not in campaign test-3x3"):
        task.selected_tracts({"params": {"tracts": [2, 99, 7]}})


def test_an_edge_sites_tasks_go_to_the_edge_executor_when_it_is_deployed_else_the_default(monkeypatch):
    from drp_campaign.config import load_campaign
    from drp_campaign.dag_factory import build_dag
    from drp_campaign.settings import CAMPAIGNS_DIR

    campaign = load_campaign(CAMPAIGNS_DIR / "nightly.yaml")  # UKDF_LANCS is edge_worker in sites.yaml
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor,airflow.providers.edge3.executors.EdgeExecutor")
    dag = build_dag(campaign)
    lancs = [t for t in dag.tasks if t.queue == "ukdf_lancs"]
    assert lancs and all(t.executor == "EdgeExecutor" for t in lancs)
    assert {t.executor for t in dag.tasks if t.queue != "ukdf_lancs"} == {None}
    # The hop task that runs at the hub for LANCS's data goes to the hub's Celery worker.
    assert dag.get_task("UKDF_LANCS.place_inputs.register").executor is None
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")  # the demo: everything local
    assert {t.executor for t in build_dag(campaign).tasks} == {None}
