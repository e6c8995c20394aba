"""Typed configuration: sites, pipeline spec and campaigns, validated when they are loaded.

A bad file must stop everything before anything starts, with ONE message that names the file,
the key path and what to do (`ConfigError`). One module a job, imported in this order:

* `errors`: `ConfigError` and the bounded, one-line pieces its messages are made of;
* `names`: the safe-name table (what a name that reaches a shell, a query or a path may be);
* `models`: the pydantic models, i.e. structure (keys, types, ranges);
* `reading`: YAML within bounds into a model, pydantic's errors as `file: key.path[i]: problem`;
* `checks`: meaning across keys and files (unknown sites, `after` references, cycles, what a hop
  may move), on the already-typed objects, in file order;
* `load`: the `load_*` functions that put the four together.

This package is imported by Airflow DAG files, which the scheduler parses again and again: it must
stay light (pydantic and yaml only, no Airflow, no LSST stack, no I/O beyond reading the files).
"""

from .errors import ConfigError, name_list
from .load import campaign_of_dag, find_campaign_files, load_campaign, load_pipeline, load_sites
from .models import (
    CampaignConfig,
    ConfigModel,
    DataSelection,
    DatasetTypeSpec,
    HopConfig,
    InputSelection,
    PandaSite,
    PipelineSpec,
    PipelineTaskSpec,
    QaConfig,
    RucioRses,
    SiteConfig,
    SitesConfig,
    StepConfig,
    SyntheticData,
    campaign_dag_id,
)
from .names import WORD
from .reading import absolute_path, read_mapping, validate_mapping

__all__ = [
    "WORD",
    "CampaignConfig",
    "ConfigError",
    "ConfigModel",
    "DataSelection",
    "DatasetTypeSpec",
    "HopConfig",
    "InputSelection",
    "PandaSite",
    "PipelineSpec",
    "PipelineTaskSpec",
    "QaConfig",
    "RucioRses",
    "SiteConfig",
    "SitesConfig",
    "StepConfig",
    "SyntheticData",
    "absolute_path",
    "campaign_dag_id",
    "campaign_of_dag",
    "find_campaign_files",
    "load_campaign",
    "load_pipeline",
    "load_sites",
    "name_list",
    "read_mapping",
    "validate_mapping",
]
