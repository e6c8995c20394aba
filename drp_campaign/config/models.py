"""Typed configuration: sites, pipeline spec and campaigns, validated when they are loaded.

A bad file must stop everything before anything starts, with ONE message that names the file,
the key path and what to do (`ConfigError`). Validation is in two layers:

* structure (keys, types, ranges) is the pydantic models' job; their errors are translated into
  the `file: key.path[i]: problem` form by `_from_validation_error`;
* meaning across keys and files (unknown sites, `after` references, cycles, what a hop may move)
  is checked by the `_check_*` functions on the already-typed objects, in file order.

This module is imported by Airflow DAG files, which the scheduler parses again and again: it must
stay light (pydantic and yaml only, no Airflow, no LSST stack, no I/O beyond reading the files).
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from drp_campaign import settings

__all__ = [
    "CampaignConfig",
    "ConfigError",
    "DataSelection",
    "DatasetTypeSpec",
    "HopConfig",
    "PandaSite",
    "PipelineSpec",
    "PipelineTaskSpec",
    "QaConfig",
    "RucioRses",
    "SiteConfig",
    "SitesConfig",
    "StepConfig",
    "SyntheticData",
    "find_campaign_files",
    "load_campaign",
    "load_pipeline",
    "load_sites",
]

WORK_SHARE_TOLERANCE = 1e-6

# Key paths for problems that are not at a key.
FILE_KEY = "<file>"
ROOT_KEY = "<root>"

# What a file may hold before it is even parsed into values: far above any real configuration,
# far below what makes loading slow (a YAML alias "billion laughs", nesting that recurses).
MAX_FILE_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000  # scalars, lists and mappings, counting each alias's expansion
MAX_YAML_DEPTH = 32
MAX_INT_DIGITS = 30  # an integer scalar longer than this is refused by the YAML reader already
# Longest parts of a message: one line, a few hundred characters, whatever the file holds.
MAX_PROBLEM_CHARS = 600
MAX_KEY_PATH_CHARS = 200
MAX_FILE_CHARS = 300


@dataclass(frozen=True)
class NameRule:
    """What a name or value that reaches a shell, a query or a path may look like.

    Checked with `fullmatch` (`re.match` with `$` accepts a trailing newline). The characters
    allowed are safe unquoted in a shell word, in a Butler query and in a file path; a part may
    not start with '.', so no `..` either."""

    pattern: re.Pattern[str]
    max_length: int
    allowed: str  # the pattern in words, for the message
    example: str

    def accepts(self, value: str) -> bool:
        return len(value) <= self.max_length and self.pattern.fullmatch(value) is not None

    def problem(self, value: str, why: str, refused: str = "may use only") -> str:
        """Why VALUE is refused, and what to write instead (empty when it is accepted)."""
        if self.accepts(value):
            return ""
        shown = "is empty; use" if not value else f"{clip(value)} {refused}"
        return (f"{shown} {self.allowed}, at most {self.max_length} characters ({why}); "
                f"e.g. {self.example!r}")


_WORD = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
# Campaign names become the Airflow DAG id and part of every BPS run name.
CAMPAIGN_NAME = NameRule(re.compile(r"[a-z0-9][a-z0-9-]*"), 64,
                         "lowercase letters, digits and '-', starting with a letter or digit", "test-3x3")
# Site, step, hop and IDAC names become parts of Airflow task ids (`site.step.group`) and RUNs.
NODE_NAME = NameRule(re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*"), 64,
                     "letters, digits, '_' and '-', starting with a letter or digit", "UKDF_RAL")
# Skymap, instrument, stack version, queue names: single words in queries and commands.
WORD = NameRule(re.compile(_WORD), 64, "letters, digits, '_', '.' and '-', starting with a letter "
                "or digit", "drp_mock_rings")
# Collections (and the prefix of every RUN): '/'-separated words, no empty or '..' part.
COLLECTION = NameRule(re.compile(rf"{_WORD}(?:/{_WORD})*"), 128, "words of letters, digits, '_', "
                      "'.' and '-' separated by '/', each starting with a letter or digit",
                      "drp/test-3x3")
# Dataset types, task labels, dimensions: Python-identifier-like, as the Butler has them.
IDENTIFIER = NameRule(re.compile(r"[A-Za-z_][A-Za-z0-9_]*"), 64,
                      "letters, digits and '_', not starting with a digit", "deep_coadd")
# Rucio's own RSE name rule.
RSE_NAME = NameRule(re.compile(r"[A-Z0-9]+(?:[_-][A-Z0-9]+)*"), 64,
                    "upper-case letters and digits joined by '_' or '-' (Rucio's RSE names)", "USDF_DISK")
# A Rucio activity (an FTS share) names a kind of transfer in words.
ACTIVITY = NameRule(re.compile(r"[A-Za-z0-9][A-Za-z0-9 _-]*"), 64,
                    "letters, digits, spaces, '_' and '-'", "User Subscriptions")
# A repo path: safe characters and $VAR / ${VAR} references (expanded when a task runs there).
_VAR = r"[A-Za-z_][A-Za-z0-9_]*"
PATH_TEMPLATE = NameRule(re.compile(rf"(?:[A-Za-z0-9_.@%+=:,/-]|\${_VAR}|\$\{{{_VAR}\}})+"), 256,
                         "letters, digits, '_.@%+=:,/-' and $VAR or ${VAR}", "$DRP_WORK_DIR/repos/USDF")
# Where PanDA jobs fetch the quantum graph: BPS pastes it unquoted in front of the graph's path.
URL_DIRECTORY = NameRule(re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9_.@%+=:,/-]*/"), 256,
                         "a URL ending in '/' of letters, digits and '_.@%+=:,/-'",
                         "s3://rubin-usdf-panda/qgraphs/")
# Display text (a facility's name): one line.
LABEL = NameRule(re.compile(r"[^\x00-\x1f\x7f-\x9f]+"), 100, "printable characters on one line",
                 "CC-IN2P3")
# Kept for callers that only need the patterns.
CAMPAIGN_NAME_RE = CAMPAIGN_NAME.pattern
NODE_NAME_RE = NODE_NAME.pattern

# Upper bounds on numbers: far above real use, low enough that arithmetic on them (memory limits,
# seconds, Rucio lifetimes, synthetic sky sizes) cannot overflow or run for ever.
MAX_TRACT = 999_999  # a skymap has tens of thousands of tracts
MAX_COUNT = 10_000  # tracts per group, patches per tract
MAX_RETRIES = 20
MAX_CORES = 10_000_000
MAX_CPUS = 1024  # per quantum
MAX_GB_PER_CORE = 1024.0
MAX_MEMORY_MB = 1 << 22  # per quantum: 4 TB
MAX_STORAGE_TB = 1e7
MAX_LIFETIME_DAYS = 36_500.0  # a century
MAX_MINUTES = 43_200.0  # 30 days: waits and grace periods
MAX_STEPS = 200  # steps, hops, pipeline tasks and dataset types, each
MAX_TEXT = 2000  # descriptions, stack_setup


class ConfigError(ValueError):
    """A configuration file is refused: which file, where in it, what is wrong and what to do.

    Its message is one line of bounded length whatever the file held (values are clipped)."""

    def __init__(self, file: str | Path, key_path: str, problem: str) -> None:
        # args are the constructor's arguments so that the error pickles (Airflow, multiprocessing).
        super().__init__(str(file), key_path, problem)
        self.file = one_line(str(file), MAX_FILE_CHARS)
        self.key_path = one_line(key_path, MAX_KEY_PATH_CHARS)
        self.problem = one_line(problem, MAX_PROBLEM_CHARS)

    def __str__(self) -> str:
        return f"{self.file}: {self.key_path}: {self.problem}"


class KeyProblem(ValueError):
    """Raised inside a validator to report a problem at a key below the validated field."""

    def __init__(self, sub_path: tuple[str | int, ...], problem: str) -> None:
        super().__init__(problem)
        self.sub_path = sub_path
        self.problem = problem


def _checked(rule: NameRule, why: str) -> Any:
    """A string field type that refuses what RULE does not accept, saying why the rule holds here."""

    def check(value: str) -> str:
        problem = rule.problem(value, why)
        if problem:
            raise KeyProblem((), problem)
        return value

    return Annotated[str, AfterValidator(check)]


IN_TASK_IDS = "it becomes part of Airflow task ids and RUN collection names"
IN_GRAPHS = "it names datasets and quanta in file names, data queries and commands"
IN_RUNS = "it starts every RUN collection name, which becomes part of file names and of commands"
IN_COMMANDS = "it is passed to pipetask and BPS commands"
IN_QUERIES = "it is used in data queries and commands"
RunPrefix = _checked(COLLECTION, IN_RUNS)
CollectionName = _checked(COLLECTION, IN_COMMANDS)
QueryWord = _checked(WORD, IN_QUERIES)
CommandWord = _checked(WORD, "it is used in commands and batch-system requests")
Identifier = _checked(IDENTIFIER, IN_GRAPHS)
RseName = _checked(RSE_NAME, "Rucio refuses other RSE names")
ActivityName = _checked(ACTIVITY, "it is a Rucio activity")
RepoPath = _checked(PATH_TEMPLATE, "BPS pastes it unquoted into the commands of every job")
UrlDirectory = _checked(URL_DIRECTORY, "BPS pastes it unquoted into the commands of every job")
Label = _checked(LABEL, "it is shown in the UI and the report")
Text = Annotated[str, Field(max_length=MAX_TEXT)]


class ConfigModel(BaseModel):
    """Base of all config models: unknown keys refused, no silent type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    # Fields the loader fills in (from a mapping key or the file path); not keys a user writes.
    loader_filled: ClassVar[frozenset[str]] = frozenset()


