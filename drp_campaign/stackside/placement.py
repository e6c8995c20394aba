"""Placing a campaign's inputs, and checking what a site's Butler holds.

`export_inputs` runs at the hub: from one site's tracts it selects, with real queries on the hub's
registry, the datasets the site needs (the place hop's `inputs`): raws of the visits/detectors
overlapping the tracts, calibrations certified for when those visits were taken, reference
catalog shards overlapping the tracts. It writes a hop manifest (as export-hop does; a
calibration's entry carries its validity range, so the site certifies it the same way). A gap is
an error naming what is missing (a raw the hub's visits promise but lacks, a visit date no
calibration covers): nothing is placed from an incomplete selection.

`check_datasets` runs at any site: of a manifest's datasets, how many its Butler holds (present)
and how many of those have a file of the manifest's size and adler32 (verified), per dataset type
with bytes. The place hop's verify and `drp-campaign inventory` both read it.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..bps import group_query
from ..checksums import adler32
from ..config import CampaignConfig, InputSelection
from ._errors import StacksideError
from .hop import manifest_entry, write_manifest
from .repo import open_butler

SHOWN = 10  # missing items named in an error; the count says how many more


def _tract_query(campaign: CampaignConfig, tracts: list[int]) -> dict[str, Any]:
    return {**group_query(campaign, tracts), "explain": False, "limit": None}


def _missing_collection(butler, collection: str) -> bool:
    from lsst.daf.butler.registry import MissingCollectionError

    try:
        butler.collections.get_info(collection)
    except MissingCollectionError:
        return True
    return False


def _by_visits(butler, campaign, name: str, sel: InputSelection, tracts: list[int], problems: list[str]) -> list:
    """The datasets of every (visit, detector) overlapping the tracts; each one lacking is a problem."""
    query = _tract_query(campaign, tracts)
    wanted = {
        (d["visit"], d["detector"]): d["tract"] for d in butler.query_data_ids(["visit", "detector", "tract"], **query)
    }
    refs = {r.id: r for r in butler.query_datasets(name, collections=sel.collection, **query)}.values()
    have = {(r.dataId["visit"], r.dataId["detector"]) for r in refs}
    for (visit, detector), tract in sorted(wanted.items()):
        if (visit, detector) not in have:
            problems.append(f"{name} visit={visit} detector={detector} (tract {tract}) is not in {sel.collection}")
    return sorted(refs, key=lambda r: str(r.id))


def _by_validity(butler, campaign, name: str, sel: InputSelection, tracts: list[int], problems: list[str]) -> list:
    """For each (visit, detector), the calibration certified for the visit's time; a visit date no
    calibration covers is a problem, named with its date range."""
    query = _tract_query(campaign, tracts)
    visits = {r.id: r for r in butler.query_dimension_records("visit", **query)}
    pairs = sorted({(d["visit"], d["detector"]) for d in butler.query_data_ids(["visit", "detector"], **query)})
    keys = [d for d in butler.get_dataset_type(name).dimensions.required if d != "instrument"]
    if any(k not in ("detector", "physical_filter") for k in keys):
        raise StacksideError(
            f"{name}: calibrations with dimensions {keys} cannot be matched to visits here "
            "(only detector and physical_filter are)"
        )
    by_key = defaultdict(list)
    for assoc in butler.registry.queryDatasetAssociations(name, collections=[sel.collection], flattenChains=False):
        by_key[tuple(assoc.ref.dataId[k] for k in keys)].append(assoc)
    chosen: dict[uuid.UUID, tuple] = {}
    uncovered: dict[tuple, list[int]] = defaultdict(list)
    for visit, detector in pairs:
        record = visits[visit]
        values = {"detector": detector, "physical_filter": record.physical_filter}
        key = tuple(values[k] for k in keys)
        match = [a for a in by_key.get(key, []) if a.timespan.overlaps(record.timespan)]
        if not match:
            uncovered[key].append(visit)
        for assoc in match:
            chosen[assoc.ref.id] = (assoc.ref, assoc.timespan)
    for key, vs in sorted(uncovered.items()):
        spans = [visits[v].timespan for v in vs]
        what = " ".join(f"{k}={v}" for k, v in zip(keys, key))
        problems.append(
            f"{name} {what}: nothing certified in {sel.collection} for "
            f"{min(s.begin for s in spans).isot[:19]} .. {max(s.end for s in spans).isot[:19]} TAI "
            f"(visits {', '.join(map(str, sorted(set(vs))))})"
        )
    return [chosen[i] for i in sorted(chosen, key=str)]


def _by_region(butler, campaign, name: str, sel: InputSelection, tracts: list[int], problems: list[str]) -> list:
    """Sky-pixel shards whose pixels overlap the tracts' regions (a superset, as refcat loaders do)."""
    skypix = [
        d for d in butler.get_dataset_type(name).dimensions.required if d in butler.dimensions.skypix_dimensions.names
    ]
    pixelization = butler.dimensions.skypix_dimensions[skypix[0]].pixelization
    pixels: set[int] = set()
    for record in butler.query_dimension_records("tract", **_tract_query(campaign, tracts)):
        for begin, end in pixelization.envelope(record.region):
            pixels.update(range(begin, end))
    refs = [
        r
        for r in butler.query_datasets(name, collections=sel.collection, explain=False, limit=None)
        if r.dataId[skypix[0]] in pixels
    ]
    if not refs:
        problems.append(f"{name}: no {skypix[0]} shard in {sel.collection} overlaps tracts {tracts}")
    return sorted(refs, key=lambda r: str(r.id))


