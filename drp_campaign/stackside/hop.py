"""Export datasets of a hop from one site's Butler into a manifest, and ingest replicas of them into
another site's Butler (same UUIDs, same RUNs), verifying size and adler32 of every file.

The manifest is the contract with the transfer layer (Rucio in production, a copy in tests):
{repo, collections, dataset_types, entries: [{dataset_id, dataset_type, run, data_id, path,
relpath, bytes, adler32, ref}]}.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..checksums import adler32
from ._errors import StacksideError
from .repo import certify_missing, matching_runs, open_butler, prepend_to_chain, split_names, with_lock_retry


def _jsonable_data_id(data_id) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str)) or v is None else str(v)) for k, v in data_id.required.items()}


def manifest_entry(butler, root, ref, repo: Path) -> dict[str, Any]:
    """One dataset's file as a manifest entry (the source's size and adler32)."""
    uri = butler.getURI(ref)
    if not uri.isLocal:
        raise StacksideError(
            f"export: dataset {ref} in {repo} is not a local file ({uri}); only posix datastores are supported"
        )
    path = Path(uri.ospath)
    rel = uri.relative_to(root)
    if rel is None:
        raise StacksideError(
            f"export: file {path} of dataset {ref.id} is outside repo root {repo}; cannot name a relpath"
        )
    if not path.exists():
        raise StacksideError(
            f"export: file {path} of dataset {ref.id} ({ref.datasetType.name} {_jsonable_data_id(ref.dataId)}, "
            f"run {ref.run}) is missing in repo {repo}: restore it there (or remove the dataset) and retry"
        )
    return {
        "dataset_id": str(ref.id),
        "dataset_type": ref.datasetType.name,
        "run": ref.run,
        "data_id": _jsonable_data_id(ref.dataId),
        "path": str(path),
        "relpath": rel,
        "bytes": path.stat().st_size,
        "adler32": adler32(path),
        "ref": json.loads(ref.to_json()),
    }


def write_manifest(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)  # readers never see half a manifest


def export_hop(
    repo: Path, collections: str, dataset_types: str, manifest: Path, also: list[str] = ()
) -> dict[str, Any]:
    """A manifest of the DATASET_TYPES in the RUNs matching COLLECTIONS, plus, for each
    `PATTERNS=TYPES` of ALSO, those types from those RUNs (a second site's overlap outputs)."""
    patterns = split_names(collections)
    types = split_names(dataset_types)
    if not patterns:
        raise StacksideError("export-hop: --collections is empty: pass one or more RUN name patterns")
    if not types:
        raise StacksideError("export-hop: --dataset-types is empty: pass the hop's dataset types")
    selections = [(patterns, types)]
    for text in also:
        extra_patterns, sep, extra_types = text.partition("=")
        if not sep or not split_names(extra_patterns) or not split_names(extra_types):
            raise StacksideError(
                f"export-hop: --also {text!r}: expected PATTERNS=TYPES, e.g. 'drp/x.overlap/B/*=object_table'"
            )
        selections.append((split_names(extra_patterns), split_names(extra_types)))
    from lsst.resources import ResourcePath

    butler, _ = open_butler(repo, writeable=False)
    entries: list[dict[str, Any]] = []
    all_runs: list[str] = []
    with butler:
        root = ResourcePath(str(Path(repo).resolve()), forceDirectory=True)
        registered = {dt.name for dt in butler.registry.queryDatasetTypes("*")}
        for selected_patterns, selected_types in selections:
            runs = matching_runs(butler, selected_patterns)
            all_runs += runs
            for name in selected_types:
                if not runs or name not in registered:
                    continue
                refs = butler.query_datasets(name, collections=runs, find_first=False, explain=False, limit=None)
                entries += [
                    manifest_entry(butler, root, ref, repo) for ref in sorted(refs, key=lambda r: (r.run, str(r.id)))
                ]
    runs = all_runs
    write_manifest(
        manifest,
        {
            "repo": str(Path(repo).resolve()),
            "collections": [p for selected_patterns, _ in selections for p in selected_patterns],
            "runs": runs,
            "dataset_types": types,
            "entries": entries,
        },
    )
    by_type = Counter(e["dataset_type"] for e in entries)
    return {
        "manifest": str(manifest),
        "repo": str(repo),
        "runs": runs,
        "entries": len(entries),
        "bytes": sum(e["bytes"] for e in entries),
        "by_type": {t: by_type.get(t, 0) for t in types},
    }


def ingest_hop(repo: Path, manifest: Path, replica_dir: Path, chain: str, not_chained: str = "") -> dict[str, Any]:
    """Ingest what arrived, checked against the manifest; the RUNs join CHAIN, except those
    matching the glob NOT_CHAINED (a second site's copy of an overlap tract, kept for the QA)."""
    try:
        doc = json.loads(Path(manifest).read_text())
    except FileNotFoundError:
        raise StacksideError(f"ingest-hop: manifest {manifest} does not exist: run export-hop first") from None
    except json.JSONDecodeError as exc:
        raise StacksideError(f"ingest-hop: manifest {manifest} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise StacksideError(f"ingest-hop: manifest {manifest} has no 'entries' list")
    replica_dir = Path(replica_dir)
    if not replica_dir.is_dir():
        raise StacksideError(f"ingest-hop: replica dir {replica_dir} does not exist: the transfer has not delivered it")

    from lsst.daf.butler import DatasetRef, FileDataset

    butler, _ = open_butler(repo, what=" (ingest destination)")
    rejected: list[dict[str, Any]] = []
    out_entries: list[dict[str, Any]] = []
    to_ingest: list[tuple[DatasetRef, Path, dict]] = []
    to_certify: list[tuple[DatasetRef, dict]] = []
    already = 0
    with butler:
        for e in doc["entries"]:
            did, rel = e.get("dataset_id"), e.get("relpath")
            if not did or not rel or "ref" not in e:
                rejected.append(
                    {"dataset_id": did, "relpath": rel, "reason": "manifest entry lacks dataset_id, relpath or ref"}
                )
                continue
            path = replica_dir / rel
            if not path.is_file():
                rejected.append({"dataset_id": did, "relpath": rel, "reason": f"replica file missing: {path}"})
                continue
            size = path.stat().st_size
            checksum = adler32(path)
            if size != e.get("bytes"):
                rejected.append(
                    {
                        "dataset_id": did,
                        "relpath": rel,
                        "reason": f"size mismatch: replica {size} bytes, manifest {e.get('bytes')}",
                    }
                )
                continue
            if checksum != str(e.get("adler32", "")).lower():
                rejected.append(
                    {
                        "dataset_id": did,
                        "relpath": rel,
                        "reason": f"adler32 mismatch: replica {checksum}, manifest {e.get('adler32')}",
                    }
                )
                continue
            try:
                ref = DatasetRef.from_json(json.dumps(e["ref"]), universe=butler.dimensions)
            except Exception as exc:  # noqa: BLE001
                rejected.append({"dataset_id": did, "relpath": rel, "reason": f"cannot rebuild DatasetRef: {exc}"})
                continue
            if str(ref.id) != did or ref.run != e.get("run"):
                rejected.append(
                    {"dataset_id": did, "relpath": rel, "reason": "ref in manifest disagrees with dataset_id/run"}
                )
                continue
            info = {
                "dataset_id": did,
                "dataset_type": ref.datasetType.name,
                "run": ref.run,
                "bytes": size,
                "adler32": checksum,
            }
            if e.get("validity"):
                to_certify.append((ref, e["validity"]))
            existing = butler.get_dataset(ref.id)
            if existing is not None:
                already += 1
                out_entries.append({**info, "status": "already_present"})
                continue
            to_ingest.append((ref, path, info))

        # Register dataset types and RUNs, then ingest (copy) in one transaction.
        for dataset_type in {r.datasetType.name: r.datasetType for r, _, _ in to_ingest}.values():
            try:
                with_lock_retry(
                    lambda dt=dataset_type: butler.registry.registerDatasetType(dt),
                    what=f"registering {dataset_type.name} in {repo}",
                )
            except StacksideError:
                raise
            except Exception as exc:  # noqa: BLE001 - conflicting definition: reject those entries
                bad = [x for x in to_ingest if x[0].datasetType.name == dataset_type.name]
                for ref, path, info in bad:
                    rejected.append(
                        {
                            "dataset_id": str(ref.id),
                            "relpath": str(path.relative_to(replica_dir)),
                            "reason": f"dataset type conflict: {exc}",
                        }
                    )
                to_ingest = [x for x in to_ingest if x[0].datasetType.name != dataset_type.name]
        for run in sorted({r.run for r, _, _ in to_ingest}):
            with_lock_retry(lambda run=run: butler.collections.register(run), what=f"registering run {run} in {repo}")
        datasets = []
        for ref, path, _ in to_ingest:
            expanded = ref.expanded(butler.registry.expandDataId(ref.dataId))
            datasets.append(FileDataset(path=str(path), refs=[expanded]))
        if datasets:
            root = Path(repo).resolve()

            def do_ingest() -> None:
                todo = [d for d in datasets if butler.get_dataset(d.refs[0].id) is None]
                # Rucio delivers into the destination repo itself (its RSE prefix is the repo
                # root): register those files where they are; copy the ones delivered elsewhere.
                in_place, elsewhere = [], []
                for d in todo:  # one pass: `d not in in_place` compared DatasetRefs pairwise (O(n^2))
                    (in_place if Path(d.path).resolve().is_relative_to(root) else elsewhere).append(d)
                if in_place:
                    butler.ingest(*in_place, transfer=None)
                if elsewhere:
                    butler.ingest(*elsewhere, transfer="copy")

            with_lock_retry(do_ingest, what=f"ingesting into {repo}")
        for _, _, info in to_ingest:
            out_entries.append({**info, "status": "ingested"})

        refused = {r["dataset_id"] for r in rejected}
        certified = certify_missing(butler, [(r, v) for r, v in to_certify if str(r.id) not in refused])
        runs = sorted({e["run"] for e in out_entries})
        chained = [run for run in runs if not (not_chained and fnmatch.fnmatchcase(run, not_chained))]
        added = prepend_to_chain(butler, chain, chained) if chained and chain else []
    return {
        "repo": str(repo),
        "manifest": str(manifest),
        "ingested": len(to_ingest),
        "already_present": already,
        "rejected": rejected,
        "entries": out_entries,
        "bytes": sum(e["bytes"] for e in out_entries if e["status"] == "ingested"),
        "runs": runs,
        "chain": chain,
        "chain_added": added,
        "certified": certified,
    }


def forget_datasets(repo: Path, ids_file: Path) -> dict[str, Any]:
    """Remove datasets from a site's Butler (registry and datastore records) but leave the files.

    Used when a site copy is released: Rucio owns the files and its reaper deletes them once
    the rule that held them is gone; the Butler must stop pointing at them first. Re-running
    finds the datasets already gone and changes nothing.
    """
    try:
        ids = json.loads(Path(ids_file).read_text())
    except FileNotFoundError:
        raise StacksideError(f"forget-datasets: ids file {ids_file} does not exist") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise StacksideError(f"forget-datasets: {ids_file} must hold a JSON list of dataset ids")
    import uuid

    butler, _ = open_butler(repo, what=" (release site copies)")
    with butler:
        refs = [r for r in (butler.get_dataset(uuid.UUID(i)) for i in ids) if r is not None]

        def forget() -> None:
            todo = [r for r in refs if butler.get_dataset(r.id) is not None]
            if todo:
                with butler.transaction():
                    butler._datastore.forget(todo)  # records only: no file is touched
                    butler.registry.removeDatasets(todo)

        if refs:
            with_lock_retry(forget, what=f"forgetting datasets in {repo}")
        by_type = Counter(r.datasetType.name for r in refs)
    return {"repo": str(repo), "forgotten": len(refs), "already_gone": len(ids) - len(refs), "by_type": dict(by_type)}