def _name_from_key(value: Any, field: str) -> Any:
    """Copy each mapping key into its entry's `field`, so entries know their own name."""
    if not isinstance(value, dict):
        return value
    named = {}
    for key, entry in value.items():
        if isinstance(entry, dict):
            if field in entry and entry[field] != key:
                raise KeyProblem((key, field), f"unknown key '{field}'; the {field} is the key "
                                 f"({clip(key)}): remove '{field}'")
            entry = {**entry, field: key}
        named[key] = entry
    return named


# --- sites -------------------------------------------------------------------------------------


class RucioRses(ConfigModel):
    disk_rse: RseName
    tape_rse: RseName | None = None


class PandaSite(ConfigModel):
    compute_site: CommandWord
    queues: list[CommandWord] = Field(min_length=1, max_length=MAX_STEPS)
    # Where PanDA jobs fetch the quantum graph from (BPS fileDistributionEndPoint: an S3 or WebDAV
    # URL at a DF, ending in '/'); unset: a file:// directory next to the submit files.
    file_distribution: UrlDirectory | None = None


class SiteConfig(ConfigModel):
    loader_filled: ClassVar[frozenset[str]] = frozenset({"name"})

    name: str
    facility: Label
    cores: int = Field(gt=0, le=MAX_CORES)
    gb_per_core: float = Field(gt=0, le=MAX_GB_PER_CORE)
    storage_tb: float = Field(gt=0, le=MAX_STORAGE_TB)
    work_share: float = Field(gt=0, le=1)
    rucio: RucioRses
    butler_repo: RepoPath
    panda: PandaSite
    airflow_queue: CommandWord
    # A shell command by design (the site's own setup, e.g. `source .../activate`): whoever
    # writes the sites file runs commands at every site; it is bounded, not restricted.
    stack_setup: Text

    def butler_repo_path(self) -> Path:
        """The repo path with $DRP_* expanded the way a task at the site sees it."""
        return settings.expand(self.butler_repo)


class IdacConfig(ConfigModel):
    """An Independent Data Access Center: products go there from the hub, after tape."""

    loader_filled: ClassVar[frozenset[str]] = frozenset({"name"})

    name: str
    rse: RseName  # its Rucio disk RSE
    facility: Label
    storage_tb: float = Field(gt=0, le=MAX_STORAGE_TB)


class SitesConfig(ConfigModel):
    loader_filled: ClassVar[frozenset[str]] = frozenset({"file"})

    file: Path = Field(strict=False)
    hub: str
    sites: dict[str, SiteConfig] = Field(min_length=1, max_length=MAX_STEPS)
    idacs: dict[str, IdacConfig] = Field(default={}, max_length=MAX_STEPS)

    @field_validator("sites", mode="before")
    @classmethod
    def _name_sites(cls, value: Any) -> Any:
        return _name_from_key(value, "name")

    @field_validator("idacs", mode="before")
    @classmethod
    def _name_idacs(cls, value: Any) -> Any:
        for name in value if isinstance(value, dict) else ():
            if isinstance(name, str) and not NODE_NAME.accepts(name):
                raise KeyProblem((name,), "IDAC name " + NODE_NAME.problem(name, IN_TASK_IDS))
        return _name_from_key(value, "name")


# --- pipeline ----------------------------------------------------------------------------------


class DatasetTypeSpec(ConfigModel):
    dimensions: list[Identifier] = Field(max_length=MAX_STEPS)
    calibration: bool = False  # certified into a CALIBRATION collection with validity ranges


class PipelineTaskSpec(ConfigModel):
    loader_filled: ClassVar[frozenset[str]] = frozenset({"label"})

    label: str
    step: str
    dimensions: list[Identifier] = Field(max_length=MAX_STEPS)
    inputs: list[str] = Field(max_length=MAX_STEPS)
    # Looked up, not produced in the pipeline: calibrations by the quantum's time, shards by its region.
    prerequisites: list[str] = Field(default=[], max_length=MAX_STEPS)
    outputs: list[str] = Field(min_length=1, max_length=MAX_STEPS)


