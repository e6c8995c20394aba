"""The loaders: a file's path in, a checked, typed configuration out (or one `ConfigError`)."""

from __future__ import annotations

import logging
from pathlib import Path

from drp_campaign import settings

from .checks import check_campaign, check_pipeline, check_sites
from .errors import ConfigError
from .models import CampaignConfig, CampaignDocument, PipelineSpec, SitesConfig
from .reading import absolute_path, read_mapping, validate_mapping

log = logging.getLogger(__name__)


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
        raise ConfigError(
            file,
            "pipeline",
            f"pipeline file {pipeline_file} does not exist; fix the path (it is relative to the campaign file)",
        )
    pipeline = load_pipeline(pipeline_file)
    check_campaign(doc, file, pipeline, sites)
    steps = {
        name: step.model_copy(update={"site": sites.hub}) if step.scope == "global" and step.site is None else step
        for name, step in doc.steps.items()
    }
    # A place hop moves the types it selects inputs for.
    hops = {
        name: hop.model_copy(update={"dataset_types": list(hop.inputs)}) if hop.direction == "place" else hop
        for name, hop in doc.hops.items()
    }
    fields = {name: getattr(doc, name) for name in CampaignDocument.model_fields}
    return CampaignConfig.model_validate(
        {
            **fields,
            "steps": steps,
            "hops": hops,
            "pipeline": pipeline_file,
            "file": file,
            "pipeline_spec": pipeline,
            "sites_config": sites,
        }
    )


def find_campaign_files(directory: Path | None = None) -> list[Path]:
    """The campaign files in a directory (default configs/campaigns), sorted by name."""
    directory = settings.CAMPAIGNS_DIR if directory is None else Path(directory)
    return sorted(path for path in directory.glob("*.yaml") if path.is_file())


_loaded: dict[Path, tuple[float, CampaignConfig | None]] = {}  # file -> (mtime, its config or None)


def campaign_of_dag(dag_id: str, directory: Path | None = None) -> CampaignConfig | None:
    """The campaign whose DAG is DAG_ID, from the campaign files; each file is read again only
    when it changes (long-lived callers: the api-server's view and trigger guard). A file that does
    not load is logged and passed over (the dag-processor reports it as the DAG's import error)."""
    for path in find_campaign_files(directory):
        mtime = path.stat().st_mtime
        cached = _loaded.get(path)
        if cached is None or cached[0] != mtime:
            try:
                config = load_campaign(path)
            except ConfigError as exc:
                log.warning("campaign not loaded: %s", exc)
                config = None
            _loaded[path] = cached = (mtime, config)
        if cached[1] is not None and cached[1].dag_id() == dag_id:
            return cached[1]
    return None
