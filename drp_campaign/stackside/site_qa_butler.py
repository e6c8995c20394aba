"""`site-qa`: the site-independence QA at the hub, reading both sites' copies from its Butler.

An overlap tract's own site A made the product, found in the hub's site chain (find-first); the
second site B's copy came home into B's overlap RUNs (graph.overlap_runs_pattern), out of every
chain. Per compared dataset type (qa.compare), the tract's datasets are found on both sides by a
query constrained by skymap and tract (a visit-dimensioned type by its visits' regions); the data
IDs both sides hold are compared (tables concatenated, dicts one by one) with drp_campaign.site_qa.
What one side lacks is a failed check naming it, not an error: only a bad argument or an unusable
repo is (StacksideError, exit 2).
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from .. import graph
from ..config import CampaignConfig
from ..site_qa import (
    EXACT,
    Check,
    Side,
    SiteQaReport,
    compare_metrics,
    compare_presence,
    compare_tables,
    plot_name,
    plot_tract,
)
from ._errors import StacksideError
from .repo import matching_runs, open_butler, require_chain

REPORT_NAME = "site_qa.json"
DATASETS = "datasets"  # the check that both sides hold the same data IDs
DUPLICATES = "datasets.duplicated"  # the check that B's RUNs hold one copy of each
# Bind names must not be dimension names: `tract = :tract` would read as the dimension equal to itself.
TRACT_WHERE = "skymap = :overlap_skymap AND tract = :overlap_tract"
# Not named in a data ID's text: the same for every dataset of the campaign.
CAMPAIGN_WIDE = ("instrument", "skymap")


def overlap_selection(campaign: CampaignConfig, tracts: list[int] | None) -> dict[int, str]:
    """Overlap tract -> second site, for TRACTS (all of qa.overlap when None); others refused."""
    overlap = campaign.qa.overlap
    if not overlap:
        raise StacksideError(f"{campaign.file}: qa.overlap names no tract: there is nothing to compare")
    unknown = sorted(set(tracts or ()) - set(overlap))
    if unknown:
        raise StacksideError(
            f"--tracts: {', '.join(map(str, unknown))} not an overlap tract of {campaign.file} "
            f"(qa.overlap: {', '.join(map(str, sorted(overlap)))}); choose among those"
        )
    return {t: overlap[t] for t in sorted(overlap) if not tracts or t in tracts}


def site_qa(
    campaign: CampaignConfig, repo: Path, key: str, report_dir: Path, tracts: list[int] | None = None
) -> dict[str, Any]:
    """Compare each selected overlap tract's two copies; write the JSON report and one PNG per
    tract into REPORT_DIR; return what the site_qa task needs (checks, failure message, paths)."""
    selected = overlap_selection(campaign, tracts)
    chain = graph.site_chain(campaign, key)
    butler, _ = open_butler(repo, writeable=False, what=" (the hub)")
    checks: list[Check] = []
    with butler:
        remedy = f"is --key {key} the run's key, and have its products come home (return hop ingested)?"
        require_chain(butler, chain, repo, campaign.hub(), remedy)
        for tract, site_b in selected.items():
            side = Side(tract, campaign.tract_site(tract), site_b)
            pattern = graph.overlap_runs_pattern(campaign, key, site_b)
            runs_b = matching_runs(butler, [pattern])
            for name in campaign.qa.compare:
                checks += _compare_type(butler, campaign, side, name, chain, runs_b, pattern)
    report = SiteQaReport(checks)
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / REPORT_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"run_key": key, "hub_repo": str(repo), **report.to_json()}, indent=1))
    tmp.replace(path)
    plots = [
        str(plot_tract([c for c in checks if c.tract == tract], report_dir / plot_name(tract))) for tract in selected
    ]
    return {
        "ok": report.ok,
        "verdict": report.verdict(),
        "tracts": list(selected),
        "compared": len(checks),
        "failed": len(report.failures),
        "checks": [c.to_json() for c in checks],
        "failures": [c.describe() for c in report.failures],
        "failure_message": report.failure_message(),
        "report": str(path),
        "plots": plots,
    }


def _compare_type(
    butler, campaign: CampaignConfig, side: Side, name: str, chain: str, runs_b: list[str], pattern: str
) -> list[Check]:
    """The checks of one dataset type of one tract: which data IDs each side holds, then the data
    of those both hold."""
    bind = {"overlap_skymap": campaign.data.skymap, "overlap_tract": side.tract}
    refs_a = _by_data_id(_query(butler, name, [chain], bind, find_first=True))
    refs_b = _by_data_id(_query(butler, name, runs_b, bind, find_first=False)) if runs_b else {}
    presence = compare_presence(side, name, DATASETS, refs_a, refs_b, what=f"{name} datasets")
    if not runs_b:
        presence = dataclasses.replace(
            presence, ok=False, note=f"no RUN matching {pattern} at the hub: {side.site_b}'s copy has not come home"
        )
    checks = [presence]
    duplicated = {i: refs for i, refs in refs_b.items() if len(refs) > 1}
    if duplicated:  # which copy would be compared is a guess: say so, compare none of those
        listed = "; ".join(f"{i} in {', '.join(r.run for r in refs)}" for i, refs in sorted(duplicated.items())[:5])
        checks.append(
            side.check(name, DUPLICATES, 0, len(duplicated), EXACT, 0.0, False, f"more than one copy: {listed}")
        )
    common = [i for i in refs_a if i in refs_b and i not in duplicated]
    if not common:
        return checks
    try:
        data_a = [_readable(butler.get(refs_a[i][0]), name, side.site_a) for i in common]
        data_b = [_readable(butler.get(refs_b[i][0]), name, side.site_b) for i in common]
    except TypeError as exc:
        return [*checks, side.check(name, "storage_class", None, None, EXACT, 0.0, False, str(exc))]
    dicts = [isinstance(d, dict) for d in data_a + data_b]
    if any(dicts) and not all(dicts):
        note = f"{name} is a table at one site and a dict at the other: the two sites' pipelines differ"
        return [*checks, side.check(name, "storage_class", None, None, EXACT, 0.0, False, note)]
    if all(dicts):
        for data_id, a, b in zip(common, data_a, data_b, strict=True):
            found = compare_metrics(side, name, a, b, campaign.qa)
            # One dict per data ID: a quantity names its data ID when the tract has several.
            checks += found if len(common) == 1 else [_for_data_id(c, data_id) for c in found]
        return checks
    return checks + compare_tables(side, name, _columns(data_a), _columns(data_b), campaign.qa)


def _query(butler, name: str, collections: list[str], bind: dict[str, Any], *, find_first: bool) -> list:
    from lsst.daf.butler import MissingDatasetTypeError

    try:
        return butler.query_datasets(
            name,
            collections=collections,
            where=TRACT_WHERE,
            bind=bind,
            find_first=find_first,
            explain=False,
            limit=None,
        )
    except MissingDatasetTypeError:  # never registered at the hub: nothing of it on either side
        return []


def _data_id_text(ref) -> str:
    return ", ".join(f"{k}={v}" for k, v in ref.dataId.required.items() if k not in CAMPAIGN_WIDE)


def _by_data_id(refs: list) -> dict[str, list]:
    """Data ID (as text, ordered by its values) -> its refs (more than one only across B's RUNs)."""
    out: dict[str, list] = defaultdict(list)
    for ref in sorted(refs, key=lambda r: (tuple(r.dataId.required_values), r.run)):
        out[_data_id_text(ref)].append(ref)
    return dict(out)


def _readable(obj: Any, name: str, site: str) -> Any:
    """A dataset the comparison can take: a dict of metrics, or an astropy table."""
    import astropy.table

    if isinstance(obj, dict | astropy.table.Table):
        return obj
    raise TypeError(
        f"{name} at {site} is a {type(obj).__name__}, neither a table nor a dict: "
        "its storage class must be ArrowAstropy or StructuredDataDict (made by a real task)"
    )


def _columns(tables: list) -> dict[str, Any]:
    """The tract's tables of one type as one table's columns: a column missing from some tables
    is masked there (NaN, for the comparison)."""
    import astropy.table

    stacked = (
        tables[0] if len(tables) == 1 else astropy.table.vstack(tables, join_type="outer", metadata_conflicts="silent")
    )
    return {name: stacked[name] for name in stacked.colnames}


def _for_data_id(check: Check, data_id: str) -> Check:
    return dataclasses.replace(check, quantity=f"{check.quantity}.{data_id.replace(', ', ',')}")