class PipelineSpec(ConfigModel):
    loader_filled: ClassVar[frozenset[str]] = frozenset({"file"})

    file: Path = Field(strict=False)
    description: Text
    instrument: QueryWord
    dataset_types: dict[str, DatasetTypeSpec] = Field(min_length=1, max_length=MAX_STEPS)
    tasks: dict[str, PipelineTaskSpec] = Field(min_length=1, max_length=MAX_STEPS)

    @field_validator("tasks", mode="before")
    @classmethod
    def _label_tasks(cls, value: Any) -> Any:
        return _name_from_key(value, "label")

    def steps(self) -> list[str]:
        """Step names in the order they first appear among the tasks."""
        return list(dict.fromkeys(task.step for task in self.tasks.values()))

    def step_tasks(self, step: str) -> list[str]:
        return [label for label, task in self.tasks.items() if task.step == step]

    def step_outputs(self, step: str) -> list[str]:
        """Dataset types the step's tasks produce, in task order, without repeats."""
        return list(dict.fromkeys(
            name for task in self.tasks.values() if task.step == step for name in task.outputs))


# --- campaign ----------------------------------------------------------------------------------

# Airflow's cron presets (airflow.sdk.definitions.timetables._cron.CRON_PRESETS) and the two
# schedules that are not cron; copied, since this module must not import Airflow.
CRON_PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0",
                "@monthly": "0 0 1 * *", "@quarterly": "0 0 1 */3 *", "@yearly": "0 0 1 1 *"}
NOT_CRON = ("@once", "@continuous")
CRON_RE = re.compile(r"[0-9A-Za-z*/,?#-]+(?: [0-9A-Za-z*/,?#-]+){4}")


def _schedule_problem(value: str) -> str:
    """Why Airflow's scheduler could not use VALUE as a DAG schedule ('' when it can).

    Parsed with croniter, as Airflow's cron timetables do, and asked for its next time: a
    schedule that never fires (Feb 30) is refused too."""
    remedy = ("use a cron expression of 5 fields (minute hour day-of-month month day-of-week), "
              f"e.g. '0 3 * * *', or one of {', '.join([*CRON_PRESETS, *NOT_CRON])}, or null")
    if value in NOT_CRON or value in CRON_PRESETS:
        return ""
    if not CRON_RE.fullmatch(value):
        return f"{clip(value)} is not a cron expression of 5 fields separated by single spaces; {remedy}"
    from datetime import datetime

    from croniter import croniter

    try:
        croniter(value, datetime(2026, 1, 1)).get_next(datetime)
    except Exception as exc:  # noqa: BLE001 - whatever croniter refuses, Airflow's timetable would too
        return f"{clip(value)} is not a schedule Airflow can use ({one_line(str(exc), 120)}); {remedy}"
    return ""



class SyntheticData(ConfigModel):
    visits_per_tract: int = Field(gt=0, le=1000)
    detectors_per_visit: int = Field(gt=0, le=1000)
    patches_per_tract: int = Field(gt=0, le=MAX_COUNT)
    bands: list[QueryWord] = Field(min_length=1, max_length=100)


class DataSelection(ConfigModel):
    instrument: QueryWord
    skymap: QueryWord
    input_collections: list[CollectionName] = Field(min_length=1, max_length=MAX_STEPS)
    synthetic: SyntheticData | None = None


class StepConfig(ConfigModel):
    loader_filled: ClassVar[frozenset[str]] = frozenset({"name"})

    name: str
    scope: Literal["site", "global"]
    site: str | None = None
    after: list[str] = []


# How a place hop picks, from the hub's Butler, what each site needs of one input dataset type.
InputSelectionKind = Literal["visits_in_tracts", "valid_for_visits", "overlaps_tracts"]


class InputSelection(ConfigModel):
    collection: CollectionName  # where the hub holds them (one of data.input_collections)
    # visits_in_tracts: datasets of the visits/detectors overlapping the site's tracts (raws);
    # valid_for_visits: calibrations certified for when those visits were taken (by detector);
    # overlaps_tracts: sky-pixel shards overlapping the site's tracts (reference catalogs).
    select: InputSelectionKind


class HopConfig(ConfigModel):
    loader_filled: ClassVar[frozenset[str]] = frozenset({"name"})

    name: str
    # place: the campaign's inputs, hub -> every other site, before anything runs there;
    # fan_in: every site -> hub disk; fan_out: hub -> every site; to_tape: hub disk -> hub tape.
    direction: Literal["place", "fan_in", "fan_out", "to_tape"]
    after: list[str] = []  # required, except for a place hop (it runs first)
    dataset_types: list[str] = []  # required, except for a place hop (the keys of its inputs)
    inputs: dict[str, InputSelection] = {}  # place only: input dataset type -> how to select it
    # How the replication rule is made (Rucio): its activity (FTS share) and, for intermediates a
    # site need not keep, a lifetime on the rule that holds the site's copy (the destination rule
    # of a fan-out, the source hold of a fan-in), after which Rucio may release it.
    activity: ActivityName = "User Subscriptions"
    lifetime_days: float | None = Field(default=None, gt=0, le=MAX_LIFETIME_DAYS)
    # How long a STUCK rule may stay stuck (Rucio retries) before the wait fails.
    stuck_after_minutes: float = Field(default=0, ge=0, le=MAX_MINUTES)
    # to_tape only: hops whose site copies are released once this hop's tape copy is confirmed,
    # and how long Rucio waits before deleting them (a release can be taken back until then).
    release_site_copies_of: list[str] = []
    release_grace_minutes: float = Field(default=0, ge=0, le=MAX_MINUTES)
    # to_tape only: IDACs (sites file `idacs`) that get a copy from the hub once tape is confirmed.
    idacs: list[str] = []


class BpsRequest(ConfigModel):
    """What one quantum of a step asks the batch system for (ctrl_bps requestMemory/requestCpus)."""

    request_memory_mb: int | None = Field(default=None, gt=0, le=MAX_MEMORY_MB)
    request_cpus: int | None = Field(default=None, gt=0, le=MAX_CPUS)
    number_of_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES)
    # Dimensions by which a group's quanta are clustered into jobs (ctrl_bps dimension_clustering),
    # e.g. [visit] for one job per visit; empty: the whole group is one job.
    cluster_by: list[str] | None = None


