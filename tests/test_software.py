"""Software in place (issue #5): each site's stack, reached through its own setup command, must report
the campaign's pinned stack version and expand the pipeline exactly as the hub's does.

Real stack throughout: `software-report` runs in the science-stack env behind each site's
`stack_setup`, and a site with another stack version is a real install made visible there (package
metadata of 29.2025.1000 first on its PYTHONPATH), not a mocked answer. The operator's execute() is
called with a minimal context (ti.xcom_pull, params, run_id): no Airflow services needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from drp_campaign import settings
from drp_campaign.config import load_campaign, load_sites
from drp_campaign.operators.software import (
    CheckSoftwareOperator,
    NoSoftwareReference,
    SoftwareMismatch,
    StackSetupFailed,
)
from drp_campaign.stack import run_stack

pytestmark = pytest.mark.integration

CAMPAIGN = settings.CAMPAIGNS_DIR / "test-3x3.yaml"
PIPELINE = settings.CONFIGS_DIR / "pipelines" / "drp-mock.yaml"
PINNED = "30.2026.4300"
OLD = "29.2025.1000"
STACK_PACKAGES = ("lsst-daf-butler", "lsst-pipe-base", "lsst-ctrl-bps", "lsst-ctrl-mpexec")
HUB_TASK = "USDF.check_software"
RUN_ID = "manual__2026-01-01T00:00:00+00:00"

if not (settings.stack_prefix() / "bin" / "python").exists():  # pragma: no cover - part of the setup
    pytest.skip(f"science-stack env missing at {settings.stack_prefix()}", allow_module_level=True)


# -- helpers --------------------------------------------------------------------------------------
class FakeTI:
    """The one thing the operator asks of its task instance: the hub's XCom."""

    def __init__(self, xcoms: dict[str, dict] | None = None):
        self.xcoms = xcoms or {}
        self.asked: list[str] = []

    def xcom_pull(self, task_ids=None, key="return_value", **_):
        self.asked.append(task_ids)
        return self.xcoms.get(task_ids)


def context(xcoms: dict[str, dict] | None = None, sites: list[str] | None = None) -> dict:
    return {"ti": FakeTI(xcoms), "params": {"sites": sites, "tracts": [], "dry_run": False}, "run_id": RUN_ID}


def check(site: str, campaign: Path = CAMPAIGN, sites_file: Path | None = None, reference: str | None = HUB_TASK):
    return CheckSoftwareOperator(
        task_id="check_software",
        campaign_file=str(campaign),
        sites_file=str(sites_file) if sites_file else None,
        site=site,
        reference_task_id=None if site == "USDF" else reference,
    )


def campaign_copy(directory: Path, edit_pipeline=None) -> Path:
    """test-3x3 with its pipeline copied next to it (optionally edited)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = PIPELINE.read_text()
    (directory / "drp-mock.yaml").write_text(edit_pipeline(text) if edit_pipeline else text)
    doc = yaml.safe_load(CAMPAIGN.read_text())
    doc["pipeline"] = "drp-mock.yaml"
    (directory / "test-3x3.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory / "test-3x3.yaml"


def drop_an_input(text: str) -> str:
    """A changed task config: the last task that reads two or more dataset types reads one fewer."""
    doc = yaml.safe_load(text)
    label = [label for label, task in doc["tasks"].items() if len(task["inputs"]) >= 2][-1]
    doc["tasks"][label]["inputs"] = doc["tasks"][label]["inputs"][:-1]
    return yaml.safe_dump(doc, sort_keys=False)


def sites_with(tmp_path: Path, site: str, stack_setup: str) -> Path:
    """A copy of configs/sites.yaml whose SITE has another setup command."""
    doc = yaml.safe_load(settings.DEFAULT_SITES_FILE.read_text())
    doc["sites"][site]["stack_setup"] = stack_setup
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def shadow_install(directory: Path, versions: dict[str, str]) -> Path:
    """Installed-package metadata of other versions, to be put first on a site's PYTHONPATH."""
    for name, version in versions.items():
        dist = directory / f"{name.replace('-', '_')}-{version}.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (dist / "INSTALLER").write_text("pip\n")
    return directory


