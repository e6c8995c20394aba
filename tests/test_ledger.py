"""The ledger balances only when every dataset sent arrived with the same size and checksum."""

import pytest

from drp_campaign.errors import DrpError
from drp_campaign.ledger import HopEntry, Ledger, LedgerUnbalanced


@pytest.fixture
def ledger(tmp_path):
    return Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")


def sent(n):
    return [HopEntry(f"id-{i}", "isolated_star", "drp/x/FRDF/step2b/g000", 100 + i, f"{i:08x}") for i in range(n)]


def register(ledger, entries, dst="USDF"):
    return ledger.record_registered(
        run_key="r1", campaign="test-3x3", hop="gather", src_site="FRDF", dst_site=dst, entries=entries
    )


def test_balanced_when_everything_arrives_intact(ledger):
    assert register(ledger, sent(3)) == 3
    ledger.record_arrived(run_key="r1", hop="gather", dst_site="USDF", entries=sent(3))
    [balance] = ledger.check_balanced("r1")
    assert (balance.sent, balance.arrived, balance.arrived_bytes) == (3, 3, 303)


def test_registering_twice_adds_nothing(ledger):
    register(ledger, sent(3))
    assert register(ledger, sent(3)) == 0
    assert ledger.hop_balances("r1")[0].sent == 3


def test_missing_and_damaged_datasets_are_named(ledger):
    register(ledger, sent(3))
    damaged = HopEntry("id-1", "isolated_star", "drp/x/FRDF/step2b/g000", 101, "deadbeef")
    ledger.record_arrived(run_key="r1", hop="gather", dst_site="USDF", entries=[sent(1)[0], damaged])
    with pytest.raises(LedgerUnbalanced) as err:
        ledger.check_balanced("r1")
    message = str(err.value)
    assert "gather FRDF->USDF: 1/3 intact" in message
    assert "id-1" in message and "adler32 deadbeef" in message
    assert "id-2" in message and "never arrived" in message


def test_rejected_datasets_carry_the_reason(ledger):
    register(ledger, sent(1))
    ledger.record_rejected(run_key="r1", hop="gather", dst_site="USDF", rejected=[("id-0", "checksum mismatch")])
    [balance] = ledger.hop_balances("r1")
    assert not balance.balanced
    assert "refused at USDF: checksum mismatch" in balance.problems[0]


def test_step_attempts_count_retries(ledger):
    import datetime as dt

    now = dt.datetime(2026, 11, 25)
    for status in ("failed", "succeeded"):
        ledger.record_step(
            run_key="r1",
            campaign="test-3x3",
            dag_run_id="manual__x",
            site="FRDF",
            step="step2b",
            group_label="g000",
            output_run="run",
            status=status,
            quanta={"total": 2, "succeeded": 2},
            started=now,
            finished=now,
            duration_s=1.5,
        )
    [record] = ledger.step_records("r1")
    assert record["status"] == "succeeded" and record["attempts"] == 2


def test_a_pair_is_checked_on_its_own_while_another_source_is_still_in_flight(ledger):
    register(ledger, sent(2))  # FRDF -> USDF
    ledger.record_registered(
        run_key="r1",
        campaign="test-3x3",
        hop="gather",
        src_site="UKDF_RAL",
        dst_site="USDF",
        entries=[HopEntry("other", "isolated_star", "run", 5, "00000005")],
    )
    ledger.record_arrived(run_key="r1", hop="gather", dst_site="USDF", entries=sent(2))
    [frdf] = ledger.check_balanced("r1", "gather", "USDF", src_site="FRDF")
    assert frdf.balanced and frdf.sent == 2
    with pytest.raises(LedgerUnbalanced, match="UKDF_RAL->USDF: 0/1 intact"):
        ledger.check_balanced("r1", "gather", "USDF")