class BpsConfig(BpsRequest):
    """How each (site, step, group) is submitted with `bps submit` (issue #4)."""

    # parsl: ctrl_bps_parsl on the local machine (the embedded default); panda: ctrl_bps_panda
    # to the site's PanDA computeSite, configured from an Airflow Connection per site.
    wms: Literal["parsl", "panda"] = "parsl"
    request_memory_mb: int = Field(default=2048, gt=0, le=MAX_MEMORY_MB)
    request_cpus: int = Field(default=1, gt=0, le=MAX_CPUS)
    number_of_retries: int = Field(default=0, ge=0, le=MAX_RETRIES)
    cluster_by: list[str] = []
    steps: dict[str, BpsRequest] = {}  # per-step overrides of the requests and the clustering

    def for_step(self, step: str) -> BpsRequest:
        """The campaign-wide request with the step's overrides applied (every field set)."""
        override = self.steps.get(step, BpsRequest())
        return BpsRequest(**{name: getattr(override, name) if getattr(override, name) is not None else getattr(self, name)
                             for name in BpsRequest.model_fields})


class QaConfig(ConfigModel):
    tolerance: float = Field(default=0.001, gt=0, le=1)


class CampaignDocument(ConfigModel):
    """What a campaign YAML file holds; `CampaignConfig` adds what the loader resolves."""

    name: str
    description: Text
    pipeline: Path = Field(strict=False)
    stack_version: QueryWord
    data: DataSelection
    output_prefix: RunPrefix
    tracts: dict[str, list[Annotated[int, Field(ge=0, le=MAX_TRACT)]]] = Field(min_length=1, max_length=MAX_STEPS)
    tracts_per_group: int = Field(default=1, ge=1, le=MAX_COUNT)
    retries: int = Field(default=1, ge=0, le=MAX_RETRIES)
    steps: dict[str, StepConfig] = Field(min_length=1, max_length=MAX_STEPS)
    hops: dict[str, HopConfig] = Field(default={}, max_length=MAX_STEPS)
    qa: QaConfig = QaConfig()
    review_gates: list[str] = []
    bps: BpsConfig = BpsConfig()
    # A cron expression or preset as Airflow reads it (checked here, not in the dag-processor).
    schedule: str | None = None

    @field_validator("steps", "hops", mode="before")
    @classmethod
    def _name_steps_and_hops(cls, value: Any) -> Any:
        return _name_from_key(value, "name")

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not CAMPAIGN_NAME.accepts(value):
            raise KeyProblem((), CAMPAIGN_NAME.problem(value, "it becomes the Airflow DAG id and "
                                                       "part of every BPS run name", "is not a slug: use"))
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            problem = _schedule_problem(value)
            if problem:
                raise KeyProblem((), problem)
        return value


class CampaignConfig(CampaignDocument):
    """A validated campaign, with its pipeline spec and the sites it was checked against."""

    loader_filled: ClassVar[frozenset[str]] = frozenset({"file", "pipeline_spec", "sites_config"})

    file: Path = Field(strict=False)
    pipeline_spec: PipelineSpec = Field(repr=False)
    sites_config: SitesConfig = Field(repr=False)

    def campaign_sites(self) -> list[str]:
        """The sites this campaign runs at, in the order of `tracts`."""
        return list(self.tracts)

    def site_tracts(self, site: str) -> list[int]:
        try:
            return list(self.tracts[site])
        except KeyError:
            raise KeyError(f"site {site!r} has no tracts in campaign {self.name!r} "
                           f"(its sites: {', '.join(self.tracts)})") from None

    def hub(self) -> str:
        return self.sites_config.hub

    def place_hop(self) -> HopConfig | None:
        """The hop that places the campaign's inputs at the sites, if the campaign has one."""
        return next((hop for hop in self.hops.values() if hop.direction == "place"), None)

    def dag_id(self) -> str:
        """The Airflow DAG id of this campaign."""
        return campaign_dag_id(self.name)


def campaign_dag_id(name: str) -> str:
    """The Airflow DAG id of the campaign named NAME: the DAG factory names its DAG so, and the
    campaign view checks a user's access to a ledger run against that DAG."""
    return "campaign_" + name.replace("-", "_")


# --- loaders -----------------------------------------------------------------------------------


def load_sites(path: str | Path | None = None) -> SitesConfig:
    """Load and check the sites file (default: configs/sites.yaml)."""
    file = absolute_path(settings.DEFAULT_SITES_FILE if path is None else path)
    raw = read_mapping(file)
    sites = validate_mapping(SitesConfig, raw, file, {"file": file})
    check_sites(sites)
    return sites


def load_pipeline(path: str | Path) -> PipelineSpec:
    """Load and check a pipeline spec (dataset types and tasks grouped into steps)."""
    file = absolute_path(path)
    raw = read_mapping(file)
    spec = validate_mapping(PipelineSpec, raw, file, {"file": file})
    check_pipeline(spec)
    return spec


def load_campaign(path: str | Path, sites_path: str | Path | None = None) -> CampaignConfig:
    """Load a campaign, its pipeline and the sites file, and check them against each other.

    Raises `ConfigError` for the first problem found; nothing else is done.
    """
    file = absolute_path(path)
    raw = read_mapping(file)
    doc = validate_mapping(CampaignDocument, raw, file, {})
    sites = load_sites(sites_path)
    pipeline_file = absolute_path(file.parent / doc.pipeline)
    if not pipeline_file.is_file():
        raise ConfigError(file, "pipeline", f"pipeline file {pipeline_file} does not exist; fix "
                          "the path (it is relative to the campaign file)")
    pipeline = load_pipeline(pipeline_file)
    check_campaign(doc, file, pipeline, sites)
    steps = {
        name: step.model_copy(update={"site": sites.hub})
        if step.scope == "global" and step.site is None else step
        for name, step in doc.steps.items()
    }
    # A place hop moves the types it selects inputs for.
    hops = {
        name: hop.model_copy(update={"dataset_types": list(hop.inputs)}) if hop.direction == "place" else hop
        for name, hop in doc.hops.items()
    }
    fields = {name: getattr(doc, name) for name in CampaignDocument.model_fields}
    return CampaignConfig.model_validate({
        **fields, "steps": steps, "hops": hops, "pipeline": pipeline_file, "file": file,
        "pipeline_spec": pipeline, "sites_config": sites,
    })


def find_campaign_files(directory: Path | None = None) -> list[Path]:
    """The campaign files in a directory (default configs/campaigns), sorted by name."""
    directory = settings.CAMPAIGNS_DIR if directory is None else Path(directory)
    return sorted(path for path in directory.glob("*.yaml") if path.is_file())


def absolute_path(path: str | Path) -> Path:
    """Absolute and normalized (no `..`), without resolving symlinks: what the user recognises."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


# --- reading YAML ------------------------------------------------------------------------------


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loader that refuses a key given twice (plain YAML silently keeps the last one)."""


def _construct_unique_mapping(loader: Any, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark.line)
        except TypeError:  # unhashable key: the base constructor reports it
            continue
        if first != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {clip(key)} (first given at line {first + 1})",
                key_node.start_mark)
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