def with_pythonpath(directory: Path) -> str:
    return f'source "$DRP_STACK_PREFIX/bin/activate" && export PYTHONPATH="{directory}${{PYTHONPATH:+:$PYTHONPATH}}"'


def report(site: str, campaign: Path, sites_file: Path | None = None) -> dict:
    """The stack side's answer through the site's real setup command (what the operator's hook runs)."""
    sites = load_sites(sites_file)
    args = ["--campaign", str(campaign), "--sites", str(sites.file)]
    return run_stack(sites.sites[site], "software-report", args, log=lambda line: None)


@pytest.fixture(scope="module")
def hub_report() -> dict:
    """The hub's check on the real campaign, as its XCom: the reference for every other site."""
    return check("USDF").execute(context())


# -- (a) the stack side ---------------------------------------------------------------------------
def test_stack_side_reports_the_installed_version_and_a_stable_pipeline_hash(tmp_path, hub_report):
    first = report("FRDF", CAMPAIGN)
    second = report("FRDF", CAMPAIGN)
    assert first["stack_version"] == PINNED
    assert first["packages"] == {name: PINNED for name in STACK_PACKAGES}
    assert first["python"].startswith("3.12.")
    assert len(first["pipeline_sha"]) == 64 and int(first["pipeline_sha"], 16) >= 0
    assert first["pipeline_tasks"] == len(load_campaign(CAMPAIGN).pipeline_spec.tasks) > 1
    assert second["pipeline_sha"] == first["pipeline_sha"] == hub_report["pipeline_sha"]
    # The same definition in another place hashes alike: the hash is of the expanded tasks, not the file.
    same = report("FRDF", campaign_copy(tmp_path / "same"))
    assert same["pipeline_sha"] == first["pipeline_sha"]
    # One task's config changed: another hash.
    changed = report("FRDF", campaign_copy(tmp_path / "changed", drop_an_input))
    assert changed["pipeline_sha"] != first["pipeline_sha"]
    assert changed["pipeline_tasks"] == first["pipeline_tasks"]


# -- (b) a site with another stack version ---------------------------------------------------------
def test_a_site_with_another_stack_version_fails_naming_both_and_the_hub_passes(tmp_path):
    shadow = shadow_install(tmp_path / "old-stack", {name: OLD for name in STACK_PACKAGES})
    sites_file = sites_with(tmp_path, "FRDF", with_pythonpath(shadow))
    # The run is for FRDF only; the hub checks anyway (its global steps run whichever sites run).
    hub = check("USDF", sites_file=sites_file).execute(context(sites=["FRDF"]))
    assert hub["site"] == "USDF" and hub["stack_version"] == PINNED and hub["reference"] is None
    ctx = context({HUB_TASK: hub}, sites=["FRDF"])
    with pytest.raises(SoftwareMismatch) as err:
        check("FRDF", sites_file=sites_file).execute(ctx)
    text = str(err.value)
    assert isinstance(err.value, AirflowFailException)  # not retried: the site would report the same
    assert f"site FRDF: stack version {OLD} does not match the campaign's pinned {PINNED}" in text
    assert "configs/campaigns/test-3x3.yaml: stack_version" in text
    assert f"install {PINNED} at FRDF" in text and str(shadow) in text and "stack_setup" in text
    # The other sites, on the campaign's stack, pass against the same hub report.
    ral = check("UKDF_RAL", sites_file=sites_file).execute(context({HUB_TASK: hub}))
    assert ral["stack_version"] == PINNED and ral["reference"] == "USDF"
    assert ral["pipeline_sha"] == hub["pipeline_sha"]


