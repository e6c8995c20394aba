"""The typed configuration: sites, pipeline spec and campaign as pydantic models.

Structure only: keys, types, ranges and the safe-name rule of each field. Meaning across keys and
files is checked in `checks`; reading the files and wording pydantic's errors is `reading`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drp_campaign import settings
from drp_campaign.hops import Direction

from .errors import KeyProblem, clip, key_part, one_line
from .names import (
    CAMPAIGN_NAME,
    IN_TASK_IDS,
    NODE_NAME,
    ActivityName,
    CollectionName,
    CommandWord,
    Identifier,
    Label,
    QueryWord,
    RepoPath,
    RseName,
    RunPrefix,
    UrlDirectory,
)

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
                raise KeyProblem(
                    (key, field), f"unknown key '{field}'; the {field} is the key ({clip(key)}): remove '{field}'"
                )
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
    # A DF that cannot open ports to the broker: with the Edge executor deployed, its tasks run on an
    # Airflow Edge worker there, which only calls out over HTTPS to the api-server.
    edge_worker: bool = False
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


# The storage classes a dataset type of ours may name (daf_butler's own): a table, or a dict of values.
StorageClassName = Literal["ArrowAstropy", "StructuredDataDict"]
# A Python class as `module.Name` (a task of ours that makes real numbers; the rest are mocks).
PythonClassName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$", max_length=200)]


class DatasetTypeSpec(ConfigModel):
    dimensions: list[Identifier] = Field(max_length=MAX_STEPS)
    calibration: bool = False  # certified into a CALIBRATION collection with validity ranges
    # Unset: chosen from the name (stackside/pipeline.py storage_class_for). Set for the outputs of
    # real tasks, whose numbers the site-independence QA compares.
    storage_class: StorageClassName | None = None
    columns: list[Identifier] = Field(default=[], max_length=MAX_STEPS)  # an ArrowAstropy table's
    metrics: list[Identifier] = Field(default=[], max_length=MAX_STEPS)  # a StructuredDataDict's values


class PipelineTaskSpec(ConfigModel):
    loader_filled: ClassVar[frozenset[str]] = frozenset({"label"})

    label: str
    step: str
    dimensions: list[Identifier] = Field(max_length=MAX_STEPS)
    inputs: list[str] = Field(max_length=MAX_STEPS)
    # Looked up, not produced in the pipeline: calibrations by the quantum's time, shards by its region.
    prerequisites: list[str] = Field(default=[], max_length=MAX_STEPS)
    outputs: list[str] = Field(min_length=1, max_length=MAX_STEPS)
    # A real PipelineTask of ours (stackside/tasks.py) instead of the mock; unset: the mock task.
    task_class: PythonClassName | None = None


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
        return list(dict.fromkeys(name for task in self.tasks.values() if task.step == step for name in task.outputs))


# --- campaign ----------------------------------------------------------------------------------

# Airflow's cron presets (airflow.sdk.definitions.timetables._cron.CRON_PRESETS) and the two
# schedules that are not cron; copied, since this module must not import Airflow.
CRON_PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}
NOT_CRON = ("@once", "@continuous")
CRON_RE = re.compile(r"[0-9A-Za-z*/,?#-]+(?: [0-9A-Za-z*/,?#-]+){4}")


def _schedule_problem(value: str) -> str:
    """Why Airflow's scheduler could not use VALUE as a DAG schedule ('' when it can).

    Parsed with croniter, as Airflow's cron timetables do, and asked for its next time: a
    schedule that never fires (Feb 30) is refused too."""
    remedy = (
        "use a cron expression of 5 fields (minute hour day-of-month month day-of-week), "
        f"e.g. '0 3 * * *', or one of {', '.join([*CRON_PRESETS, *NOT_CRON])}, or null"
    )
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
    direction: Direction  # what each means: drp_campaign/hops.py
    after: list[str] = []  # required, except for a place hop (it runs first)
    dataset_types: list[str] = []  # required, except for a place hop (the keys of its inputs)
    inputs: dict[str, InputSelection] = {}  # place only: input dataset type -> how to select it
    # How the replication rule is made (Rucio): its activity (FTS share) and, for intermediates a
    # site need not keep, a lifetime on the rule that holds the site's copy (the destination rule
    # of a fan-out, the source hold of a fan-in), after which Rucio may release it.
    activity: ActivityName = "User Subscriptions"
    lifetime_days: float | None = Field(default=None, gt=0, le=MAX_LIFETIME_DAYS)
    # How long a STUCK rule may stay stuck (Rucio retries) before the wait fails; on-call hears
    # when it first is (drp_campaign/alerts.py). 0: the wait fails at once.
    stuck_after_minutes: float = Field(default=0, ge=0, le=MAX_MINUTES)
    # How long the hop's wait should take at most; a longer wait alerts on-call once. 0: no limit.
    expected_minutes: float = Field(default=0, ge=0, le=MAX_MINUTES)
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
        values = {name: getattr(override, name) for name in BpsRequest.model_fields}
        return BpsRequest(**{name: getattr(self, name) if value is None else value for name, value in values.items()})


MAX_TOLERANCE = 1e12


class Tolerance(ConfigModel):
    """How far apart two sites' values of one compared quantity may be: exactly one of
    relative (|a - b| <= relative x max(|a|, |b|)) or absolute (|a - b| <= absolute)."""

    relative: float | None = Field(default=None, ge=0, le=MAX_TOLERANCE)
    absolute: float | None = Field(default=None, ge=0, le=MAX_TOLERANCE)

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, value: Any) -> Any:
        # `ra: 1.0e-9` reads naturally but says neither kind: ask for the one meant.
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise KeyProblem(
                (),
                f"a tolerance is relative or absolute: write {{relative: {clip(value)}}} "
                f"or {{absolute: {clip(value)}}}",
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Tolerance:
        if self.relative is not None and self.absolute is not None:
            raise KeyProblem((), "a quantity is compared one way: give relative or absolute, not both; remove one")
        if self.relative is None and self.absolute is None:
            raise KeyProblem(
                (), "give one of relative or absolute, e.g. {relative: 0.001} or {absolute: 1.0e-9}; got neither"
            )
        return self


class QaConfig(ConfigModel):
    """Site-independence QA: overlap tracts processed at a second site, compared at the hub."""

    tolerance: float = Field(default=0.001, gt=0, le=1)  # relative: every quantity without its own
    # tract -> a second campaign site that processes it as well as its own site does
    overlap: dict[Annotated[int, Field(ge=0, le=MAX_TRACT)], str] = Field(default={}, max_length=MAX_COUNT)
    # dataset type -> {quantity (a column, `rows`, or a metric) -> its tolerance}
    compare: dict[str, dict[str, Tolerance]] = Field(default={}, max_length=MAX_STEPS)

    @field_validator("overlap", mode="before")
    @classmethod
    def _tract_keys(cls, value: Any) -> Any:
        """Problems with an overlap entry at `qa.overlap.<tract>`: pydantic's own would read as a
        list index (`qa.overlap[2]`) or ask for a string key."""
        for tract, site in value.items() if isinstance(value, dict) else ():
            if not isinstance(tract, int) or isinstance(tract, bool):
                raise KeyProblem(
                    (key_part(tract),), f"{clip(tract)} is not a tract id; write the tract as a whole number"
                )
            where = (str(tract),)
            if not 0 <= tract <= MAX_TRACT:
                raise KeyProblem(where, f"tract {tract} is out of range; tract ids are 0 to {MAX_TRACT}")
            if not isinstance(site, str):
                raise KeyProblem(where, f"expected the second site's name (a string), got {clip(site)}; name a site")
        return value


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
    # A run not finished this many hours after it was queued alerts on-call once (Airflow's
    # deadline alert, drp_campaign/alerts.py run_deadline). None: no deadline.
    deadline_hours: float | None = Field(default=None, gt=0, le=MAX_MINUTES / 60)

    @field_validator("steps", "hops", mode="before")
    @classmethod
    def _name_steps_and_hops(cls, value: Any) -> Any:
        return _name_from_key(value, "name")

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not CAMPAIGN_NAME.accepts(value):
            raise KeyProblem(
                (),
                CAMPAIGN_NAME.problem(
                    value, "it becomes the Airflow DAG id and part of every BPS run name", "is not a slug: use"
                ),
            )
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
            raise KeyError(
                f"site {site!r} has no tracts in campaign {self.name!r} (its sites: {', '.join(self.tracts)})"
            ) from None

    def hub(self) -> str:
        return self.sites_config.hub

    def overlap_tracts_at(self, site: str) -> list[int]:
        """Tracts SITE processes a second time, for the site-independence QA (another site's own)."""
        return sorted(tract for tract, second in self.qa.overlap.items() if second == site)

    def tract_site(self, tract: int) -> str:
        """The site whose own tract this is (whose outputs are the campaign's product)."""
        return next(site for site, tracts in self.tracts.items() if tract in tracts)

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