def _construct_bounded_int(loader: Any, node: yaml.ScalarNode) -> int:
    """An integer, unless it has more digits than any setting needs (Python refuses to convert
    one of thousands of digits with a ValueError, which is not a YAML error)."""
    if len(node.value) > MAX_INT_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"integer of {len(node.value)} characters is out of range", node.start_mark)
    return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _construct_unique_mapping)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _construct_bounded_int)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_node_graph(root: yaml.Node, file: Path) -> None:
    """Refuse a document that would expand or nest beyond reason once constructed.

    Aliases make the composed document a graph: one anchor used nine times, nine levels deep,
    is a billion values once expanded (the "billion laughs"), and an alias inside its own
    anchor makes a cycle. The expanded size and depth are counted here, in one pass over the
    distinct nodes (iteratively: a deep document must not exhaust the stack either)."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            children = _children(node)
            size[key] = 1 + sum(size[id(child)] for child in children)
            height[key] = 1 + max((height[id(child)] for child in children), default=0)
            open_nodes.discard(key)
            if size[key] > MAX_YAML_VALUES:
                raise ConfigError(file, _where(node), f"this value expands to more than {MAX_YAML_VALUES} "
                                  "values through YAML aliases (*name); write the values out "
                                  "instead of nesting aliases")
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise ConfigError(file, _where(node), "a YAML alias inside the value its anchor names "
                              "makes the value contain itself; write the value out")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    if height[id(root)] > MAX_YAML_DEPTH:
        node = root
        for _ in range(MAX_YAML_DEPTH):  # down the deepest branch, to the first level too deep
            node = max(_children(node), key=lambda child: height[id(child)])
        raise ConfigError(file, _where(node), f"this value is nested more than {MAX_YAML_DEPTH} "
                          "levels deep; a configuration needs a few levels: flatten it")


def _where(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"


def read_mapping(file: Path) -> dict[str, Any]:
    """Parse a YAML file whose top level must be a mapping."""
    if not file.exists():
        raise ConfigError(file, FILE_KEY, "file does not exist; check the path")
    if not file.is_file():
        raise ConfigError(file, FILE_KEY, "is not a file; give the path of a YAML file")
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(file, FILE_KEY, f"the file has {size} bytes, more than the "
                              f"{MAX_FILE_BYTES} a configuration may have; is it the right file?")
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, FILE_KEY, f"cannot be read ({exc}); check its permissions and "
                          "that it is UTF-8 text") from None
    loader = _UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_node_graph(root, file)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else FILE_KEY
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        context_mark = getattr(exc, "context_mark", None)
        if context and context_mark and context_mark != mark:
            context += (f" that starts at line {context_mark.line + 1}, "
                        f"column {context_mark.column + 1}")
        detail = f"{problem} ({context})" if context else problem
        kind = ("invalid YAML" if isinstance(exc, yaml.constructor.ConstructorError)
                else "YAML syntax error")
        raise ConfigError(file, where, f"{kind}: {detail}; fix the YAML there") from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError(file, ROOT_KEY, "the file is empty; write the configuration as a "
                          "mapping of keys")
    if not isinstance(data, dict):
        raise ConfigError(file, ROOT_KEY, f"expected a mapping of keys at the top level, got "
                          f"{_type_name(data)}; write the configuration as `key: value` lines")
    return data


# --- pydantic errors -> ConfigError ------------------------------------------------------------


def validate_mapping(model: type[ConfigModel], raw: dict[str, Any], file: Path, filled: dict[str, Any]) -> Any:
    """Validate a parsed file against a model; loader-filled keys may not come from the file."""
    for key in model.loader_filled:
        if key in raw:
            raise ConfigError(file, _key_path((key,)), _unknown_key_problem(model, (), key))
    try:
        return model.model_validate({**raw, **filled})
    except ValidationError as exc:
        raise _from_validation_error(exc, model, file) from None


_EXPECTED = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "string_type": "a string (quote it if YAML reads it as a number or date)",
    "bool_type": "true or false",
    "list_type": "a list, e.g. [a, b]",
    "dict_type": "a mapping of `key: value`",
    "model_type": "a mapping of `key: value`",
    "model_attributes_type": "a mapping of `key: value`",
    "path_type": "a path (a string)",
    "none_required": "null",
}


def _from_validation_error(exc: ValidationError, model: type[ConfigModel], file: Path) -> ConfigError:
    """The first pydantic error as a ConfigError: dotted key path, problem and remedy."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, KeyProblem):
        return ConfigError(file, _key_path(loc + cause.sub_path), cause.problem)
    if kind == "missing":
        problem = f"required key '{loc[-1]}' is missing; add it"
    elif kind == "extra_forbidden":
        problem = _unknown_key_problem(model, loc[:-1], str(loc[-1]))
    elif kind in _EXPECTED:
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
            problem = f"key {clip(value)} must be a string; quote it"
        else:
            problem = (f"wrong type: expected {_EXPECTED[kind]}, got {_show(value)}; "
                       "write the value as that type")
    elif kind == "literal_error":
        problem = f"{_show(value)} is not allowed; use one of {ctx.get('expected')}"
    elif kind == "greater_than":
        problem = f"must be greater than {_number(ctx['gt'])}, got {clip(value)}; set a positive value"
    elif kind == "greater_than_equal":
        problem = f"must be at least {_number(ctx['ge'])}, got {clip(value)}; set a value >= {_number(ctx['ge'])}"
    elif kind == "less_than_equal":
        problem = f"must be at most {_number(ctx['le'])}, got {clip(value)}; set a value <= {_number(ctx['le'])}"
    elif kind == "too_short":
        problem = (f"must have at least {ctx['min_length']} entr"
                   f"{'y' if ctx['min_length'] == 1 else 'ies'}, got none; add "
                   f"{'it' if ctx['min_length'] == 1 else 'them'}")
    elif kind in ("too_long", "string_too_long"):
        limit = ctx.get("max_length")
        unit = "characters" if kind == "string_too_long" else "entries"
        problem = f"must have at most {limit} {unit}, got more; shorten it"
    else:
        problem = f"{error['msg']} (got {_show(value)}); fix the value"
    return ConfigError(file, _key_path(loc), problem)


def _unknown_key_problem(model: type[ConfigModel], loc: tuple[Any, ...], key: str) -> str:
    owner = _model_at(model, loc)
    if owner is None:
        return f"unknown key {clip(key)}; remove it or fix its spelling"
    allowed = [name for name in owner.model_fields if name not in owner.loader_filled]
    return f"unknown key {clip(key)}; allowed keys here: {', '.join(allowed)}"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[ConfigModel] | None:
    """The model class that validates the mapping at `loc` (walking fields, dicts and lists)."""
    annotation: Any = model
    for part in loc:
        annotation = _strip_optional(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        else:
            return None
    annotation = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, ConfigModel):
        return annotation
    return None


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _key_path(loc: tuple[Any, ...]) -> str:
    """('steps', 'step2c', 'after', 0) -> 'steps.step2c.after[0]'."""
    path = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool) and path:
            path += f"[{part}]"
        else:
            part = key_part(part)
            path += f".{part}" if path else part
    return path or ROOT_KEY


