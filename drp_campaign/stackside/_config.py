"""A small private reader of the campaign, pipeline and site YAML files (only the keys the stack side needs).

Deliberately independent of drp_campaign.config (the typed models): the stack side runs in the
science-stack environment and must only need pyyaml to understand its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import settings
from ._errors import StacksideError


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise StacksideError(f"{what} file {path} does not exist: pass an existing file") from None
    except yaml.YAMLError as exc:
        raise StacksideError(f"{what} file {path} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise StacksideError(f"{what} file {path} must contain a mapping at the top level")
    return data


def _need(data: dict, path: Path, *keys: str) -> Any:
    node: Any = data
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            raise StacksideError(f"{path}: missing key {'.'.join(keys[: i + 1])!r}; add it to the file")
        node = node[key]
    return node


@dataclass
class Synthetic:
    visits_per_tract: int
    detectors_per_visit: int
    patches_per_tract: int
    bands: list[str]


@dataclass
class Campaign:
    path: Path
    name: str
    instrument: str
    skymap: str
    input_collections: list[str]
    synthetic: Synthetic
    tracts: dict[str, list[int]]
    pipeline_path: Path
    output_prefix: str = ""
    raw: dict = field(default_factory=dict)

    @property
    def all_tracts(self) -> list[int]:
        return sorted({t for ts in self.tracts.values() for t in ts})

    @property
    def n_tracts(self) -> int:
        """Number of tracts of the synthetic skymap: ids 0..N-1 cover every tract named."""
        return max(self.all_tracts) + 1 if self.all_tracts else 0

    def site_tracts(self, site: str) -> list[int]:
        if site not in self.tracts:
            raise StacksideError(
                f"{self.path}: site {site!r} has no tracts (tracts.{site} missing); "
                f"known sites: {', '.join(sorted(self.tracts))}"
            )
        return sorted(self.tracts[site])


def load_campaign(path: str | Path) -> Campaign:
    path = Path(path).resolve()
    data = _read_yaml(path, "campaign")
    syn = _need(data, path, "data", "synthetic")
    try:
        synthetic = Synthetic(
            visits_per_tract=int(syn["visits_per_tract"]),
            detectors_per_visit=int(syn["detectors_per_visit"]),
            patches_per_tract=int(syn["patches_per_tract"]),
            bands=[str(b) for b in syn["bands"]],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StacksideError(
            f"{path}: data.synthetic needs integer visits_per_tract, detectors_per_visit, "
            f"patches_per_tract and a list bands ({exc!r})"
        ) from None
    tracts_raw = _need(data, path, "tracts")
    if not isinstance(tracts_raw, dict):
        raise StacksideError(f"{path}: tracts must map site -> list of tract ids")
    tracts = {str(site): [int(t) for t in ts] for site, ts in tracts_raw.items()}
    pipeline_rel = _need(data, path, "pipeline")
    pipeline_path = (path.parent / pipeline_rel).resolve()
    inputs = _need(data, path, "data", "input_collections")
    if not inputs:
        raise StacksideError(f"{path}: data.input_collections must name at least one collection")
    return Campaign(
        path=path,
        name=str(data.get("name", path.stem)),
        instrument=str(_need(data, path, "data", "instrument")),
        skymap=str(_need(data, path, "data", "skymap")),
        input_collections=[str(c) for c in inputs],
        synthetic=synthetic,
        tracts=tracts,
        pipeline_path=pipeline_path,
        output_prefix=str(data.get("output_prefix", "")),
        raw=data,
    )


@dataclass
class PipelineSpec:
    path: Path
    description: str
    instrument: str | None
    dataset_types: dict[str, dict[str, Any]]
    tasks: dict[str, dict[str, Any]]

    @property
    def steps(self) -> list[str]:
        seen: list[str] = []
        for spec in self.tasks.values():
            if spec["step"] not in seen:
                seen.append(spec["step"])
        return seen

    def step_tasks(self, step: str) -> list[str]:
        labels = [label for label, spec in self.tasks.items() if spec["step"] == step]
        if not labels:
            raise StacksideError(
                f"{self.path}: no task has step {step!r}; steps are {', '.join(self.steps)}"
            )
        return labels

    def step_outputs(self, step: str) -> list[str]:
        out: list[str] = []
        for label in self.step_tasks(step):
            out.extend(self.tasks[label]["outputs"])
        return out


def load_pipeline_spec(path: str | Path) -> PipelineSpec:
    path = Path(path).resolve()
    data = _read_yaml(path, "pipeline")
    dataset_types = _need(data, path, "dataset_types")
    tasks = _need(data, path, "tasks")
    for name, spec in dataset_types.items():
        if not isinstance(spec, dict) or "dimensions" not in spec:
            raise StacksideError(f"{path}: dataset_types.{name}.dimensions is missing")
    for label, spec in tasks.items():
        for key in ("step", "dimensions", "inputs", "outputs"):
            if not isinstance(spec, dict) or key not in spec:
                raise StacksideError(f"{path}: tasks.{label}.{key} is missing")
        for ds in list(spec["inputs"]) + list(spec["outputs"]):
            if ds not in dataset_types:
                raise StacksideError(
                    f"{path}: tasks.{label} uses dataset type {ds!r} that is not declared under dataset_types"
                )
    return PipelineSpec(
        path=path,
        description=str(data.get("description", "")),
        instrument=data.get("instrument"),
        dataset_types=dataset_types,
        tasks=tasks,
    )


def site_repo(site: str, sites_file: str | Path | None = None) -> Path:
    """The Butler repo path configured for SITE in sites.yaml ($DRP_* expanded)."""
    path = Path(sites_file or settings.DEFAULT_SITES_FILE).resolve()
    data = _read_yaml(path, "sites")
    sites = data.get("sites") or {}
    if site not in sites:
        raise StacksideError(f"{path}: unknown site {site!r}; known: {', '.join(sorted(sites))}")
    repo = (sites[site] or {}).get("butler_repo")
    if not repo:
        raise StacksideError(f"{path}: sites.{site}.butler_repo is missing")
    return settings.expand(str(repo))
