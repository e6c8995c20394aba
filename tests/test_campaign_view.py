"""The campaign view plugin renders a run's steps and ledger from the ledger alone, to logged-in
users only: Airflow's own auth (its `get_user` dependency and the configured auth manager)."""

import datetime as dt
import html
import os
import secrets
import subprocess
import sys

import jwt
import pytest
from fastapi.testclient import TestClient

from drp_campaign.ledger import HopEntry, Ledger
from drp_campaign.plugins.campaign_view import DrpCampaignPlugin
from drp_campaign.plugins.campaign_view_app import app as view_app

app = DrpCampaignPlugin.fastapi_apps[0]["app"]  # what Airflow mounts under /drp

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def _reset_token_caches():
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager

    for name in ("_get_token_signer", "_get_token_validator"):  # cached per process, with the secret
        BaseAuthManager.__dict__[name].__func__.cache_clear()


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """Airflow's simple auth manager set up as the api-server sets it up (its users and roles, JWTs
    signed with a secret of this test, revocation in the metadata DB's revoked_token table, here a
    scratch SQLite DB): tokens by user, as `POST /auth/token` would issue them."""
    from airflow import settings
    from airflow.api_fastapi.app import init_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.models.revoked_token import RevokedToken

    work = tmp_path_factory.mktemp("airflow-auth")
    env = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{work / 'airflow.db'}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,operator:user,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(work / "passwords.json"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings.configure_vars()
        settings.reconfigure_orm()
        RevokedToken.__table__.create(settings.engine)
        _reset_token_caches()
        purge_cached_app()
        manager = init_auth_manager()
        users = {"viewer": "VIEWER", "operator": "USER", "admin": "ADMIN", "no-role": None}
        yield {
            name: manager.generate_jwt(SimpleAuthManagerUser(username=name, role=role)) for name, role in users.items()
        }
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        purge_cached_app()
        _reset_token_caches()
        settings.configure_vars()
        settings.reconfigure_orm()


def as_user(token: str) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


AIRFLOW_RUNS: list[dict] = []  # what the fake Airflow metadata DB holds (see `airflow_db`)
AIRFLOW_TASKS: dict[str, list] = {}


@pytest.fixture(autouse=True)
def work_dir(tmp_path, monkeypatch):
    """What the view writes (the plans' pictures) goes to the test's own directory."""
    monkeypatch.setenv("DRP_WORK_DIR", str(tmp_path / "work"))
    return tmp_path / "work"


@pytest.fixture(autouse=True)
def airflow_db(monkeypatch):
    """The view's reads of Airflow's metadata DB and of Rucio (plugins/airflow_records.py) answered
    from the lists above: the real reads run in the e2e, against a real Airflow and Rucio."""
    from drp_campaign.plugins import airflow_records

    AIRFLOW_RUNS.clear()
    AIRFLOW_TASKS.clear()

    def dag_runs(dag_id=None, run_id=None, limit=200):
        return [r for r in AIRFLOW_RUNS if dag_id in (None, r["dag_id"]) and run_id in (None, r["run_id"])][:limit]

    monkeypatch.setattr(airflow_records, "dag_runs", dag_runs)
    monkeypatch.setattr(airflow_records, "task_rows", lambda dag_id, run_id: AIRFLOW_TASKS.get(run_id, []))
    monkeypatch.setattr(airflow_records, "history", lambda dag_id, run_id: [])
    monkeypatch.setattr(airflow_records, "live_rule_states", lambda ids: {i: "GONE" for i in ids if i == "rule-abc123"})


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("DRP_LEDGER_URL", url)
    ledger = Ledger(url)
    ledger.claim_run_key("manual__2026-11-25T17-00-00", "test-3x3", "manual__2026-11-25T17:00:00+00:00")
    now = dt.datetime(2026, 11, 25, 17)
    ledger.record_step(
        run_key="manual__2026-11-25T17-00-00",
        campaign="test-3x3",
        dag_run_id="manual__2026-11-25T17:00:00+00:00",
        site="FRDF",
        step="step2b",
        group_label="g000",
        output_run="drp/test-3x3/x/FRDF/step2b/g000",
        status="failed",
        quanta={"total": 1, "failed": 1},
        started=now,
        finished=now,
        duration_s=3.0,
    )
    entries = [HopEntry("id-1", "isolated_star", "run", 10, "0000000a")]
    ledger.record_registered(
        run_key="manual__2026-11-25T17-00-00",
        campaign="test-3x3",
        hop="gather_for_step2c",
        src_site="UKDF_RAL",
        dst_site="USDF",
        entries=entries,
    )
    from drp_campaign.transfer.base import RuleStatus

    for state in ("REPLICATING", "STUCK"):  # the latest state wins
        ledger.record_rule(
            run_key="manual__2026-11-25T17-00-00",
            hop="gather_for_step2c",
            src_site="UKDF_RAL",
            dst_site="USDF",
            status=RuleStatus("rule-abc123", state, 1, 0, 0),
        )
    for released in (["rule-hold-9"], []):  # a re-run that released nothing keeps the first record
        ledger.record_release(
            run_key="manual__2026-11-25T17-00-00",
            hop="return_products",
            site="FRDF",
            rse="FRDF_DISK",
            files=20,
            nbytes=45858,
            rule_ids=released,
        )
    return ledger


def test_a_run_page_shows_steps_hops_and_the_verdict(ledger, tokens):
    client = as_user(tokens["viewer"])
    # The UI substitutes the raw run id; '+' arrives as ' ' in a query string and must still match.
    page = client.get("/run", params={"run_id": "manual__2026-11-25T17:00:00 00:00"})
    assert page.status_code == 200
    assert "Ledger UNBALANCED" in page.text
    assert "step2b" in page.text and "FRDF" in page.text and "0/1" in page.text
    assert "sent, never arrived" in page.text
    assert "rule-abc123" in page.text and "STUCK" in page.text and "REPLICATING" not in page.text
    assert "Site copies released" in page.text and "FRDF_DISK" in page.text and "rule-hold-9" in page.text
    [released] = client.get("/api/run", params={"run_id": "manual__2026-11-25T17-00-00"}).json()["released"]
    assert (released["site"], released["files"], released["bytes"], released["rules"]) == (
        "FRDF",
        20,
        45858,
        "rule-hold-9",
    )
    assert (
        client.get("/api/run", params={"run_id": "manual__2026-11-25T17:00:00+00:00"}).json()["ledger_balanced"]
        is False
    )


def test_an_unknown_run_is_a_clear_404_a_page_for_a_browser_json_for_the_api(ledger, tokens):
    client = as_user(tokens["viewer"])
    page = client.get("/run", params={"run_id": "nope"}, headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "no campaign run &#x27;nope&#x27; in the ledger or in Airflow" in page.text and 'href="runs"' in page.text
    api = client.get("/api/status", params={"run_id": "nope"})
    assert api.status_code == 404 and "no campaign run 'nope'" in api.json()["detail"]


def test_a_live_run_shows_its_site_step_matrix_from_airflows_task_states_merged_with_the_ledger(ledger, tokens):
    """The run is in flight: FRDF's step2b has a failed group, UKDF_RAL's gather hop waits on a
    rule that Rucio has since dropped (the ledger still says STUCK), the hub's gate awaits input."""
    from drp_campaign.live_status import TaskRow

    run_id = "manual__2026-11-25T17:00:00+00:00"
    AIRFLOW_RUNS.append(
        {
            "dag_id": "campaign_test_3x3",
            "run_id": run_id,
            "state": "running",
            "run_type": "manual",
            "start_date": dt.datetime(2026, 11, 25, 17, tzinfo=dt.UTC),
            "end_date": None,
        }
    )
    AIRFLOW_TASKS[run_id] = [
        TaskRow("FRDF.step2b", 0, "failed"),
        TaskRow("FRDF.step2b", 1, "success"),
        TaskRow("UKDF_RAL.gather_for_step2c.wait", -1, "deferred"),
        TaskRow("USDF.review_step2c", -1, "awaiting_input"),
    ]
    client = as_user(tokens["viewer"])
    status = client.get("/api/status", params={"run_id": run_id}).json()
    sites = {s["site"]: s for s in status["sites"]}
    assert sites["FRDF"]["cells"]["step2b"]["counts"] == {"failed": 1, "success": 1}
    assert sites["FRDF"]["cells"]["step2b"]["quanta"] == {"succeeded": 0, "total": 1, "failed": 1}
    [rule] = sites["UKDF_RAL"]["cells"]["gather_for_step2c"]["hop"]["rules"]
    assert (rule["rule_id"], rule["state"], rule["live"]) == ("rule-abc123", "GONE", True)
    assert sites["USDF"]["cells"]["review_step2c"]["state"] == "awaiting_input"
    page = client.get("/run", params={"run_id": "manual__2026-11-25T17-00-00"}).text
    assert '<meta http-equiv="refresh" content="15">' in page, "a run in flight refreshes itself"
    assert 'class="s-failed"' in page and 'class="s-awaiting_input"' in page and "rule GONE" in page
    assert "/tasks/FRDF.step2b/mapped" in page and "/tasks/group/UKDF_RAL.gather_for_step2c" in page
    assert "Needs attention" in page and "FRDF.step2b [0]</a> failed" in page, "what to look at first, on top"
    assert "/tasks/USDF.review_step2c/required_actions" in page
    AIRFLOW_RUNS[0]["state"] = "failed"
    assert "http-equiv" not in client.get("/run", params={"run_id": run_id}).text, "a finished run stays still"
    # A failed run can still be failed over: the page links the form, which proposes a data facility
    # down and the hub to take its work, and does not refresh (a half-filled form would be lost).
    assert "fail it over" in page
    form = client.get("/failover", params={"run_id": run_id}).text
    assert "<option selected>FRDF</option>" in form and 'name="to_site"><option selected>USDF</option>' in form
    assert "http-equiv" not in form and 'action="failover"' in form


def test_the_runs_list_gives_each_runs_verdict_and_the_schema_describes_the_api(ledger, tokens, tmp_path, monkeypatch):
    from drp_campaign.report import report_file

    report_file("manual__2026-11-25T17-00-00").parent.mkdir(parents=True)
    report_file("manual__2026-11-25T17-00-00").write_text('{"ledger_balanced": false, "site_qa": {"verdict": "pass"}}')
    AIRFLOW_RUNS.append(
        {
            "dag_id": "campaign_nightly",
            "run_id": "scheduled__2026-11-26T02:00:00+00:00",
            "state": "running",
            "run_type": "scheduled",
            "start_date": dt.datetime(2026, 11, 26, 2, tzinfo=dt.UTC),
            "end_date": None,
        }
    )
    client = as_user(tokens["viewer"])
    runs = {r["run_id"]: r for r in client.get("/api/runs").json()}
    ours = runs["manual__2026-11-25T17:00:00+00:00"]
    assert (ours["state"], ours["ledger_balanced"], ours["site_qa"]) == ("unknown to Airflow", False, "pass")
    nightly = runs["scheduled__2026-11-26T02:00:00+00:00"]
    assert (nightly["state"], nightly["run_type"], nightly["run_key"]) == ("running", "scheduled", None)
    page = client.get("/runs").text
    assert "UNBALANCED" in page and "scheduled" in page and 'http-equiv="refresh"' in page
    schema = client.get("/api/openapi.json").json()
    assert {"/api/status", "/api/runs", "/api/run", "/api/rule"} <= set(schema["paths"])
    assert "/run" not in schema["paths"], "pages are not API"


def test_the_runs_list_links_each_run_and_the_plugin_registers_its_views(ledger, tokens):
    page = as_user(tokens["viewer"]).get("/runs")
    assert 'href="run?run_id=manual__2026-11-25T17-00-00&amp;dag_id=campaign_test_3x3"' in page.text
    assert {v["destination"] for v in DrpCampaignPlugin.external_views} == {"nav", "dag_run"}
    assert {v["href"] for v in DrpCampaignPlugin.external_views if v["destination"] == "nav"} == {
        "/drp/runs",
        "/drp/plans",
    }
    assert 'href="plans"' in page.text
    assert DrpCampaignPlugin.fastapi_apps[0]["url_prefix"] == "/drp"


RUN = {"run_id": "manual__2026-11-25T17-00-00"}


def test_every_route_refuses_anonymous_callers_and_bad_tokens(ledger, tokens):
    """Finding 6 (#12): Airflow mounts plugin apps without auth; this one applies Airflow's own."""
    routes = [r.path for r in view_app.routes]
    assert sorted(routes) == [
        "/api/openapi.json",
        "/api/rule",
        "/api/run",
        "/api/runs",
        "/api/status",
        "/failover",  # the form (GET) and the failover itself (POST)
        "/failover",
        "/plan",
        "/plan.png",
        "/plans",
        "/run",
        "/runs",
        "/site_qa.png",
    ], "no docs pages; the schema only behind the login"
    forged = jwt.encode(
        jwt.decode(tokens["viewer"], options={"verify_signature": False}), secrets.token_urlsafe(64), algorithm="HS512"
    )
    params = {**RUN, "tract": 2, "rule_id": "rule-abc123", "name": "test-3x3", "picture": "skymap"}
    for path in routes:
        anonymous = TestClient(app).get(path, params=params)
        assert anonymous.status_code == 401 and "Not authenticated" in anonymous.text, (path, anonymous.text)
        assert as_user(forged).get(path, params=params).status_code == 403, path
        assert as_user("not.a.jwt").get(path, params=params).status_code == 403, path
        # The run has no site QA plot, and Airflow no record of it (no live status); Rucio is not up here.
        expected = {"/site_qa.png": 404, "/api/status": 404, "/api/rule": 502}.get(path, 200)
        assert as_user(tokens["viewer"]).get(path, params=params).status_code == expected, path
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert TestClient(app).get(path).status_code == 404, path
    failover = {"run_id": RUN["run_id"], "from_site": "FRDF", "to_site": "USDF"}
    assert TestClient(app).post("/failover", data=failover).status_code == 401
    assert as_user(forged).post("/failover", data=failover).status_code == 403


def test_a_revoked_token_is_refused(ledger, tokens):
    """A logged-out token (revoked in Airflow's DB) no longer opens the view, as for Airflow's API."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="viewer", role="VIEWER"))
    assert as_user(token).get("/runs").status_code == 200
    get_auth_manager().revoke_token(token)
    assert as_user(token).get("/runs").status_code == 403


def test_the_ui_session_cookie_opens_the_view(ledger, tokens):
    """A browser coming from Airflow's UI carries the `_token` cookie, not a header."""
    client = TestClient(app, cookies={"_token": tokens["viewer"]})
    assert client.get("/run", params=RUN).status_code == 200
    assert TestClient(app, cookies={"_token": "not.a.jwt"}).get("/runs").status_code == 403


def test_what_a_user_sees_follows_their_roles(ledger, tokens):
    """Every role may read runs; a user without a role is authenticated but may read none: 403 on
    a run, and the list leaves the run out."""
    for user in ("viewer", "operator", "admin"):
        assert as_user(tokens[user]).get("/api/run", params=RUN).status_code == 200, user
    roleless = as_user(tokens["no-role"])
    refused = roleless.get("/api/run", params=RUN)
    assert refused.status_code == 403 and "may not read the runs of DAG campaign_test_3x3" in refused.text
    assert roleless.get("/run", params=RUN).status_code == 403
    listing = roleless.get("/runs")
    assert listing.status_code == 200 and "manual__2026-11-25T17-00-00" not in listing.text
    assert "manual__2026-11-25T17-00-00" in as_user(tokens["viewer"]).get("/runs").text


def test_loading_the_plugin_leaves_the_view_and_airflows_api_server_unimported():
    """Every task process loads plugins (for macros); only the api-server needs the view's app and
    Airflow's auth dependency (~0.5 s of CPU to import): it is imported on its first request."""
    probe = (
        "import sys, drp_campaign.plugins.campaign_view; "
        "print(sorted(m for m in ('airflow.api_fastapi.app', 'drp_campaign.plugins.campaign_view_app') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_a_run_page_shows_the_site_qa_what_differs_and_its_plot(ledger, tokens, tmp_path, monkeypatch):
    from drp_campaign.report import site_qa_dir
    from drp_campaign.site_qa import plot_name

    key = "manual__2026-11-25T17-00-00"
    check = {"tract": 2, "dataset_type": "object_table", "site_a": "FRDF", "site_b": "UKDF_RAL", "note": ""}
    ledger.record_site_qa(
        key,
        [2],
        [
            {**check, "quantity": "rows", "value_a": 80, "value_b": 80, "tolerance": "relative 0.001", "ok": True},
            {
                **check,
                "quantity": "psf_flux.median",
                "value_a": 1000.0,
                "value_b": 1010.0,
                "tolerance": "relative 0.001",
                "ok": False,
            },
        ],
    )
    plot = site_qa_dir(key) / plot_name(2)
    plot.parent.mkdir(parents=True)
    plot.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    client = as_user(tokens["viewer"])
    page = client.get("/run", params={"run_id": key}).text
    assert "Site-independence QA FAILED" in page and "Tract 2: FRDF (product) vs UKDF_RAL, 1/2 within" in page
    assert "psf_flux.median" in page and "1010.0" in page and "relative 0.001" in page
    assert f'src="site_qa.png?run_id={key}&amp;tract=2"' in page
    image = client.get("/site_qa.png", params={"run_id": key, "tract": 2})
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == plot.read_bytes()
    missing = client.get("/site_qa.png", params={"run_id": key, "tract": 4})
    assert missing.status_code == 404 and "no site QA plot for tract 4" in missing.text
    assert as_user(tokens["no-role"]).get("/site_qa.png", params={"run_id": key, "tract": 2}).status_code == 403
    # The failed QA stopped the run before its report: the runs list takes the verdict from the ledger.
    [listed] = client.get("/api/runs").json()
    assert (listed["run_key"], listed["site_qa"], listed.get("ledger_balanced")) == (key, "fail", None)
    assert '<span class="bad">FAIL</span>' in client.get("/runs").text


def test_the_view_keeps_one_ledger_per_ledger_url_not_one_per_read(ledger, tmp_path, monkeypatch):
    from drp_campaign.plugins import campaign_view_app

    first = campaign_view_app._ledger()
    assert campaign_view_app._ledger() is first and first.url == ledger.url
    monkeypatch.setenv("DRP_LEDGER_URL", f"sqlite:///{tmp_path / 'other.db'}")  # another deployment's
    assert campaign_view_app._ledger() is not first


def test_the_plans_are_served_planned_simulated_and_drawn_once_per_change(ledger, tokens, tmp_path, monkeypatch):
    """Issue #16 item 3: the campaign view serves each plan of configs/plans with the CLI's
    report and its sky map, Gantt chart and storage pictures, drawn again only when a file changed."""
    from drp_campaign.planner import served

    drawn = []
    real_draw = served._draw
    monkeypatch.setattr(served, "_draw", lambda *a: drawn.append(a[0].doc.name) or real_draw(*a))
    viewer = as_user(tokens["viewer"])
    listing = viewer.get("/plans").text
    for name in ("dr1", "dr2", "nightly", "test-3x3"):
        assert f'href="plan?name={name}"' in listing, name

    page = viewer.get("/plan", params={"name": "test-3x3"})
    assert page.status_code == 200
    assert "x the lower bound" in page.text and "critical path" in page.text
    assert "plan --out writes campaign test-3x3" in page.text and "its DAG" in page.text
    assert "products_home: per_group" not in page.text, "the 3x3 plans products as the DAG returns them"
    for kind in ("skymap", "gantt", "storage"):
        assert f'src="plan.png?name=test-3x3&amp;picture={kind}"' in page.text
        png = viewer.get("/plan.png", params={"name": "test-3x3", "picture": kind})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG") and len(png.content) > 10_000, kind
        assert str(tmp_path / "work" / "plans" / "test-3x3") in str(served.served_plan("test-3x3").pictures[kind])
    assert drawn == ["test-3x3"], "the page and its three pictures: planned and drawn once"

    # DR1 by the fixed shares would not fit: the page says why, as `plan --out` does.
    fixed = tmp_path / "plans"
    fixed.mkdir()
    dr1 = (served.PLANS_DIR / "dr1.yaml").read_text()
    campaigns = served.PLANS_DIR.parent / "campaigns"
    (fixed / "dr1.yaml").write_text(
        dr1.replace("shares: capacity ", "shares: fixed    ").replace("../campaigns", str(campaigns))
    )
    monkeypatch.setattr(served, "PLANS_DIR", fixed)
    page = viewer.get("/plan", params={"name": "dr1"})
    assert "plan --out would write nothing" in page.text and "days" in page.text, page.text[:2000]
    assert "its DAG" not in page.text, "no campaign dr1 is loaded"
    assert "planned with products_home: per_group" in page.text and "the DAG does not do that yet" in page.text

    # A plan that does not load: its page names the file, the key and what to do; unknown: 404.
    (fixed / "dr1.yaml").write_text(
        dr1.replace("overlap: 0.005", "overlap: 0.9").replace("../campaigns", str(campaigns))
    )
    bad = viewer.get("/plan", params={"name": "dr1"}, headers={"accept": "text/html"})
    assert bad.status_code == 422 and "dr1.yaml" in bad.text and "overlap" in bad.text, bad.text
    missing = viewer.get("/plan", params={"name": "dr9"})
    assert missing.status_code == 404 and "no plan named 'dr9'" in missing.json()["detail"]
    assert "dr1" in missing.json()["detail"]
    assert viewer.get("/plan.png", params={"name": "dr1", "picture": "pie"}).status_code == 404
    (fixed / "unnamed.yaml").write_text("sites: [USDF]\n")
    (fixed / "twin.yaml").write_text((fixed / "dr1.yaml").read_text())  # names dr1 too
    assert "Not shown, no plan name of its own in: twin.yaml, unnamed.yaml" in viewer.get("/plans").text
    assert drawn == ["test-3x3", "dr1"]

    # The plan changes: drawn again, and the earlier version's pictures go.
    (fixed / "dr1.yaml").write_text(dr1.replace("../campaigns", str(campaigns)))
    first = served.served_plan("dr1").pictures["gantt"]
    (fixed / "dr1.yaml").write_text(dr1.replace("../campaigns", str(campaigns)).replace("days: 150", "days: 150.5"))
    assert viewer.get("/plan.png", params={"name": "dr1", "picture": "gantt"}).status_code == 200
    assert drawn == ["test-3x3", "dr1", "dr1", "dr1"]
    assert not first.exists() and [p.name for p in first.parent.parent.iterdir()] == [
        served.served_plan("dr1").pictures["gantt"].parent.name
    ]


def test_a_run_page_links_the_plan_of_its_campaign(ledger, tokens):
    page = as_user(tokens["viewer"]).get("/run", params=RUN)
    assert 'href="plan?name=test-3x3">its plan</a>' in page.text


def test_a_plans_page_answers_a_site_down_what_if_as_the_cli_does(ledger, tokens, capsys):
    from drp_campaign import cli

    viewer = as_user(tokens["viewer"])
    page = viewer.get("/plan", params={"name": "test-3x3"}).text
    assert '<select name="site_down">' in page and '<option value="UKDF_RAL">' in page and "Simulate" in page
    asked = {"name": "test-3x3", "site_down": "FRDF", "from_day": 0, "days": 1}
    answer = viewer.get("/plan", params=asked).text
    assert cli.main(["plan", "configs/plans/test-3x3.yaml", "--site-down", "FRDF", "--days", "1"]) == 0
    printed = capsys.readouterr().out
    outage = printed[printed.index("FRDF down for 1 days") :].strip()
    assert html.escape(outage) in answer, "the view's what-if is the CLI's, word for word"
    assert '<option value="FRDF" selected>' in answer
    bad = viewer.get("/plan", params={**asked, "site_down": "CHDF"}, headers={"accept": "text/html"})
    assert bad.status_code == 422 and "CHDF is not one of the plan&#x27;s sites" in bad.text, bad.text
    never = viewer.get("/plan", params={**asked, "days": 0})
    assert never.status_code == 422 and "lasts more than 0 days" in never.json()["detail"]
