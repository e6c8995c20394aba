"""Config models and `drp-campaign validate`: the shipped configs load, every bad input is refused.

Each bad-input case writes a modified copy of the shipped YAML (campaign test-3x3, its pipeline
and sites.yaml, same relative layout) to tmp_path and checks that `load_campaign` and the CLI both
refuse it with one message naming the file, the key path and the problem, and write nothing.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from drp_campaign import settings
from drp_campaign.config import (
    CampaignConfig,
    ConfigError,
    find_campaign_files,
    load_campaign,
    load_pipeline,
    load_sites,
)

CAMPAIGN = settings.CAMPAIGNS_DIR / "test-3x3.yaml"
PIPELINE = settings.CONFIGS_DIR / "pipelines" / "drp-mock.yaml"
SITES = settings.DEFAULT_SITES_FILE
# Where each document lives in the tmp_path copy (the campaign names its pipeline relatively).
LAYOUT = {
    "campaign": Path("configs/campaigns/test-3x3.yaml"),
    "pipeline": Path("configs/pipelines/drp-mock.yaml"),
    "sites": Path("configs/sites.yaml"),
}
SHIPPED = {"campaign": CAMPAIGN, "pipeline": PIPELINE, "sites": SITES}


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("drp-campaign")
    return [str(script)] if script.exists() else [sys.executable, "-m", "drp_campaign.cli"]


@dataclass
class Workspace:
    """Copies of the shipped configs, edited as data (or as text) before they are written."""

    root: Path
    docs: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    edited_as_text: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for name, path in SHIPPED.items():
            self.texts[name] = path.read_text()
            self.docs[name] = yaml.safe_load(self.texts[name])

    def path(self, name: str) -> Path:
        return self.root / LAYOUT[name]

    def line_of(self, name: str, prefix: str) -> int:
        """1-based number of the first line of a shipped document starting with prefix."""
        lines = self.texts[name].splitlines()
        return next(i for i, line in enumerate(lines, 1) if line.startswith(prefix))

    def write(self) -> None:
        for name in LAYOUT:
            if name in self.missing:
                continue
            path = self.path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            text = self.texts[name] if name in self.edited_as_text else yaml.safe_dump(self.docs[name], sort_keys=False)
            path.write_text(text)


Edit = Callable[[Workspace], None]


def _walk(doc: Any, dotted: str) -> tuple[Any, str]:
    *parents, last = dotted.split(".")
    for key in parents:
        doc = doc[key]
    return doc, last


def put(doc: str, dotted: str, value: Any) -> Edit:
    """Set a key (dotted path into the parsed document)."""

    def edit(ws: Workspace) -> None:
        parent, last = _walk(ws.docs[doc], dotted)
        parent[last] = value

    return edit


def drop(doc: str, dotted: str) -> Edit:
    """Delete a key."""

    def edit(ws: Workspace) -> None:
        parent, last = _walk(ws.docs[doc], dotted)
        del parent[last]

    return edit


def text(doc: str, old: str, new: str) -> Edit:
    """Replace text in the shipped file as written (for YAML-level errors)."""

    def edit(ws: Workspace) -> None:
        assert old in ws.texts[doc], old
        ws.texts[doc] = ws.texts[doc].replace(old, new, 1)
        ws.edited_as_text.add(doc)

    return edit


def whole_text(doc: str, new: str) -> Edit:
    """Replace the whole file."""

    def edit(ws: Workspace) -> None:
        ws.texts[doc] = new
        ws.edited_as_text.add(doc)

    return edit


def remove_file(doc: str) -> Edit:
    def edit(ws: Workspace) -> None:
        ws.missing.add(doc)

    return edit


@dataclass(frozen=True)
class Bad:
    """A bad input: the edits, then which document, key path and phrase the message must have."""

    id: str
    edits: tuple[Edit, ...]
    file: str
    key_path: str | Callable[[Workspace], str]
    phrase: str


def bad(id: str, edits: Edit | tuple[Edit, ...], file: str, key_path: Any, phrase: str) -> Any:
    edits = edits if isinstance(edits, tuple) else (edits,)
    return pytest.param(Bad(id, edits, file, key_path, phrase), id=id)


C, S, P = "campaign", "sites", "pipeline"
# Nine anchors, each nine aliases of the one before: 9**9 strings once expanded.
BILLION_LAUGHS = (
    'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
    + "name: *l8\n"
)


def load_sites_entry(site: str) -> dict[str, Any]:
    return yaml.safe_load(SITES.read_text())["sites"][site]


def dumped_line_of(ws: Workspace, prefix: str) -> int:
    """1-based number of the first line starting with prefix in the campaign as the workspace writes it."""
    lines = yaml.safe_dump(ws.docs[C], sort_keys=False).splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(prefix))


def nested(depth: int) -> dict[str, Any]:
    """A mapping DEPTH levels deep."""
    doc: dict[str, Any] = {"tolerance": 0.001}
    for _ in range(depth):
        doc = {"a": doc}
    return doc


BAD_INPUTS = [
    # files and YAML
    bad("campaign-file-missing", remove_file(C), C, "<file>", "file does not exist"),
    bad("sites-file-missing", remove_file(S), S, "<file>", "file does not exist"),
    bad(
        "pipeline-file-missing",
        put(C, "pipeline", "../pipelines/nope.yaml"),
        C,
        "pipeline",
        "does not exist; fix the path",
    ),
    bad(
        "yaml-syntax",
        text(C, "  step2a:", "  step2a: x:"),
        C,
        lambda ws: f"line {ws.line_of(C, '  step2a:')}, column 12",
        "YAML syntax error",
    ),
    bad(
        "yaml-syntax-sites",
        text(S, "hub: USDF", "hub: [USDF"),
        S,
        lambda ws: f"line {ws.line_of(S, 'hub:') + 1}, column 1",
        "YAML syntax error: did not find expected ',' or ']' (while parsing a flow sequence",
    ),
    bad(
        "yaml-duplicate-key",
        text(C, "  USDF: [0, 1]", "  USDF: [0, 1]\n  USDF: [6]"),
        C,
        lambda ws: f"line {ws.line_of(C, '  USDF: [0, 1]') + 1}, column 3",
        "duplicate key 'USDF'",
    ),
    bad(
        "yaml-int-tag-on-text",  # found by the fuzz test: was a bare ValueError
        whole_text(C, "!!int name: test-3x3\n"),
        C,
        "line 1, column 1",
        "'name' is tagged !!int but is not an integer",
    ),
    bad("empty-file", whole_text(C, "# nothing here\n"), C, "<root>", "the file is empty"),
    bad(
        "top-level-list",
        whole_text(C, "- name: test-3x3\n- retries: 1\n"),
        C,
        "<root>",
        "expected a mapping of keys at the top level",
    ),
    # unknown, missing, wrong type
    bad("unknown-key", put(C, "retry", 2), C, "retry", "unknown key 'retry'; allowed keys here"),
    bad(
        "unknown-key-nested",
        put(C, "steps.step1.sight", "USDF"),
        C,
        "steps.step1.sight",
        "unknown key 'sight'; allowed keys here: scope, site, after",
    ),
    bad("unknown-key-loader-filled", put(C, "file", "x.yaml"), C, "file", "unknown key 'file'"),
    bad("name-key-differs", put(C, "steps.step1.name", "stepone"), C, "steps.step1.name", "unknown key 'name'"),
    bad("unknown-key-sites", put(S, "sites.FRDF.cpus", 3000), S, "sites.FRDF.cpus", "unknown key 'cpus'"),
    bad("unknown-key-pipeline", put(P, "tasks.isr.stepp", "step1"), P, "tasks.isr.stepp", "unknown key 'stepp'"),
    bad("missing-key", drop(C, "stack_version"), C, "stack_version", "required key 'stack_version' is missing"),
    bad("missing-key-nested", drop(C, "steps.step1.scope"), C, "steps.step1.scope", "required key 'scope' is missing"),
    bad(
        "missing-key-sites",
        drop(S, "sites.UKDF_RAL.rucio"),
        S,
        "sites.UKDF_RAL.rucio",
        "required key 'rucio' is missing",
    ),
    bad("wrong-type-int", put(C, "retries", "abc"), C, "retries", "expected a whole number"),
    bad("wrong-type-bool-for-int", put(C, "retries", True), C, "retries", "expected a whole number"),
    bad("wrong-type-list", put(C, "tracts.USDF", "0, 1"), C, "tracts.USDF", "expected a list"),
    bad("wrong-type-list-item", put(C, "tracts.USDF", [0, "one"]), C, "tracts.USDF[1]", "expected a whole number"),
    bad("wrong-type-str", put(C, "stack_version", 30.2026), C, "stack_version", "expected a string"),
    bad("wrong-type-mapping", put(C, "steps.step1", "site"), C, "steps.step1", "expected a mapping"),
    bad("wrong-type-sites", put(S, "sites.FRDF.cores", "many"), S, "sites.FRDF.cores", "expected a whole number"),
    bad(
        "wrong-literal",
        put(C, "steps.step1.scope", "everywhere"),
        C,
        "steps.step1.scope",
        "'everywhere' (a string) is not allowed; use one of 'site' or 'global'",
    ),
    bad("name-not-slug", put(C, "name", "Test 3x3"), C, "name", "is not a slug"),
    # sites.yaml
    bad(
        "work-shares-sum",
        put(S, "sites.FRDF.work_share", 0.3),
        S,
        "sites.*.work_share",
        "work shares sum to 0.9, not 1",
    ),
    bad("cores-zero", put(S, "sites.FRDF.cores", 0), S, "sites.FRDF.cores", "must be greater than 0, got 0"),
    bad(
        "gb-per-core-negative",
        put(S, "sites.USDF.gb_per_core", -4),
        S,
        "sites.USDF.gb_per_core",
        "must be greater than 0, got -4",
    ),
    bad(
        "storage-zero",
        put(S, "sites.UKDF_LANCS.storage_tb", 0),
        S,
        "sites.UKDF_LANCS.storage_tb",
        "must be greater than 0",
    ),
    bad("work-share-zero", put(S, "sites.FRDF.work_share", 0), S, "sites.FRDF.work_share", "must be greater than 0"),
    bad("work-share-above-one", put(S, "sites.FRDF.work_share", 1.5), S, "sites.FRDF.work_share", "must be at most 1"),
    bad("hub-not-a-site", put(S, "hub", "CHDF"), S, "hub", "hub 'CHDF' is not one of the sites"),
    bad(
        "unknown-compute-site",
        put(S, "sites.FRDF.panda.compute_site", "CC-IN2P3_Rubin_GPU"),
        S,
        "sites.FRDF.panda.compute_site",
        "unknown computeSite 'CC-IN2P3_Rubin_GPU': not one of FRDF's PanDA queues",
    ),
    bad(
        "airflow-queue-shared",
        put(S, "sites.FRDF.airflow_queue", "usdf"),
        S,
        "sites.FRDF.airflow_queue",
        "queue 'usdf' is USDF's too; give each site a queue of its own",
    ),
    # pipeline
    bad(
        "pipeline-undeclared-dataset-type",
        put(P, "tasks.isr.inputs", ["raw_image"]),
        P,
        "tasks.isr.inputs[0]",
        "'raw_image' is not declared",
    ),
    bad(
        "pipeline-two-producers",
        put(P, "tasks.isr.outputs", ["post_isr_image", "visit_image"]),
        P,
        "tasks.reprocessVisitImage.outputs[0]",
        "'visit_image' is already an output of task 'isr'",
    ),
    bad("instrument-mismatch", put(C, "data.instrument", "HSC"), C, "data.instrument", "differs from the pipeline's"),
    # pipeline: the numbers the site-independence QA compares (#14)
    bad(
        "pipeline-columns-on-a-dict",
        put(P, "dataset_types.object_table.storage_class", "StructuredDataDict"),
        P,
        "dataset_types.object_table.columns",
        "columns are ArrowAstropy's, but object_table has storage_class StructuredDataDict; "
        "set storage_class: ArrowAstropy or remove columns",
    ),
    bad(
        "pipeline-metrics-without-storage-class",
        drop(P, "dataset_types.qa_metrics.storage_class"),
        P,
        "dataset_types.qa_metrics.metrics",
        "metrics are StructuredDataDict's, but qa_metrics has storage_class (unset)",
    ),
    bad(
        "pipeline-columns-and-metrics",
        put(P, "dataset_types.object_table.metrics", ["n_objects"]),
        P,
        "dataset_types.object_table",
        "declares both columns and metrics",
    ),
    bad(
        "pipeline-column-twice",
        put(P, "dataset_types.object_table.columns", ["ra", "dec", "ra"]),
        P,
        "dataset_types.object_table.columns[2]",
        "ra is listed twice",
    ),
    bad(
        "pipeline-column-named-rows",
        put(P, "dataset_types.visit_summary.columns", ["visit", "rows"]),
        P,
        "dataset_types.visit_summary.columns[1]",
        "'rows' names a table's row count",
    ),
    bad(
        "pipeline-columns-made-by-a-mock-task",
        drop(P, "tasks.makeObjectTable.task_class"),
        P,
        "dataset_types.object_table.columns",
        "object_table is made by makeObjectTable, a mock task (no task_class) that writes no columns; "
        "set tasks.makeObjectTable.task_class",
    ),
    bad(
        "pipeline-columns-made-by-no-task",
        put(
            P,
            "dataset_types.raw",
            {"dimensions": ["instrument", "visit", "detector"], "storage_class": "ArrowAstropy", "columns": ["x"]},
        ),
        P,
        "dataset_types.raw.columns",
        "no task makes raw",
    ),
    bad(
        "pipeline-real-task-output-without-storage-class",
        (
            put(P, "dataset_types.object_plot", {"dimensions": ["skymap", "tract"]}),
            put(P, "tasks.makeObjectTable.outputs", ["object_table", "object_plot"]),
        ),
        P,
        "tasks.makeObjectTable.outputs[1]",
        "set dataset_types.object_plot.storage_class (ArrowAstropy or StructuredDataDict)",
    ),
    # tracts
    bad("tracts-unknown-site", put(C, "tracts.CHDF", [6]), C, "tracts.CHDF", "unknown site 'CHDF'"),
    bad("tracts-empty", put(C, "tracts.UKDF_RAL", []), C, "tracts.UKDF_RAL", "no tracts assigned to UKDF_RAL"),
    bad(
        "tract-on-two-sites",
        put(C, "tracts.FRDF", [2, 1]),
        C,
        "tracts.FRDF[1]",
        "tract 1 is assigned to two sites, USDF and FRDF",
    ),
    bad("tracts-per-group-zero", put(C, "tracts_per_group", 0), C, "tracts_per_group", "must be at least 1, got 0"),
    # a DR-sized site at one tract per group: Airflow would refuse to map its groups at run time (#16)
    bad(
        "groups-over-max-map-length",
        put(C, "tracts.USDF", [0, 1, *range(100, 1123)]),
        C,
        "tracts_per_group",
        "USDF would map 1026 groups in each step (1025 tracts, 1 per group, + 1 overlap tracts), more than "
        "Airflow's max_map_length 1024 ($AIRFLOW__CORE__MAX_MAP_LENGTH) by 2; set tracts_per_group to at least 2",
    ),
    bad("retries-negative", put(C, "retries", -1), C, "retries", "must be at least 0, got -1"),
    # steps and hops
    bad("step-unknown-site", put(C, "steps.step2c.site", "CHDF"), C, "steps.step2c.site", "unknown site 'CHDF'"),
    bad(
        "global-step-not-at-hub",
        put(C, "steps.step2c.site", "FRDF"),
        C,
        "steps.step2c.site",
        "global steps run at the hub USDF",
    ),
    bad(
        "site-step-with-site",
        put(C, "steps.step1.site", "USDF"),
        C,
        "steps.step1.site",
        "a site-scope step runs at every campaign site",
    ),
    bad(
        "step-after-undefined",
        put(C, "steps.step2a.after", ["step0"]),
        C,
        "steps.step2a.after[0]",
        "'step0' is not a step or hop of this campaign",
    ),
    bad(
        "hop-after-undefined",
        put(C, "hops.gather_for_step2c.after", ["step2x"]),
        C,
        "hops.gather_for_step2c.after[0]",
        "'step2x' is not a step or hop",
    ),
    bad(
        "cycle",
        put(C, "steps.step1.after", ["step2b"]),
        C,
        "steps.step2a.after[0]",
        "dependency cycle: step1 -> step2b -> step2a -> step1",
    ),
    bad(
        "step-not-in-pipeline",
        put(C, "steps.step6", {"scope": "site", "after": ["step5"]}),
        C,
        "steps.step6",
        "step 'step6' is not a step of the pipeline",
    ),
    bad(
        "pipeline-step-missing",
        (drop(C, "steps.step4"), put(C, "steps.step5.after", ["step3"])),
        C,
        "steps",
        "pipeline step 'step4'",
    ),
    bad(
        "hop-and-step-same-name",
        put(C, "hops.step1", {"direction": "fan_in", "after": ["step1"], "dataset_types": ["post_isr_image"]}),
        C,
        "hops.step1",
        "is both a step and a hop",
    ),
    bad(
        "hop-type-not-produced-earlier",
        put(C, "hops.gather_for_step2c.dataset_types", ["isolated_star", "visit_summary"]),
        C,
        "hops.gather_for_step2c.dataset_types[1]",
        "hop gather_for_step2c moves 'visit_summary', which no earlier step produces",
    ),
    bad(
        "hop-type-unknown",
        put(C, "hops.return_products.dataset_types", ["objects"]),
        C,
        "hops.return_products.dataset_types[0]",
        "does not define",
    ),
    # the tape hop and releases
    bad(
        "tape-hop-without-tape-rse",
        drop(S, "sites.USDF.rucio.tape_rse"),
        C,
        "hops.archive_products.direction",
        "the hub USDF has no rucio.tape_rse",
    ),
    bad(
        "release-on-a-site-hop",
        put(C, "hops.return_products.release_site_copies_of", ["gather_for_step2c"]),
        C,
        "hops.return_products.release_site_copies_of",
        "only a to_tape hop releases site copies",
    ),
    bad(
        "release-unknown-hop",
        put(C, "hops.archive_products.release_site_copies_of", ["return_product"]),
        C,
        "hops.archive_products.release_site_copies_of[0]",
        "'return_product' is not a fan_in or fan_out hop",
    ),
    bad(
        "release-of-unarchived-types",
        put(C, "hops.archive_products.release_site_copies_of", ["gather_for_step2c"]),
        C,
        "hops.archive_products.release_site_copies_of[0]",
        "hop gather_for_step2c moves isolated_star, preliminary_visit_summary, "
        "which archive_products does not put on tape",
    ),
    bad(
        "release-before-its-hop",
        (
            put(C, "hops.archive_products.after", ["step2c"]),
            put(C, "hops.archive_products.dataset_types", ["fgcm_photo_calib"]),
            put(C, "hops.archive_products.release_site_copies_of", ["return_products"]),
        ),
        C,
        "hops.archive_products.release_site_copies_of[0]",
        "hop return_products does not run before archive_products",
    ),
    # IDACs: named in sites.yaml, sent to by the to_tape hop only
    bad(
        "idac-unknown",
        put(C, "hops.archive_products.idacs", ["IDAC_UK", "IDAC_DE"]),
        C,
        "hops.archive_products.idacs[1]",
        "(IDAC_UK, IDAC_FR) or add it there under idacs",
    ),
    bad(
        "idac-none-in-sites",
        drop(S, "idacs"),
        C,
        "hops.archive_products.idacs[0]",
        "unknown IDAC 'IDAC_UK'; use one of the IDACs in",
    ),
    bad(
        "idac-listed-twice",
        put(C, "hops.archive_products.idacs", ["IDAC_UK", "IDAC_UK"]),
        C,
        "hops.archive_products.idacs[1]",
        "IDAC IDAC_UK is listed twice; name each IDAC once",
    ),
    bad(
        "idacs-on-a-site-hop",
        put(C, "hops.return_products.idacs", ["IDAC_UK"]),
        C,
        "hops.return_products.idacs",
        "only a to_tape hop sends products to IDACs",
    ),
    bad(
        "idac-name-not-a-task-id",
        put(S, "idacs.IDAC UK", {"rse": "X_DISK", "facility": "X", "storage_tb": 1}),
        S,
        "idacs.IDAC UK",
        "IDAC name 'IDAC UK' may use only letters, digits, '_' and '-'",
    ),
    bad("idac-missing-rse", drop(S, "idacs.IDAC_UK.rse"), S, "idacs.IDAC_UK.rse", "required key 'rse' is missing"),
    bad(
        "idac-unknown-key",
        put(S, "idacs.IDAC_FR.disk_rse", "IDAC_FR_DISK"),
        S,
        "idacs.IDAC_FR.disk_rse",
        "unknown key 'disk_rse'; allowed keys here: rse, facility, storage_tb",
    ),
    # BPS requests (refused before anything is submitted)
    bad(
        "bps-memory-over-gb-per-core",
        put(C, "bps", {"request_memory_mb": 5000}),
        C,
        "bps.request_memory_mb",
        "step1 asks 5000 MB per quantum, but USDF has 4 GB per core (4096 MB for 1 cpus)",
    ),
    bad(
        "bps-step-memory-over-gb-per-core",
        put(C, "bps", {"steps": {"step2c": {"request_memory_mb": 9000}}}),
        C,
        "bps.steps.step2c.request_memory_mb",
        "step2c asks 9000 MB per quantum, but USDF has 4 GB per core",
    ),
    bad(
        "bps-unknown-step",
        put(C, "bps", {"steps": {"step9": {"request_cpus": 2}}}),
        C,
        "bps.steps.step9",
        "'step9' is not a step of this campaign",
    ),
    bad(
        "bps-cluster-by-a-dimension-the-step-lacks",
        put(C, "bps", {"cluster_by": ["visit"]}),
        C,
        "bps.cluster_by[0]",
        "step2b's quanta cannot be clustered by 'visit': its tasks (isolatedStarAssociation) share only ",
    ),
    bad(
        "bps-step-cluster-by-unknown",
        put(C, "bps", {"steps": {"step1": {"cluster_by": ["tract"]}}}),
        C,
        "bps.steps.step1.cluster_by[0]",
        "step1's quanta cannot be clustered by 'tract'",
    ),
    bad(
        "bps-unknown-wms",
        put(C, "bps", {"wms": "condor"}),
        C,
        "bps.wms",
        "'condor' (a string) is not allowed; use one of 'parsl' or 'panda'",
    ),
    bad(
        "review-gate-unknown",
        put(C, "review_gates", ["step3", "step9"]),
        C,
        "review_gates[1]",
        "'step9' is not a step of this campaign",
    ),
    # site-independence QA (#14): overlap tracts, and what is compared within which tolerance
    bad(
        "qa-overlap-tract-not-in-campaign",
        put(C, "qa.overlap", {7: "UKDF_RAL"}),
        C,
        "qa.overlap.7",
        "tract 7 is not one of the campaign's tracts (0, 1, 2, 3, 4, 5)",
    ),
    bad(
        "qa-overlap-at-its-own-site",
        put(C, "qa.overlap", {2: "FRDF"}),
        C,
        "qa.overlap.2",
        "tract 2 is FRDF's own tract; name another site to process it a second time: one of USDF, UKDF_RAL",
    ),
    bad(
        "qa-overlap-site-not-in-campaign",
        put(C, "qa.overlap", {2: "UKDF_LANCS"}),
        C,
        "qa.overlap.2",
        "'UKDF_LANCS' is not a site of this campaign (the keys of tracts); use one of USDF, UKDF_RAL",
    ),
    bad(
        "qa-overlap-tract-not-a-number",
        put(C, "qa.overlap", {"two": "UKDF_RAL"}),
        C,
        "qa.overlap.two",
        "'two' is not a tract id; write the tract as a whole number",
    ),
    bad(
        "qa-overlap-site-not-a-string",
        put(C, "qa.overlap", {2: ["UKDF_RAL"]}),
        C,
        "qa.overlap.2",
        "expected the second site's name (a string)",
    ),
    bad(
        "qa-overlap-without-compare",
        put(C, "qa.compare", {}),
        C,
        "qa.compare",
        "nothing is compared; name the dataset types to compare",
    ),
    bad(
        "qa-tolerance-negative",
        put(C, "qa.compare.object_table.ra", {"absolute": -1.0e-9}),
        C,
        "qa.compare.object_table.ra.absolute",
        "must be at least 0, got -1e-09",
    ),
    bad(
        "qa-tolerance-not-a-number",
        put(C, "qa.compare.qa_metrics.n_objects", {"relative": "tiny"}),
        C,
        "qa.compare.qa_metrics.n_objects.relative",
        "expected a number, got 'tiny'",
    ),
    bad(
        "qa-tolerance-bare-number",
        put(C, "qa.compare.object_table.ra", 0.001),
        C,
        "qa.compare.object_table.ra",
        "write {relative: 0.001} or {absolute: 0.001}",
    ),
    bad(
        "qa-tolerance-both",
        put(C, "qa.compare.object_table.dec", {"relative": 0.01, "absolute": 1.0e-9}),
        C,
        "qa.compare.object_table.dec",
        "give relative or absolute, not both",
    ),
    bad(
        "qa-tolerance-neither",
        put(C, "qa.compare.object_table.dec", {}),
        C,
        "qa.compare.object_table.dec",
        "give one of relative or absolute",
    ),
    bad(
        "qa-default-tolerance-negative",
        put(C, "qa.tolerance", -0.1),
        C,
        "qa.tolerance",
        "must be greater than 0",
    ),
    bad(
        "qa-compare-unknown-dataset-type",
        put(C, "qa.compare.objects", {}),
        C,
        "qa.compare.objects",
        "'objects' is not a dataset type of the pipeline",
    ),
    bad(
        "qa-compare-type-without-numbers",
        put(C, "qa.compare.deep_coadd", {}),
        C,
        "qa.compare.deep_coadd",
        "deep_coadd declares no columns or metrics",
    ),
    bad(
        "qa-compare-type-of-a-global-step",
        (
            put(
                P,
                "dataset_types.campaign_qa_summary",
                {"dimensions": ["instrument"], "storage_class": "StructuredDataDict", "metrics": ["n_tracts"]},
            ),
            put(P, "tasks.campaignQa.task_class", "drp_campaign.stackside.tasks.CampaignQaTask"),
            put(C, "qa.compare.campaign_qa_summary", {}),
        ),
        C,
        "qa.compare.campaign_qa_summary",
        "campaign_qa_summary is made by final_qa, a global step",
    ),
    bad(
        "qa-compare-type-no-fan-in-returns",
        put(C, "hops.return_products.dataset_types", ["deep_coadd", "object_table", "qa_metrics"]),
        C,
        "qa.compare.visit_summary",
        "no fan_in hop moves visit_summary to the hub, so the second site's copy never comes home; "
        "add it to the dataset_types of a fan_in hop "
        "(gather_for_step2c, return_products)",
    ),
    bad(
        "qa-compare-unknown-column",
        put(C, "qa.compare.object_table.flux", {"relative": 0.01}),
        C,
        "qa.compare.object_table.flux",
        "'flux' is not a column of object_table; use one of object_id, patch, band, ra, dec, psf_flux, "
        "psf_flux_err, n_visits, rows",
    ),
    bad(
        "qa-compare-unknown-metric",
        put(C, "qa.compare.qa_metrics.n_stars", {"absolute": 0}),
        C,
        "qa.compare.qa_metrics.n_stars",
        "'n_stars' is not a metric of qa_metrics; use one of n_objects, median_psf_flux",
    ),
    bad(
        "qa-compare-rows-of-a-dict",
        put(C, "qa.compare.qa_metrics.rows", {"absolute": 0}),
        C,
        "qa.compare.qa_metrics.rows",
        "'rows' is not a metric of qa_metrics ('rows' counts a table's rows)",
    ),
    # values that reach a shell, a query or a path (#12 finding 2): fullmatch a safe set
    bad(
        "output-prefix-command-substitution",
        put(C, "output_prefix", "drp/x$(id>PWNED)"),
        C,
        "output_prefix",
        "'drp/x$(id>PWNED)' may use only words of letters, digits, '_', '.' and '-' separated by '/'",
    ),
    bad("output-prefix-empty", put(C, "output_prefix", ""), C, "output_prefix", "is empty; use words of letters"),
    bad("output-prefix-dot-dot", put(C, "output_prefix", "drp/../../etc"), C, "output_prefix", "may use only"),
    bad(
        "output-prefix-trailing-newline",
        put(C, "output_prefix", "drp/test-3x3\n"),
        C,
        "output_prefix",
        "'drp/test-3x3\\n' may use only",
    ),
    bad(
        "skymap-quote",
        put(C, "data.skymap", "drp_mock_rings' OR skymap='x"),
        C,
        "data.skymap",
        "may use only letters, digits, '_', '.' and '-'",
    ),
    bad("instrument-space", put(C, "data.instrument", "Mock Cam"), C, "data.instrument", "it is used in data queries"),
    bad(
        "input-collection-semicolon",
        put(C, "data.input_collections", ["MockCam/raw/all", "refcats;id"]),
        C,
        "data.input_collections[1]",
        "'refcats;id' may use only",
    ),
    bad("stack-version-backquote", put(C, "stack_version", "30.2026.4300`id`"), C, "stack_version", "may use only"),
    bad("campaign-name-trailing-newline", put(C, "name", "test-3x3\n"), C, "name", "'test-3x3\\n' is not a slug"),
    bad(
        "step-name-trailing-newline",
        put(C, "steps.step1\n", {"scope": "site"}),
        C,
        "steps.step1\\n",
        "name 'step1\\n' may use only letters, digits, '_' and '-'",
    ),
    bad(
        "site-name-trailing-newline",
        put(S, "sites.USDF\n", load_sites_entry("USDF")),
        S,
        "sites.USDF\\n",
        "site name 'USDF\\n' may use only",
    ),
    bad(
        "hop-activity-newline",
        put(C, "hops.gather_for_step2c.activity", "User Subscriptions\n"),
        C,
        "hops.gather_for_step2c.activity",
        "it is a Rucio activity",
    ),
    bad(
        "rse-not-rucio-name",
        put(S, "sites.FRDF.rucio.disk_rse", "FRDF DISK"),
        S,
        "sites.FRDF.rucio.disk_rse",
        "(Rucio's RSE names)",
    ),
    bad(
        "airflow-queue-semicolon",
        put(S, "sites.FRDF.airflow_queue", "frdf;id"),
        S,
        "sites.FRDF.airflow_queue",
        "'frdf;id' may use only",
    ),
    bad(
        "panda-queue-space",
        put(S, "sites.FRDF.panda.queues", ["CC-IN2P3_Rubin", "CC IN2P3"]),
        S,
        "sites.FRDF.panda.queues[1]",
        "may use only",
    ),
    bad(
        "file-distribution-command",
        put(S, "sites.FRDF.panda.file_distribution", "s3://b/$(id)/"),
        S,
        "sites.FRDF.panda.file_distribution",
        "BPS pastes it unquoted into the commands of every job",
    ),
    bad(
        "butler-repo-semicolon",
        put(S, "sites.FRDF.butler_repo", "$DRP_WORK_DIR/repos/FRDF;id"),
        S,
        "sites.FRDF.butler_repo",
        "may use only letters, digits, '_.@%+=:,/-' and $VAR or ${VAR}",
    ),
    bad(
        "pipeline-dataset-type-name",
        put(P, "dataset_types.raw image", {"dimensions": ["instrument"]}),
        P,
        "dataset_types.raw image",
        "dataset type 'raw image' may use only letters, digits and '_'",
    ),
    # bounds on every number (#12 finding 3), said in the message
    bad(
        "tracts-per-group-huge",
        put(C, "tracts_per_group", 10**18),
        C,
        "tracts_per_group",
        "must be at most 10000, got 1000000000000000000",
    ),
    bad("retries-huge", put(C, "retries", 1000), C, "retries", "must be at most 20"),
    bad("tract-huge", put(C, "tracts.USDF", [0, 10**12]), C, "tracts.USDF[1]", "must be at most 999999"),
    bad(
        "lifetime-days-huge",
        put(C, "hops.gather_for_step2c.lifetime_days", 1e300),
        C,
        "hops.gather_for_step2c.lifetime_days",
        "must be at most 36500",
    ),
    bad(
        "stuck-after-minutes-huge",
        put(C, "hops.gather_for_step2c.stuck_after_minutes", 1e300),
        C,
        "hops.gather_for_step2c.stuck_after_minutes",
        "must be at most 43200",
    ),
    bad(
        "expected-minutes-huge",
        put(C, "hops.gather_for_step2c.expected_minutes", 1e300),
        C,
        "hops.gather_for_step2c.expected_minutes",
        "must be at most 43200",
    ),
    bad("deadline-hours-huge", put(C, "deadline_hours", 1e300), C, "deadline_hours", "must be at most 720"),
    bad("deadline-hours-zero", put(C, "deadline_hours", 0), C, "deadline_hours", "must be greater than 0, got 0"),
    bad("cores-huge", put(S, "sites.FRDF.cores", 10**15), S, "sites.FRDF.cores", "must be at most 10000000"),
    bad(
        "gb-per-core-huge", put(S, "sites.FRDF.gb_per_core", 1e300), S, "sites.FRDF.gb_per_core", "must be at most 1024"
    ),
    bad("request-cpus-huge", put(C, "bps", {"request_cpus": 10**6}), C, "bps.request_cpus", "must be at most 1024"),
    bad(
        "integer-of-thousands-of-digits",
        text(C, "retries: 1 ", "retries: " + "9" * 5000 + " "),
        C,
        lambda ws: f"line {ws.line_of(C, 'retries:')}, column 10",
        "integer of 5000 characters is out of range",
    ),
    # the schedule, checked at load as Airflow's cron timetables read it
    bad(
        "schedule-not-cron",
        put(C, "schedule", "every night"),
        C,
        "schedule",
        "'every night' is not a cron expression of 5 fields",
    ),
    bad(
        "schedule-out-of-range",
        put(C, "schedule", "61 3 * * *"),
        C,
        "schedule",
        "'61 3 * * *' is not a schedule Airflow can use",
    ),
    bad("schedule-never-fires", put(C, "schedule", "0 3 30 2 *"), C, "schedule", "failed to find next date"),
    # YAML that would hang or crash the loader: refused before it is constructed
    bad(
        "billion-laughs",
        whole_text(C, BILLION_LAUGHS),
        C,
        "line 6, column 5",
        "this value expands to more than 100000 values through YAML aliases",
    ),
    bad(
        "alias-cycle",
        text(C, "review_gates: [step2c]", "review_gates: &g [*g]"),
        C,
        lambda ws: f"line {ws.line_of(C, 'review_gates:')}, column 15",
        "makes the value contain itself",
    ),
    bad(
        "nested-too-deep",
        put(C, "qa", nested(40)),
        C,
        lambda ws: f"line {dumped_line_of(ws, 'qa:') + 32}, column 65",
        "this value is nested more than 32 levels deep",
    ),
    bad("file-too-big", whole_text(C, "# " + "x" * (1 << 20) + "\n"), C, "<file>", "more than the 1048576"),
]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def _expected_key_path(case: Bad, ws: Workspace) -> str:
    return case.key_path(ws) if callable(case.key_path) else case.key_path


# --- the shipped configs -----------------------------------------------------------------------


@pytest.mark.parametrize("path", find_campaign_files(), ids=lambda p: p.stem)
def test_shipped_campaigns_validate(path: Path) -> None:
    campaign = load_campaign(path)
    assert isinstance(campaign, CampaignConfig)
    assert campaign.file == path
    assert campaign.pipeline == PIPELINE
    assert campaign.campaign_sites() == list(campaign.tracts)
    assert campaign.hub() == "USDF"
    assert campaign.steps["step2c"].site == "USDF"
    assert campaign.steps["step1"].name == "step1" and campaign.steps["step1"].site is None
    assert list(campaign.steps) == campaign.pipeline_spec.steps()


def test_find_campaign_files_lists_the_shipped_campaigns() -> None:
    assert [p.name for p in find_campaign_files()] == ["nightly.yaml", "test-3x3.yaml"]


def test_shipped_sites() -> None:
    sites = load_sites()
    assert sites.file == SITES
    assert sites.hub == "USDF"
    assert list(sites.sites) == ["USDF", "FRDF", "UKDF_RAL", "UKDF_LANCS"]
    assert sites.sites["FRDF"].name == "FRDF" and sites.sites["FRDF"].rucio.tape_rse is None
    assert {n: (i.name, i.rse) for n, i in sites.idacs.items()} == {
        "IDAC_UK": ("IDAC_UK", "IDAC_UK_DISK"),
        "IDAC_FR": ("IDAC_FR", "IDAC_FR_DISK"),
    }
    assert load_campaign(CAMPAIGN).hops["archive_products"].idacs == ["IDAC_UK"]
    assert sum(s.work_share for s in sites.sites.values()) == pytest.approx(1.0)


def test_butler_repo_path_expands_work_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRP_WORK_DIR", str(tmp_path))
    assert load_sites().sites["FRDF"].butler_repo_path() == tmp_path / "repos" / "FRDF"


def test_pipeline_steps_tasks_and_outputs() -> None:
    spec = load_pipeline(PIPELINE)
    assert spec.steps()[:4] == ["step1", "step2a", "step2b", "step2c"]
    assert spec.steps()[-1] == "final_qa"
    assert spec.step_tasks("step2c") == ["fgcmFitCycle", "fgcmOutputProducts"]
    assert spec.step_outputs("step1") == ["post_isr_image", "preliminary_visit_image", "single_visit_star"]
    assert spec.tasks["isr"].label == "isr"


def test_campaign_helpers() -> None:
    campaign = load_campaign(CAMPAIGN)
    assert campaign.campaign_sites() == ["USDF", "FRDF", "UKDF_RAL"]
    assert campaign.site_tracts("FRDF") == [2, 3]
    assert campaign.dag_id() == "campaign_test_3x3"
    with pytest.raises(KeyError, match="UKDF_LANCS"):
        campaign.site_tracts("UKDF_LANCS")


def test_qa_overlap_helpers() -> None:
    campaign = load_campaign(CAMPAIGN)
    assert campaign.overlap_tracts_at("UKDF_RAL") == [2]
    assert campaign.overlap_tracts_at("FRDF") == [] and campaign.overlap_tracts_at("USDF") == [4]
    assert campaign.tract_site(2) == "FRDF" and campaign.tract_site(5) == "UKDF_RAL"
    assert list(campaign.qa.compare) == ["object_table", "visit_summary", "qa_metrics"]
    ra = campaign.qa.compare["object_table"]["ra"]
    assert (ra.relative, ra.absolute) == (None, 1.0e-9)


def test_pipeline_numbers_and_real_tasks() -> None:
    spec = load_pipeline(PIPELINE)
    numbers = {
        name: (t.storage_class, len(t.columns), len(t.metrics))
        for name, t in spec.dataset_types.items()
        if t.storage_class
    }
    assert numbers == {
        "visit_summary": ("ArrowAstropy", 7, 0),
        "object_table": ("ArrowAstropy", 8, 0),
        "qa_metrics": ("StructuredDataDict", 0, 5),
    }
    real = [label for label, task in spec.tasks.items() if task.task_class]
    assert real == ["consolidateVisitTable", "makeObjectTable", "computeQaMetrics"]


def test_compare_without_overlap_is_valid(workspace: Workspace) -> None:
    """Nothing is compared, but the entries are still checked (a typo would not wait for an overlap)."""
    workspace.docs[C]["qa"]["overlap"] = {}
    workspace.write()
    campaign = load_campaign(workspace.path(C), workspace.path(S))
    assert campaign.qa.overlap == {} and "object_table" in campaign.qa.compare
    workspace.docs[C]["qa"]["compare"]["object_table"]["flux"] = {"absolute": 1}
    workspace.write()
    with pytest.raises(ConfigError, match="'flux' is not a column of object_table"):
        load_campaign(workspace.path(C), workspace.path(S))


def test_storage_class_without_numbers_is_valid(workspace: Workspace) -> None:
    workspace.docs[P]["dataset_types"]["deep_coadd"]["storage_class"] = "ArrowAstropy"
    workspace.write()
    assert load_campaign(workspace.path(C), workspace.path(S)).pipeline_spec.dataset_types["deep_coadd"].columns == []


def test_cli_validate_ok() -> None:
    result = subprocess.run([*_cli(), "validate", str(CAMPAIGN)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "OK test-3x3: 3 sites, 6 tracts, 10 steps, 5 hops\n"
    assert result.stderr == ""


def test_global_step_without_site_defaults_to_hub(workspace: Workspace) -> None:
    del workspace.docs[C]["steps"]["step2c"]["site"]
    workspace.write()
    campaign = load_campaign(workspace.path(C), workspace.path(S))
    assert campaign.steps["step2c"].site == "USDF"


def test_max_map_length_follows_airflows_setting(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The groups a step maps at a site are counted against the deployment's max_map_length."""
    workspace.write()
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "2")
    with pytest.raises(ConfigError, match="USDF would map 3 groups .* by 1; set tracts_per_group to at least 2"):
        load_campaign(workspace.path(C), workspace.path(S))
    workspace.docs[C]["tracts_per_group"] = 2
    workspace.write()
    assert load_campaign(workspace.path(C), workspace.path(S)).tracts_per_group == 2
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "4096")
    workspace.docs[C]["tracts_per_group"] = 1
    workspace.docs[C]["tracts"]["USDF"] = [0, 1, *range(100, 1123)]
    workspace.write()
    assert len(load_campaign(workspace.path(C), workspace.path(S)).tracts["USDF"]) == 1025


