"""What software a site really runs: its LSST stack version and the pipeline as its stack expands it.

Run at every site before any step (`software-report`), through the site's own setup command, so
the answer is the one a job at that site would get. Two things are reported:

- the stack version: the installed version of the LSST distributions that make up the stack the
  controller drives (daf_butler, pipe_base, ctrl_bps, ctrl_mpexec), from the packages' metadata,
  exactly what `pip` sees. If they disagree (a half-upgraded or shadowed install) the version is
  `mixed` (`incomplete` if one is missing) and `packages` says which is which;
- the pipeline hash: sha256 over the *expanded* pipeline, i.e. after this stack built the
  pipe_base pipeline graph: for each task in label order, its label, task class and full config
  as the stack saves it (`config.saveToString()`). Two sites agree only if their stacks would run
  the very same task configs, whatever the source files look like.
"""

from __future__ import annotations

import hashlib
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from ..config import CampaignConfig, PipelineSpec
from .pipeline import load_pipeline_graph, write_pipeline

# The distributions whose version is "the stack version"; a release installs them all at one version.
STACK_PACKAGES = ("lsst-daf-butler", "lsst-pipe-base", "lsst-ctrl-bps", "lsst-ctrl-mpexec")
MIXED = "mixed"
INCOMPLETE = "incomplete"


def package_versions(names: tuple[str, ...] = STACK_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when not installed), first on sys.path wins."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def stack_version(packages: dict[str, str | None]) -> str:
    """The one version all stack packages share, else `incomplete` (one missing) or `mixed`."""
    if any(v is None for v in packages.values()):
        return INCOMPLETE
    versions = set(packages.values())
    return versions.pop() if len(versions) == 1 else MIXED


def pipeline_digest(spec: PipelineSpec) -> tuple[str, int]:
    """(sha256 hex, task count) of the pipeline as this site's stack expands it (all steps, no faults)."""
    with tempfile.TemporaryDirectory(prefix="drp-software-") as tmp:
        graph = load_pipeline_graph(write_pipeline(spec, Path(tmp) / "pipeline.yaml"))
    sha = hashlib.sha256()
    labels = sorted(graph.tasks)
    for label in labels:
        node = graph.tasks[label]
        for part in (label, node.task_class_name, node.get_config_str()):
            data = part.encode()
            # Length-prefixed, so no two different (label, class, config) sequences hash alike.
            sha.update(len(data).to_bytes(8, "big"))
            sha.update(data)
    return sha.hexdigest(), len(labels)


def software_report(campaign: CampaignConfig) -> dict[str, Any]:
    """The site's stack version (and per-package versions), Python, and the expanded pipeline's hash."""
    packages = package_versions()
    sha, ntasks = pipeline_digest(campaign.pipeline_spec)
    return {
        "stack_version": stack_version(packages),
        "packages": packages,
        "python": platform.python_version(),
        "pipeline_sha": sha,
        "pipeline_tasks": ntasks,
        "pipeline_file": str(campaign.pipeline_spec.file),
    }