SELECTORS = {"visits_in_tracts": _by_visits, "valid_for_visits": _by_validity, "overlaps_tracts": _by_region}


def export_inputs(campaign: CampaignConfig, site: str, tracts: list[int], repo: Path, manifest: Path) -> dict[str, Any]:
    """Write the manifest of what SITE needs for TRACTS from the hub's repo REPO; refuse gaps."""
    from lsst.daf.butler import MissingDatasetTypeError
    from lsst.resources import ResourcePath

    place = campaign.place_hop()
    if place is None:
        raise StacksideError(f"{campaign.file}: the campaign has no place hop (direction: place); nothing to export")
    hub = campaign.hub()
    butler, _ = open_butler(repo, writeable=False, what=f" (hub {hub})")
    problems: list[str] = []
    entries: list[dict[str, Any]] = []
    with butler:
        root = ResourcePath(str(Path(repo).resolve()), forceDirectory=True)
        for name, sel in place.inputs.items():
            if _missing_collection(butler, sel.collection):
                problems.append(f"{name}: collection {sel.collection} does not exist")
                continue
            try:
                found = SELECTORS[sel.select](butler, campaign, name, sel, tracts, problems)
            except MissingDatasetTypeError:
                problems.append(f"{name}: the dataset type is not registered")
                continue
            for item in found:
                ref, span = item if isinstance(item, tuple) else (item, None)
                entry = manifest_entry(butler, root, ref, repo)
                if span is not None:
                    entry["validity"] = {
                        "collection": sel.collection,
                        "begin": span.begin.tai.isot,
                        "end": span.end.tai.isot,
                    }
                entries.append(entry)
    if problems:
        shown = problems[:SHOWN] + ([f"... and {len(problems) - SHOWN} more"] if len(problems) > SHOWN else [])
        raise StacksideError(
            f"hub {hub} ({repo}) lacks inputs site {site} needs for tracts {tracts}: "
            + "; ".join(shown)
            + "; add them to the hub's Butler (ingest or certify them), then clear this task"
        )
    write_manifest(
        manifest,
        {
            "repo": str(Path(repo).resolve()),
            "site": site,
            "tracts": tracts,
            "dataset_types": list(place.inputs),
            "entries": entries,
        },
    )
    return {
        "manifest": str(manifest),
        "site": site,
        "tracts": tracts,
        "entries": len(entries),
        "bytes": sum(e["bytes"] for e in entries),
        "by_type": _count(entries, place.inputs),
    }


def _count(entries: list[dict], types) -> dict[str, int]:
    counts = {t: 0 for t in types}
    for e in entries:
        counts[e["dataset_type"]] = counts.get(e["dataset_type"], 0) + 1
    return counts


def check_datasets(repo: Path, manifest: Path) -> dict[str, Any]:
    """Per dataset type: expected (the manifest), present (in this Butler), verified (its file has
    the manifest's size and adler32; a calibration is certified for the manifest's range)."""
    try:
        doc = json.loads(Path(manifest).read_text())
        entries = doc["entries"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StacksideError(f"check-datasets: cannot read the entries of manifest {manifest}: {exc}") from None
    butler, _ = open_butler(repo, writeable=False)
    zero = {"expected": 0, "present": 0, "verified": 0, "bytes_expected": 0, "bytes_present": 0, "bytes_verified": 0}
    by_type: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    certified: dict[tuple[str, str], set] = {}
    with butler:
        for e in entries:
            row = by_type.setdefault(e["dataset_type"], dict(zero))
            row["expected"] += 1
            row["bytes_expected"] += int(e["bytes"])
            ref = butler.get_dataset(uuid.UUID(e["dataset_id"]))
            if ref is None:
                problems.append(f"{e['dataset_type']} {e['dataset_id']}: not in the Butler")
                continue
            row["present"] += 1
            row["bytes_present"] += int(e["bytes"])
            why = _file_problem(butler, ref, e)
            validity = e.get("validity")
            if why is None and validity:
                key = (e["dataset_type"], validity["collection"])
                if key not in certified:
                    certified[key] = _certified_ids(butler, *key)
                if ref.id not in certified[key]:
                    why = f"not certified in {validity['collection']}"
            if why:
                problems.append(f"{e['dataset_type']} {e['dataset_id']}: {why}")
                continue
            row["verified"] += 1
            row["bytes_verified"] += int(e["bytes"])
    return {
        "repo": str(repo),
        "manifest": str(manifest),
        "ok": not problems,
        "by_type": by_type,
        "problems": problems[:20],
        "problem_count": len(problems),
    }


def _file_problem(butler, ref, entry: dict) -> str | None:
    try:
        path = Path(butler.getURI(ref).ospath)
    except Exception as exc:  # noqa: BLE001 - no datastore record: the Butler has lost the file
        return f"no file in the datastore ({type(exc).__name__})"
    if not path.is_file():
        return f"file missing: {path}"
    if path.stat().st_size != int(entry["bytes"]):
        return f"size {path.stat().st_size}, expected {entry['bytes']}"
    if adler32(path) != str(entry["adler32"]).lower():
        return f"adler32 {adler32(path)}, expected {entry['adler32']}"
    return None


def _certified_ids(butler, dataset_type: str, collection: str) -> set:
    try:
        return {a.ref.id for a in butler.registry.queryDatasetAssociations(dataset_type, collections=[collection])}
    except Exception:  # noqa: BLE001 - type or collection missing here: nothing certified
        return set()