def test_config_error_format_and_pickling() -> None:
    error = ConfigError("a.yaml", "steps.step1.site", "bad; fix it")
    assert str(error) == "a.yaml: steps.step1.site: bad; fix it"
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.file, copy.key_path, copy.problem) == ("a.yaml", "steps.step1.site", "bad; fix it")


def test_config_modules_stay_light() -> None:
    code = (
        "import sys, drp_campaign.config, drp_campaign.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'airflow', 'lsst'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- bad inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_refused(case: Bad, workspace: Workspace, tmp_path: Path) -> None:
    for edit in case.edits:
        edit(workspace)
    workspace.write()
    campaign_path, sites_path = workspace.path(C), workspace.path(S)
    expected_file = str(workspace.path(case.file))
    expected_key_path = _expected_key_path(case, workspace)
    before = _snapshot(tmp_path)

    with pytest.raises(ConfigError) as caught:
        load_campaign(campaign_path, sites_path)
    error = caught.value
    assert (error.file, error.key_path) == (expected_file, expected_key_path), str(error)
    assert case.phrase in error.problem
    assert str(error) == f"{expected_file}: {expected_key_path}: {error.problem}"

    env = {**os.environ, "DRP_WORK_DIR": str(tmp_path / "var")}
    result = subprocess.run(
        [*_cli(), "validate", str(campaign_path), "--sites", str(sites_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {error}\n"

    assert _snapshot(tmp_path) == before, "refusing a config must not write anything"


# --- contained: every message one short line, no recursion a file can deepen (#12 finding 3) -----

LONG = "x" * 10_000


@pytest.mark.parametrize(
    "edit",
    [
        put(C, LONG + "\nsecond line", 1),  # an unknown key
        put(C, "description", [[LONG] * 100] * 100),  # a value of the wrong type
        put(C, "tracts." + LONG, [6]),  # an unknown site
        put(S, "hub", LONG),  # a reference to nothing
        put(C, "steps.step2a.after", [LONG + "\n"]),
    ],
    ids=["unknown-key", "wrong-type", "unknown-site", "unknown-hub", "unknown-after"],
)
def test_messages_are_one_short_line_whatever_the_file_holds(edit: Edit, workspace: Workspace) -> None:
    edit(workspace)
    workspace.write()
    with pytest.raises(ConfigError) as caught:
        load_campaign(workspace.path(C), workspace.path(S))
    message = str(caught.value)
    assert "\n" not in message and len(message) < 1200, message
    assert "xxxxx" in message and "x" * 200 not in message


def test_dependency_chains_are_walked_without_recursion() -> None:
    from types import SimpleNamespace

    from drp_campaign.config.checks import ancestors_of

    n = 2 * sys.getrecursionlimit()
    steps = {f"s{i}": SimpleNamespace(after=[f"s{i - 1}"] if i else []) for i in range(n)}
    ancestors = ancestors_of(SimpleNamespace(steps=steps, hops={}))
    assert len(ancestors[f"s{n - 1}"]) == n - 1 and ancestors["s0"] == set()
