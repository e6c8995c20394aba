"""The plans as the campaign view serves them (/drp/plans, /drp/plan): each plan file of
configs/plans planned, simulated and drawn as `drp-campaign plan --simulate --pictures` would,
once per change of the plan, its template campaign or the sites file (the api-server is long-lived;
DR2 takes ~0.2 s to plan and a few seconds to draw).

The pictures go under the work directory (`plans/<plan>/<version>/`), never into docs/.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from drp_campaign import settings
from drp_campaign.config import ConfigError
from drp_campaign.config.reading import read_mapping
from drp_campaign.errors import DrpError

if TYPE_CHECKING:  # numpy comes with it: loaded when a plan is first served, not with the view
    from .assign import Planned

PLANS_DIR = settings.CONFIGS_DIR / "plans"
PICTURES = ("skymap", "gantt", "storage")


@dataclass(frozen=True)
class ServedPlan:
    """One plan as the view shows it: what it costs (the CLI's report), whether `plan --out` would
    write it, and its pictures."""

    name: str  # the plan's (and the campaign it writes) name
    file: Path
    template: Path  # the campaign whose steps and hops the plan fills in
    report: str
    refused: str | None  # why `plan --out` would write nothing; None: it would write the campaign
    caveat: str | None  # what the campaign's DAG does not do as planned (campaign_file.dag_caveat)
    pictures: dict[str, Path]  # PICTURES -> PNG
    planned: Planned  # what the report and pictures show (what-ifs start from it)

    @property
    def sites(self) -> list[str]:
        return list(self.planned.plan.sites)

    def site_down(self, site: str, from_day: float, days: float) -> str:
        """What-if SITE is down for DAYS from FROM_DAY: waiting for it against re-planning its work
        (`drp-campaign plan --site-down`); a DrpError naming the bad site or days."""
        from .assign import site_down
        from .report import outage_report

        wait, replan = site_down(self.planned, site, from_day, days)
        return outage_report(self.planned, site, from_day, days, wait, replan)


_lock = threading.Lock()  # one plan drawn at a time: pyplot keeps global state
_served: dict[Path, tuple[tuple, ServedPlan]] = {}  # plan file -> (its version, what was served)
_names: dict[Path, tuple[float, str | None]] = {}  # plan file -> (mtime, its name or None)


def plan_files(directory: Path | None = None) -> list[Path]:
    directory = PLANS_DIR if directory is None else Path(directory)
    return sorted(path for path in directory.glob("*.yaml") if path.is_file())


def plan_names(directory: Path | None = None) -> dict[str, Path]:
    """Plan name -> its file (the `name` the plan gives its campaign), read again only when a file
    changes; a file without a name is left out here (its own page names the problem)."""
    names = {}
    for path in plan_files(directory):
        mtime = path.stat().st_mtime
        cached = _names.get(path)
        if cached is None or cached[0] != mtime:
            try:
                name = read_mapping(path).get("name")
            except ConfigError:
                name = None
            _names[path] = cached = (mtime, name if isinstance(name, str) else None)
        if cached[1] is not None:
            names.setdefault(cached[1], path)
    return names


def plan_file(name: str, directory: Path | None = None) -> Path:
    """The file of the plan named NAME; a DrpError naming the plans there are otherwise."""
    names = plan_names(directory)
    if name not in names:
        where = PLANS_DIR if directory is None else directory
        known = ", ".join(sorted(names)) or "none"
        raise DrpError(f"no plan named {name!r} in {where} (plans: {known})")
    return names[name]


def _version(*files: Path) -> tuple:
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)


def served_plan(name: str, directory: Path | None = None) -> ServedPlan:
    """The plan named NAME, planned and drawn (again only once one of its files changed, or its
    pictures went missing).

    A plan that does not load raises its ConfigError (file, key, what to do), as the CLI would."""
    from .plan_config import load_plan

    path = plan_file(name, directory)
    with _lock:
        plan = load_plan(path)
        version = (settings.work_dir(), *_version(path, plan.campaign.file, plan.campaign.sites_config.file))
        cached = _served.get(path)
        if cached is not None and cached[0] == version and all(p.is_file() for p in cached[1].pictures.values()):
            return cached[1]
        served = _draw(plan, version)
        _served[path] = (version, served)
        return served


def _draw(plan, version: tuple) -> ServedPlan:
    from . import pictures
    from .assign import plan_tracts
    from .campaign_file import dag_caveat
    from .fits import check_fits
    from .report import report

    planned = plan_tracts(plan)
    try:
        check_fits(planned)
        refused = None
    except ConfigError as exc:
        refused = str(exc)
    digest = hashlib.sha256(repr(version).encode()).hexdigest()[:12]
    directory = settings.work_dir() / "plans" / plan.doc.name / digest
    paths = pictures.draw_all(planned, directory)
    for older in directory.parent.iterdir():  # an earlier version's pictures: no page shows them now
        if older != directory:
            shutil.rmtree(older, ignore_errors=True)
    return ServedPlan(
        name=plan.doc.name,
        file=plan.file,
        template=plan.campaign.file,
        report=report(planned),
        refused=refused,
        caveat=dag_caveat(plan),
        pictures=dict(zip(PICTURES, paths, strict=True)),
        planned=planned,
    )