def _number(bound: float) -> str:
    """A bound as people write it: 10000000, not 1e+07."""
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else f"{bound:g}"


def key_part(key: Any) -> str:
    """A mapping key as written in a key path: as is when short and printable, else clipped."""
    text = str(key) if isinstance(key, str | int | float | bool) or key is None else ""
    return text if text and len(text) <= 64 and text.isprintable() else clip(key)


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


# A repr bounded in time and length, however large, deep or shared the value.
_SHORT_REPR = reprlib.Repr(maxlevel=2, maxtuple=4, maxlist=4, maxarray=4, maxdict=4, maxset=4,
                           maxfrozenset=4, maxdeque=4, maxstring=60, maxlong=40, maxother=60)


def clip(value: Any) -> str:
    """A value for a message: its repr, short and on one line."""
    return one_line(_SHORT_REPR.repr(value), 100)


def one_line(text: str, limit: int) -> str:
    """TEXT with control characters escaped, cut in the middle to at most LIMIT characters (the
    start names the problem, the end says what to do)."""
    if len(text) > 4 * limit:  # escaping below at most quadruples a character
        text = text[:2 * limit] + text[-2 * limit:]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > limit:
        head = (limit - 5) * 2 // 3
        text = text[:head] + " ... " + text[len(text) - (limit - 5 - head):]
    return text


def _show(value: Any) -> str:
    return f"{clip(value)} ({_type_name(value)})"


# --- checks across keys and files --------------------------------------------------------------


def name_list(names: Any, shown: int = 12) -> str:
    """Names for a message: the first few, then how many more."""
    names = [key_part(name) for name in names]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more or "(none)"


def check_sites(sites: SitesConfig) -> None:
    file = sites.file
    for name in sites.sites:
        if not NODE_NAME.accepts(name):
            raise ConfigError(file, f"sites.{name}", "site name " + NODE_NAME.problem(name, IN_TASK_IDS))
        panda = sites.sites[name].panda
        if panda.compute_site not in panda.queues:
            # BPS's computeSite is a PanDA queue name: one the site does not have would be
            # refused by PanDA only after the workflow was built and uploaded.
            raise ConfigError(file, f"sites.{name}.panda.compute_site", f"unknown computeSite "
                              f"{clip(panda.compute_site)}: not one of {name}'s PanDA queues "
                              f"({name_list(panda.queues)}); use one of them or add the queue")
    if sites.hub not in sites.sites:
        raise ConfigError(file, "hub", f"hub {clip(sites.hub)} is not one of the sites "
                          f"({name_list(sites.sites)}); set hub to one of them")
    total = math.fsum(site.work_share for site in sites.sites.values())
    if abs(total - 1.0) > WORK_SHARE_TOLERANCE:
        raise ConfigError(file, "sites.*.work_share", f"work shares sum to {total:.6g}, not 1; "
                          "adjust them so that they sum to 1")


def check_pipeline(spec: PipelineSpec) -> None:
    file = spec.file
    for name in spec.dataset_types:
        if not IDENTIFIER.accepts(name):
            raise ConfigError(file, f"dataset_types.{name}", "dataset type " + IDENTIFIER.problem(name, IN_GRAPHS))
    producer: dict[str, str] = {}
    for label, task in spec.tasks.items():
        if not IDENTIFIER.accepts(label):
            raise ConfigError(file, f"tasks.{label}", "task label " + IDENTIFIER.problem(label, IN_GRAPHS))
        if not NODE_NAME.accepts(task.step):
            raise ConfigError(file, f"tasks.{label}.step", "step name " + NODE_NAME.problem(task.step, IN_TASK_IDS))
        for key in ("inputs", "prerequisites", "outputs"):
            for i, name in enumerate(getattr(task, key)):
                if name not in spec.dataset_types:
                    raise ConfigError(file, f"tasks.{label}.{key}[{i}]", f"dataset type {clip(name)} "
                                      "is not declared; add it under dataset_types or fix the name")
        for i, name in enumerate(task.outputs):
            if name in producer:
                raise ConfigError(file, f"tasks.{label}.outputs[{i}]", f"dataset type {clip(name)} is "
                                  f"already an output of task {clip(producer[name])}; each dataset "
                                  "type has one producing task")
            producer[name] = label


def check_campaign(doc: CampaignDocument, file: Path, pipeline: PipelineSpec,
                   sites: SitesConfig) -> None:
    """Cross-checks of a structurally valid campaign, in file order; raises on the first."""
    if doc.data.instrument != pipeline.instrument:
        raise ConfigError(file, "data.instrument", f"instrument {clip(doc.data.instrument)} differs "
                          f"from the pipeline's ({clip(pipeline.instrument)} in {pipeline.file}); use "
                          "the pipeline's instrument or another pipeline")
    _check_tracts(doc, file, sites)
    _check_steps(doc, file, pipeline, sites)
    _check_placement(doc, file, pipeline)
    _check_graph(doc, file)
    _check_hop_dataset_types(doc, file, pipeline)
    _check_archive_hops(doc, file, sites)
    _check_bps_requests(doc, file, sites, pipeline)
    steps = list(doc.steps)
    for i, gate in enumerate(doc.review_gates):
        if gate not in doc.steps:
            raise ConfigError(file, f"review_gates[{i}]", f"{clip(gate)} is not a step of this "
                              f"campaign; use one of: {name_list(steps)}")


def _check_tracts(doc: CampaignDocument, file: Path, sites: SitesConfig) -> None:
    owner: dict[int, str] = {}
    for site, tracts in doc.tracts.items():
        if site not in sites.sites:
            raise ConfigError(file, f"tracts.{site}", f"unknown site {clip(site)}; use one of the "
                              f"sites in {sites.file} ({name_list(sites.sites)}) or add it there")
        if not tracts:
            raise ConfigError(file, f"tracts.{site}", f"no tracts assigned to {site}; list at "
                              "least one tract or remove the site")
        for i, tract in enumerate(tracts):
            if tract < 0:
                raise ConfigError(file, f"tracts.{site}[{i}]", f"tract {tract} is negative; "
                                  "tract ids are >= 0")
            if tract in owner:
                other = owner[tract]
                where = (f"listed twice for {site}" if other == site
                         else f"assigned to two sites, {other} and {site}")
                raise ConfigError(file, f"tracts.{site}[{i}]", f"tract {tract} is {where}; assign "
                                  "each tract to exactly one site, once")
            owner[tract] = site