def test_many_tasks_opening_a_fresh_postgres_ledger_at_once_all_succeed():
    """The first tasks of a campaign all open the ledger together: database and tables are made once."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from conftest import drop_database

    name = f"drp_ledger_race_{uuid.uuid4().hex[:8]}"
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    try:
        with ThreadPoolExecutor(6) as pool:
            ledgers = list(pool.map(lambda _: Ledger(url), range(6)))
        assert all(lg.hop_balances("none") == [] for lg in ledgers)
        for lg in ledgers:
            lg.engine.dispose()
    finally:
        drop_database(name)


def test_a_ledger_made_before_accepted_failures_gets_the_new_columns(tmp_path):
    """An existing ledger (older step_runs without quanta_accepted / wms_run_id) is brought up to date."""
    import datetime as dt

    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE step_runs (run_key VARCHAR(200), site VARCHAR(50), step VARCHAR(100), "
                "group_label VARCHAR(50), "
                "campaign VARCHAR(100) NOT NULL, dag_run_id VARCHAR(250) NOT NULL, output_run VARCHAR(500) NOT NULL, "
                "status VARCHAR(20) NOT NULL, quanta_total INTEGER NOT NULL, quanta_succeeded INTEGER NOT NULL, "
                "quanta_failed INTEGER NOT NULL, attempts INTEGER NOT NULL, "
                "started DATETIME NOT NULL, finished DATETIME NOT NULL, "
                "duration_s FLOAT NOT NULL, PRIMARY KEY (run_key, site, step, group_label))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO step_runs VALUES ('old', 'FRDF', 'step1', 'g000', 'test-3x3', 'd', 'r', 'succeeded', "
                "4, 4, 0, 1, '2026-01-01 00:00:00', '2026-01-01 00:01:00', 60.0)"
            )
        )
    ledger = Ledger(url)
    [old] = ledger.step_records("old")
    assert (old["quanta_accepted"], old["wms_run_id"]) == (0, "")
    now = dt.datetime(2026, 1, 2)
    ledger.record_step(
        run_key="new",
        campaign="test-3x3",
        dag_run_id="d",
        site="FRDF",
        step="step1",
        group_label="g000",
        output_run="r",
        status="accepted",
        quanta={"total": 4, "succeeded": 3, "failed": 1, "accepted": 1},
        started=now,
        finished=now,
        duration_s=1.0,
        wms_run_id="/submit/path",
    )
    [new] = ledger.step_records("new")
    assert (new["status"], new["quanta_accepted"], new["wms_run_id"]) == ("accepted", 1, "/submit/path")
    from drp_campaign.report import build_report, format_report

    text = format_report(build_report(ledger, "test-3x3", "new"))
    assert "accepted failures 1" in text and "1 failed quanta accepted by the failure rules" in text


# -- run keys (issue #12 finding 4): a key names one campaign run, never two ---------------------


def test_a_run_key_names_one_run_and_a_second_run_on_it_is_refused(ledger):
    from drp_campaign.graph import run_key
    from drp_campaign.ledger import RunKeyTaken

    first, second = "c.a", "c:a"  # Airflow accepts both; they differ only in punctuation
    assert run_key(first) == run_key(second) == "c-a"
    ledger.claim_run_key(run_key(first), "test-3x3", first)
    ledger.claim_run_key(run_key(first), "test-3x3", first)  # the same run again (any task, a retry): fine
    with pytest.raises(RunKeyTaken) as err:
        ledger.claim_run_key(run_key(second), "test-3x3", second)
    assert "'c:a'" in str(err.value) and "'c.a'" in str(err.value) and "run id" in str(err.value)
    with pytest.raises(RunKeyTaken):  # another campaign's run on the same key: refused too
        ledger.claim_run_key(run_key(first), "nightly", first)
    assert ledger.campaign_run("c-a")["dag_run_id"] == first


def test_a_run_key_is_never_empty_and_never_too_long():
    from drp_campaign.graph import RUN_KEY_MAX, run_key

    assert run_key(":::").startswith("run-") and run_key(":::") != run_key("...")
    long_a, long_b = "manual__" + "a" * 200 + "1", "manual__" + "a" * 200 + "2"
    assert len(run_key(long_a)) <= RUN_KEY_MAX and run_key(long_a) != run_key(long_b)


def test_a_failover_is_recorded_tract_by_tract_once_and_a_tract_never_moves_twice(ledger):
    ledger.record_failover("k1", "FRDF", "UKDF_RAL", [3, 2], by="operator")
    ledger.record_failover("k1", "FRDF", "UKDF_RAL", [2], by="someone else")  # the command run again: no change
    assert ledger.moved_tracts("k1") == {2: "UKDF_RAL", 3: "UKDF_RAL"}
    assert [(r["tract"], r["from_site"], r["moved_by"]) for r in ledger.failovers("k1")] == [
        (2, "FRDF", "operator"),
        (3, "FRDF", "operator"),
    ]
    with pytest.raises(
        DrpError, match=r"tracts 3 \(to UKDF_RAL\) were already moved elsewhere; not moving them to USDF"
    ):
        ledger.record_failover("k1", "FRDF", "USDF", [3], by="operator")
    assert ledger.moved_tracts("k1") == {2: "UKDF_RAL", 3: "UKDF_RAL"} and ledger.moved_tracts("k2") == {}