def test_a_half_upgraded_stack_is_reported_as_mixed_with_each_package(tmp_path, hub_report):
    shadow = shadow_install(tmp_path / "half", {"lsst-pipe-base": OLD})
    sites_file = sites_with(tmp_path, "FRDF", with_pythonpath(shadow))
    found = report("FRDF", CAMPAIGN, sites_file)
    assert found["stack_version"] == "mixed"
    assert found["packages"]["lsst-pipe-base"] == OLD and found["packages"]["lsst-daf-butler"] == PINNED
    with pytest.raises(SoftwareMismatch) as err:
        check("FRDF", sites_file=sites_file).execute(context({HUB_TASK: hub_report}))
    text = str(err.value)
    assert f"stack version mixed (lsst-daf-butler {PINNED}, lsst-pipe-base {OLD}" in text
    assert f"pinned {PINNED}" in text and "site FRDF" in text


# -- (c) a pipeline that expands differently --------------------------------------------------------
def test_a_pipeline_hash_mismatch_names_both_hashes_the_file_and_the_hub(tmp_path, hub_report):
    changed_campaign = campaign_copy(tmp_path / "changed", drop_an_input)
    here = report("FRDF", changed_campaign)["pipeline_sha"]
    assert here != hub_report["pipeline_sha"]
    ctx = context({HUB_TASK: hub_report})
    with pytest.raises(SoftwareMismatch) as err:
        check("FRDF", campaign=changed_campaign).execute(ctx)
    text = str(err.value)
    assert ctx["ti"].asked == [HUB_TASK]
    assert here[:12] in text and hub_report["pipeline_sha"][:12] in text
    assert str(tmp_path / "changed" / "drp-mock.yaml") in text
    assert "site FRDF" in text and "at the hub USDF" in text and HUB_TASK in text
    # ... while the unchanged pipeline passes against the same reference.
    ok = check("FRDF").execute(context({HUB_TASK: hub_report}))
    assert ok["pipeline_sha"] == hub_report["pipeline_sha"] and ok["reference"] == "USDF"


def test_no_hub_report_fails_instead_of_skipping_the_comparison(tmp_path):
    # Refused before the site's stack is even asked (a setup command that would fail proves it).
    sites_file = sites_with(tmp_path, "FRDF", "exit 7")
    with pytest.raises(NoSoftwareReference) as err:
        check("FRDF", sites_file=sites_file).execute(context({}))
    assert "site FRDF" in str(err.value) and HUB_TASK in str(err.value)


# -- (d) a setup command that fails ----------------------------------------------------------------
def test_a_failing_setup_command_names_the_site_and_its_setup(tmp_path, hub_report):
    missing = tmp_path / "no-such-stack"
    sites_file = sites_with(tmp_path, "FRDF", f'source "{missing}/bin/activate"')
    with pytest.raises(StackSetupFailed) as err:
        check("FRDF", sites_file=sites_file).execute(context({HUB_TASK: hub_report}))
    text = str(err.value)
    assert not isinstance(err.value, AirflowFailException)  # retried: a DF's file system may be back
    assert text.startswith("site FRDF: could not set up the stack")
    assert "stack command 'software-report' failed (exit 1)" in text and text.count("site FRDF") == 1
    assert f'stack_setup in {sites_file}: source "{missing}/bin/activate"' in text
    assert "No such file or directory" in text  # the shell's own words, from the site


def test_a_site_not_selected_skips_without_running_its_stack(tmp_path):
    # A setup command that would fail proves nothing ran.
    sites_file = sites_with(tmp_path, "FRDF", "exit 7")
    with pytest.raises(AirflowSkipException):
        check("FRDF", sites_file=sites_file).execute(context({}, sites=["USDF", "UKDF_RAL"]))


def test_the_hub_is_also_held_to_the_pin(tmp_path):
    shadow = shadow_install(tmp_path / "old-stack", {name: OLD for name in STACK_PACKAGES})
    sites_file = sites_with(tmp_path, "USDF", with_pythonpath(shadow))
    with pytest.raises(SoftwareMismatch) as err:
        check("USDF", sites_file=sites_file).execute(context())
    assert f"site USDF: stack version {OLD} does not match the campaign's pinned {PINNED}" in str(err.value)


def test_stack_side_software_report_is_a_subcommand():
    from drp_campaign.stackside.__main__ import build_parser

    args = build_parser().parse_args(["software-report", "--campaign", str(CAMPAIGN)])
    assert args.func.__name__ == "cmd_software_report"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["software-report"])  # --campaign is required