def _check_steps(doc: CampaignDocument, file: Path, pipeline: PipelineSpec,
                 sites: SitesConfig) -> None:
    for kind, entries in (("steps", doc.steps), ("hops", doc.hops)):
        for name in entries:
            if not NODE_NAME.accepts(name):
                raise ConfigError(file, f"{kind}.{name}", "name " + NODE_NAME.problem(name, IN_TASK_IDS))
    for name in doc.hops:
        if name in doc.steps:
            raise ConfigError(file, f"hops.{name}", f"{clip(name)} is both a step and a hop, so "
                              "`after` entries naming it are ambiguous; rename the hop")
    pipeline_steps = pipeline.steps()
    for name in doc.steps:
        if name not in pipeline_steps:
            raise ConfigError(file, f"steps.{name}", f"step {clip(name)} is not a step of the pipeline "
                              f"{pipeline.file} (its steps: {name_list(pipeline_steps)}); rename or "
                              "remove it")
    for name in pipeline_steps:
        if name not in doc.steps:
            raise ConfigError(file, "steps", f"pipeline step {clip(name)} (from {pipeline.file}) is "
                              f"missing; add steps.{name} with its scope and after")
    for name, step in doc.steps.items():
        where = f"steps.{name}.site"
        if step.site is not None and step.site not in sites.sites:
            raise ConfigError(file, where, f"unknown site {clip(step.site)}; use one of the sites in "
                              f"{sites.file} ({name_list(sites.sites)})")
        if step.scope == "site" and step.site is not None:
            raise ConfigError(file, where, "a site-scope step runs at every campaign site, so it "
                              "takes no site; remove site (or make the step scope: global)")
        if step.scope == "global" and step.site not in (None, sites.hub):
            raise ConfigError(file, where, f"global steps run at the hub {sites.hub}, not "
                              f"{step.site}; set site: {sites.hub} or leave it out")
    nodes = [*doc.steps, *doc.hops]
    for kind, entries in (("steps", doc.steps), ("hops", doc.hops)):
        for name, entry in entries.items():
            for i, before in enumerate(entry.after):
                if before not in doc.steps and before not in doc.hops:
                    raise ConfigError(file, f"{kind}.{name}.after[{i}]", f"{clip(before)} is not a "
                                      f"step or hop of this campaign; use one of: {name_list(nodes)}")


def _dependencies(doc: CampaignDocument) -> dict[str, list[str]]:
    """Each step and hop with the steps and hops it runs after."""
    steps = {name: step.after for name, step in doc.steps.items()}
    return {**steps, **{name: hop.after for name, hop in doc.hops.items()}}


def _check_graph(doc: CampaignDocument, file: Path) -> None:
    """Refuse a dependency cycle, naming it (depth-first search in file order)."""
    deps = _dependencies(doc)
    done: set[str] = set()
    for start in deps:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        iters = [iter(enumerate(deps[start]))]
        while iters:
            edge = next(iters[-1], None)
            if edge is None:
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                iters.pop()
                continue
            i, before = edge
            if before in on_path:
                cycle = path[path.index(before):] + [before]
                node = path[-1]
                kind = "steps" if node in doc.steps else "hops"
                raise ConfigError(file, f"{kind}.{node}.after[{i}]", "dependency cycle: "
                                  f"{' -> '.join(cycle)} (a -> b: a runs after b); remove one of "
                                  "these after entries")
            if before in done:
                continue
            path.append(before)
            on_path.add(before)
            iters.append(iter(enumerate(deps[before])))


def ancestors_of(doc: CampaignDocument) -> dict[str, set[str]]:
    """Every step and hop that must finish before each node (the graph is acyclic here).

    Iterative, children before parents: a long chain of `after` must not exhaust the stack."""
    deps = _dependencies(doc)
    memo: dict[str, set[str]] = {}
    for start in deps:
        stack = [start]
        while stack:
            node = stack[-1]
            if node in memo:
                stack.pop()
                continue
            pending = [before for before in deps[node] if before not in memo]
            if pending:
                stack.extend(pending)
                continue
            memo[node] = set(deps[node]).union(*(memo[before] for before in deps[node]))
            stack.pop()
    return memo


def _check_placement(doc: CampaignDocument, file: Path, pipeline: PipelineSpec) -> None:
    """A place hop runs first and selects inputs the hub holds; every other hop runs after
    something and moves what steps made."""
    places = [name for name, hop in doc.hops.items() if hop.direction == "place"]
    if len(places) > 1:
        raise ConfigError(file, f"hops.{places[1]}.direction", f"a campaign places its inputs once, "
                          f"but {name_list(places)} are all place hops; merge their inputs into one")
    for name, hop in doc.hops.items():
        if hop.direction != "place":
            if hop.inputs:
                raise ConfigError(file, f"hops.{name}.inputs", "only a place hop selects inputs; "
                                  "remove the key or make the hop direction: place")
            for key in ("after", "dataset_types"):
                if not getattr(hop, key):
                    raise ConfigError(file, f"hops.{name}.{key}", f"a {hop.direction} hop needs at "
                                      f"least one entry in {key}; list what it "
                                      f"{'runs after' if key == 'after' else 'moves'}")
            continue
        if hop.after:
            raise ConfigError(file, f"hops.{name}.after", "a place hop runs before anything else "
                              "at the sites (their first steps wait for it); remove after")
        if hop.dataset_types:
            raise ConfigError(file, f"hops.{name}.dataset_types", "a place hop moves the dataset "
                              "types of its inputs; remove dataset_types")
        if not hop.inputs:
            raise ConfigError(file, f"hops.{name}.inputs", "a place hop needs inputs: dataset type "
                              "-> {collection, select}; add e.g. raw: {collection: ..., select: "
                              "visits_in_tracts}")
        for dataset_type, sel in hop.inputs.items():
            where = f"hops.{name}.inputs.{dataset_type}"
            spec = pipeline.dataset_types.get(dataset_type)
            if spec is None:
                raise ConfigError(file, where, f"{clip(dataset_type)} is not a dataset type of the "
                                  f"pipeline {pipeline.file}; declare it there or fix the name")
            if sel.collection not in doc.data.input_collections:
                raise ConfigError(file, f"{where}.collection", f"{clip(sel.collection)} is not one of "
                                  f"data.input_collections ({name_list(doc.data.input_collections)}); "
                                  "the sites' steps read only those: add it there")
            wanted = {
                "visits_in_tracts": ("visit" in spec.dimensions and "detector" in spec.dimensions,
                                     "visit and detector dimensions"),
                "valid_for_visits": (spec.calibration, "calibration: true in the pipeline's "
                                     "dataset_types"),
                "overlaps_tracts": (any(d.startswith(("htm", "healpix")) for d in spec.dimensions),
                                    "a sky-pixel dimension such as htm7"),
            }
            ok, needs = wanted[sel.select]
            if not ok:
                raise ConfigError(file, f"{where}.select", f"select {sel.select} needs a dataset "
                                  f"type with {needs}; {dataset_type} has dimensions "
                                  f"{spec.dimensions}: pick another select")


def _check_hop_dataset_types(doc: CampaignDocument, file: Path, pipeline: PipelineSpec) -> None:
    ancestors = ancestors_of(doc)
    for name, hop in doc.hops.items():
        if hop.direction == "place":  # inputs, not products: checked by _check_placement
            continue
        earlier = [step for step in doc.steps if step in ancestors[name]]
        produced = {dt for step in earlier for dt in pipeline.step_outputs(step)}
        for i, dataset_type in enumerate(hop.dataset_types):
            where = f"hops.{name}.dataset_types[{i}]"
            if dataset_type not in pipeline.dataset_types:
                raise ConfigError(file, where, f"hop {name} moves {clip(dataset_type)}, which the "
                                  f"pipeline {pipeline.file} does not define; fix the name")
            if dataset_type not in produced:
                source = next((s for s in pipeline.steps() if dataset_type in
                               pipeline.step_outputs(s)), None)
                origin = f"it is made by {source}" if source else "no step makes it"
                raise ConfigError(file, where, f"hop {name} moves {clip(dataset_type)}, which no "
                                  f"earlier step produces ({origin}; steps before the hop: "
                                  f"{name_list(earlier)}); add the producing step to the hop's "
                                  "after chain or remove the dataset type")


def _check_archive_hops(doc: CampaignDocument, file: Path, sites: SitesConfig) -> None:
    """A tape hop needs the hub's tape RSE; a release names earlier site hops whose data it
    archives; the IDACs it sends products to are those of the sites file."""
    ancestors = ancestors_of(doc)
    for name, hop in doc.hops.items():
        if hop.direction == "to_tape" and not sites.sites[sites.hub].rucio.tape_rse:
            raise ConfigError(file, f"hops.{name}.direction", f"hop {name} goes to tape, but the hub "
                              f"{sites.hub} has no rucio.tape_rse in {sites.file}; add it there or "
                              "remove the hop")
        if hop.release_grace_minutes and hop.direction != "to_tape":
            raise ConfigError(file, f"hops.{name}.release_grace_minutes", "only a to_tape hop "
                              "releases site copies; move the key to the campaign's to_tape hop")
        if hop.release_site_copies_of and hop.direction != "to_tape":
            raise ConfigError(file, f"hops.{name}.release_site_copies_of", "only a to_tape hop "
                              "releases site copies (they are released once safe on tape); move "
                              "the list to the campaign's to_tape hop")
        if hop.idacs and hop.direction != "to_tape":
            raise ConfigError(file, f"hops.{name}.idacs", "only a to_tape hop sends products to "
                              "IDACs (they go once safe on tape); move the list to the campaign's "
                              "to_tape hop")
        for i, idac in enumerate(hop.idacs):
            where = f"hops.{name}.idacs[{i}]"
            if idac not in sites.idacs:
                raise ConfigError(file, where, f"unknown IDAC {clip(idac)}; use one of the IDACs in "
                                  f"{sites.file} ({name_list(sites.idacs)}) or add it there under "
                                  "idacs")
            if idac in hop.idacs[:i]:
                raise ConfigError(file, where, f"IDAC {idac} is listed twice; name each IDAC once")
        for i, other in enumerate(hop.release_site_copies_of):
            where = f"hops.{name}.release_site_copies_of[{i}]"
            site_hops = [n for n, h in doc.hops.items() if h.direction != "to_tape"]
            if other not in site_hops:
                raise ConfigError(file, where, f"{clip(other)} is not a fan_in or fan_out hop of this "
                                  f"campaign; use one of: {name_list(site_hops)}")
            if other not in ancestors[name]:
                raise ConfigError(file, where, f"hop {other} does not run before {name}, so its "
                                  f"site copies could be released before they reach tape; add it "
                                  f"to {name}'s after chain")
            unarchived = [t for t in doc.hops[other].dataset_types if t not in hop.dataset_types]
            if unarchived:
                raise ConfigError(file, where, f"hop {other} moves {name_list(unarchived)}, which "
                                  f"{name} does not put on tape: releasing their site copies would "
                                  f"leave them on disk only; add them to hops.{name}.dataset_types "
                                  "or leave the hop out of this list")


def _check_clustering(doc: CampaignDocument, file: Path, pipeline: PipelineSpec, step: str, dims: list[str]) -> None:
    """Clustering by a dimension needs every task of the step to have it in its data IDs."""
    tasks = [pipeline.tasks[label] for label in pipeline.step_tasks(step)]
    common = [d for d in tasks[0].dimensions if all(d in t.dimensions for t in tasks)] if tasks else []
    for i, dim in enumerate(dims):
        if dim not in common:
            own = doc.bps.steps.get(step, BpsRequest()).cluster_by is not None
            where = f"bps.steps.{step}.cluster_by[{i}]" if own else f"bps.cluster_by[{i}]"
            raise ConfigError(file, where, f"{step}'s quanta cannot be clustered by {clip(dim)}: its tasks "
                              f"({', '.join(pipeline.step_tasks(step))}) share only {name_list(common) if common else 'no dimension'}; "
                              f"use those, or set bps.steps.{step}.cluster_by for this step")


def _check_bps_requests(doc: CampaignDocument, file: Path, sites: SitesConfig, pipeline: PipelineSpec) -> None:
    """Each step's memory request must fit the cores it asks for at every site that runs it."""
    for name in doc.bps.steps:
        if name not in doc.steps:
            raise ConfigError(file, f"bps.steps.{name}", f"{clip(name)} is not a step of this campaign; "
                              f"use one of: {name_list(doc.steps)}")
    for name, step in doc.steps.items():
        request = doc.bps.for_step(name)
        _check_clustering(doc, file, pipeline, name, request.cluster_by)
        where = f"bps.steps.{name}.request_memory_mb" if doc.bps.steps.get(name, BpsRequest()).request_memory_mb else "bps.request_memory_mb"
        runs_at = [step.site or sites.hub] if step.scope == "global" else list(doc.tracts)
        for site_name in runs_at:
            site = sites.sites[site_name]
            limit_mb = int(site.gb_per_core * 1024 * request.request_cpus)
            if request.request_memory_mb > limit_mb:
                raise ConfigError(file, where, f"{name} asks {request.request_memory_mb} MB per quantum, but "
                                  f"{site_name} has {site.gb_per_core:g} GB per core ({limit_mb} MB for "
                                  f"{request.request_cpus} cpus); lower the request or raise request_cpus")
