"""Butler repositories of the embedded sites: create, seed with the synthetic sky, check inputs,
count datasets, and grow input chains safely under concurrent callers."""

from __future__ import annotations

import fnmatch
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ..config import CampaignConfig
from ._errors import StacksideError
from .sky import SyntheticSky, visit_tract

_T = TypeVar("_T")

RAW = "raw"


def _import_stack():
    # Importing the mocks package registers the mock storage classes and formatters with daf_butler
    # (a monkeypatch), which every process touching mock datasets needs.
    import lsst.daf.butler  # noqa: F401
    import lsst.pipe.base.tests.mocks  # noqa: F401


def open_butler(repo: str | Path, *, writeable: bool = True, create: bool = False, what: str = ""):
    """A DirectButler on REPO; create the repo (SQLite registry) first when CREATE and missing."""
    _import_stack()
    from lsst.daf.butler import Butler

    repo = Path(repo)
    created = False
    if not (repo / "butler.yaml").exists():
        if not create:
            raise StacksideError(
                f"Butler repo {repo}{what} does not exist (no butler.yaml): run `seed-repo` for this site first"
            )
        repo.mkdir(parents=True, exist_ok=True)
        Butler.makeRepo(str(repo))
        created = True
    try:
        butler = Butler.from_config(str(repo), writeable=writeable)
    except Exception as exc:  # noqa: BLE001
        raise StacksideError(f"cannot open Butler repo {repo}{what}: {exc}".replace("\n", " ")) from exc
    return butler, created


def with_lock_retry(fn: Callable[[], _T], *, what: str, attempts: int = 30) -> _T:
    """Call FN, retrying on SQLite "database is locked" (other writers at the same site)."""
    delay = 0.05
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            text = f"{exc!r} {getattr(exc, '__cause__', '')!r}".lower()
            if "database is locked" not in text and "database table is locked" not in text:
                raise
            if i == attempts - 1:
                raise StacksideError(f"{what}: SQLite database stayed locked after {attempts} attempts") from exc
            time.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def ensure_chain(butler, chain: str, children: Iterable[str]) -> bool:
    """Create CHAINED collection CHAIN with CHILDREN if missing; True if created."""
    from lsst.daf.butler import CollectionType
    from lsst.daf.butler.registry import MissingCollectionError

    try:
        info = butler.collections.get_info(chain)
    except MissingCollectionError:
        info = None
    if info is not None:
        if info.type != CollectionType.CHAINED:
            raise StacksideError(f"collection {chain!r} exists but is a {info.type.name}, not a CHAINED collection")
        return False

    def create() -> bool:
        registered = butler.collections.register(chain, CollectionType.CHAINED)
        if registered:
            butler.collections.redefine_chain(chain, list(children))
        return registered

    return with_lock_retry(create, what=f"creating chain {chain}")


def prepend_to_chain(butler, chain: str, runs: Iterable[str]) -> list[str]:
    """Prepend RUNS (those not already in it) to the existing CHAINED collection CHAIN.

    Tolerates concurrent callers at the same site: retries on "database is locked". Returns the
    runs actually added.
    """
    from lsst.daf.butler import CollectionType
    from lsst.daf.butler.registry import MissingCollectionError

    runs = list(dict.fromkeys(runs))
    try:
        info = butler.collections.get_info(chain)
    except MissingCollectionError:
        raise StacksideError(
            f"chain {chain!r} does not exist in repo {butler._config.configDir}: "
            f"run `check-inputs --chain {chain}` first"
        ) from None
    if info.type != CollectionType.CHAINED:
        raise StacksideError(f"collection {chain!r} is a {info.type.name}, not a CHAINED collection")

    def do() -> list[str]:
        current = set(butler.collections.get_info(chain).children)
        missing = [r for r in runs if r not in current]
        if missing:
            butler.collections.prepend_chain(chain, missing)
        return missing

    return with_lock_retry(do, what=f"prepending to chain {chain}")


def site_tracts(campaign: CampaignConfig, site: str) -> list[int]:
    """SITE's tracts, sorted; a site the campaign has no tracts for is a bad --site."""
    try:
        return sorted(campaign.site_tracts(site))
    except KeyError as exc:
        raise StacksideError(f"{campaign.file}: {exc.args[0]}") from None


def _dataset_type(butler, campaign: CampaignConfig, name: str):
    """A dataset type of the pipeline spec, with our mocked storage class."""
    from lsst.daf.butler import DatasetType
    from lsst.pipe.base.tests.mocks import MockStorageClass

    from .pipeline import storage_class_for

    spec = campaign.pipeline_spec
    if name not in spec.dataset_types:
        raise StacksideError(f"{spec.file}: dataset_types has no {name!r}: the synthetic sky needs it")
    sc = MockStorageClass.get_or_register_mock(storage_class_for(name)).name
    return DatasetType(
        name,
        spec.dataset_types[name].dimensions,
        sc,
        universe=butler.dimensions,
        isCalibration=spec.dataset_types[name].calibration,
    )


def insert_sky(butler, sky: SyntheticSky) -> dict[str, int]:
    """Insert the records of the whole sky that are missing; returns inserted count per element."""
    inserted: dict[str, int] = {}
    for element, records in sky.dimension_records().items():
        if not records:
            continue
        record_class = butler.dimensions[element].RecordClass
        wanted = [record_class(**r) for r in records]
        existing = {
            tuple(rec.dataId.required_values)
            for rec in butler.query_dimension_records(element, explain=False, limit=None)
        }
        missing = [r for r in wanted if tuple(r.dataId.required_values) not in existing]
        if missing:
            butler.registry.insertDimensionData(element, *missing, skip_existing=True)
        inserted[element] = len(missing)
    return inserted


def _put_missing(butler, dataset_type, data_ids: list[dict[str, Any]], run: str) -> list:
    """Put a mock dataset for each data ID not yet in RUN; returns the refs put."""
    from lsst.daf.butler import DatasetIdGenEnum, DatasetRef
    from lsst.pipe.base.tests.mocks import MockDataset

    butler.registry.registerDatasetType(dataset_type)
    butler.collections.register(run)
    dims = dataset_type.dimensions.required
    have = {
        tuple(ref.dataId[d] for d in dims)
        for ref in butler.query_datasets(dataset_type.name, collections=run, explain=False, limit=None)
    }
    put = []
    for data_id in data_ids:
        if tuple(data_id[d] for d in dims) in have:
            continue
        coord = butler.registry.expandDataId(data_id)
        # Deterministic UUIDs: the same dataset has the same id in every site's repo.
        ref = DatasetRef(dataset_type, coord, run=run, id_generation_mode=DatasetIdGenEnum.DATAID_TYPE_RUN)
        butler.put(
            MockDataset(
                dataset_id=ref.id,
                dataset_type=ref.datasetType.to_simple(),
                data_id=dict(ref.dataId.mapping),
                run=ref.run,
            ),
            ref,
        )
        put.append(ref)
    return put


def certify_missing(butler, refs_with_validity: list[tuple[Any, dict]]) -> int:
    """Certify calibrations into their CALIBRATION collection for the validity range the source
    had ({collection, begin, end}, ISO TAI), unless already certified there; returns how many."""
    import astropy.time
    from lsst.daf.butler import CollectionType, Timespan

    groups: dict[tuple[str, str, str], list] = {}
    for ref, v in refs_with_validity:
        groups.setdefault((v["collection"], v["begin"], v["end"]), []).append(ref)
    done = 0
    for (collection, begin, end), refs in sorted(groups.items()):
        with_lock_retry(
            lambda c=collection: butler.collections.register(c, CollectionType.CALIBRATION),
            what=f"registering calibration collection {collection}",
        )
        names = {r.datasetType.name for r in refs}
        have = {
            a.ref.id for name in names for a in butler.registry.queryDatasetAssociations(name, collections=[collection])
        }
        todo = [r for r in refs if r.id not in have]
        if todo:
            span = Timespan(astropy.time.Time(begin, scale="tai"), astropy.time.Time(end, scale="tai"))
            with_lock_retry(
                lambda c=collection, t=todo, sp=span: butler.registry.certify(c, t, sp),
                what=f"certifying {len(todo)} calibrations in {collection}",
            )
            done += len(todo)
    return done


def _seed_calibrations(butler, campaign: CampaignConfig, sky: SyntheticSky, name: str, collection: str) -> int:
    """One calibration per detector per day, each in its day's RUN, certified into COLLECTION."""
    dataset_type = _dataset_type(butler, campaign, name)
    detectors = [{"instrument": sky.instrument, "detector": d} for d in sky.detectors]
    certified = 0
    for span in sky.calib_validity_ranges():
        run = f"{collection}/{name}/{span.begin.isot[:10].replace('-', '')}"
        _put_missing(butler, dataset_type, detectors, run)
        validity = {"collection": collection, "begin": span.begin.tai.isot, "end": span.end.tai.isot}
        refs = butler.query_datasets(name, collections=run, explain=False, limit=None)
        certified += certify_missing(butler, [(ref, validity) for ref in refs])
    return certified


def _seed_shards(butler, campaign: CampaignConfig, sky: SyntheticSky, name: str, run: str, tracts: list[int]) -> int:
    """Reference catalog shards (sky pixels) overlapping TRACTS."""
    dataset_type = _dataset_type(butler, campaign, name)
    [skypix] = [d for d in dataset_type.dimensions.required if d in butler.dimensions.skypix_dimensions.names]
    pixelization = butler.dimensions.skypix_dimensions[skypix].pixelization
    ids = [{skypix: i} for i in sky.shards_overlapping(tracts, pixelization)]
    return len(_put_missing(butler, dataset_type, ids, run))


def seed_repo(
    campaign: CampaignConfig, site: str, repo: Path, *, tracts: list[int] | None = None, data: bool = True
) -> dict[str, Any]:
    """Create REPO if missing and insert the whole sky; with DATA, put mock raws for SITE's tracts
    (or TRACTS) and the other inputs the campaign places (calibrations for every day of the sky,
    reference catalog shards overlapping the tracts)."""
    tracts = sorted(tracts) if tracts is not None else site_tracts(campaign, site)
    sky = SyntheticSky(campaign)
    butler, created = open_butler(repo, create=True, what=f" (site {site})")
    run = campaign.data.input_collections[0]
    put: dict[str, int] = {}
    with butler:
        inserted = insert_sky(butler, sky)
        if data:
            put[RAW] = len(_put_missing(butler, _dataset_type(butler, campaign, RAW), sky.raw_data_ids(tracts), run))
            place = campaign.place_hop()
            for name, sel in place.inputs.items() if place else []:
                if sel.select == "valid_for_visits":
                    put[name] = _seed_calibrations(butler, campaign, sky, name, sel.collection)
                elif sel.select == "overlaps_tracts":
                    put[name] = _seed_shards(butler, campaign, sky, name, sel.collection, tracts)
        try:
            total = len(butler.query_datasets(RAW, collections=run, explain=False, limit=None))
        except Exception:  # noqa: BLE001 - no raw type or run yet (an empty site repo)
            total = 0
    changed = created or any(put.values()) or any(inserted.values())
    return {
        "repo": str(repo),
        "site": site,
        "created": created,
        "changed": changed,
        "message": "seeded" if changed else "nothing to do: repo already seeded",
        "dimension_records_inserted": inserted,
        "raws": {"put": put.get(RAW, 0), "total": total, "run": run, "tracts": tracts if data else []},
        "inputs_put": put,
    }


def check_inputs(
    campaign: CampaignConfig, site: str, repo: Path, tracts: list[int], chain: str, overlap_chain: str = ""
) -> dict[str, Any]:
    """Count the raws of TRACTS in the input collections; once all are there, make the site's
    CHAIN over them (and, for a site with overlap tracts, OVERLAP_CHAIN over that chain)."""
    butler, _ = open_butler(repo, what=f" (site {site})")
    with butler:
        sky = SyntheticSky(campaign)
        expected = sky.expected_raws_per_tract(tracts)
        found: Counter[int] = Counter()
        missing: list[str] = []
        have: set[tuple[int, int]] = set()
        try:
            refs = butler.query_datasets(RAW, collections=campaign.data.input_collections, explain=False, limit=None)
        except Exception as exc:  # noqa: BLE001 - missing dataset type or collection: nothing found
            refs = []
            missing.append(f"cannot query raws in {campaign.data.input_collections}: {exc}".replace("\n", " "))
        for ref in refs:
            have.add((ref.dataId["visit"], ref.dataId["detector"]))
        for data_id in sky.raw_data_ids(tracts):
            key = (data_id["visit"], data_id["detector"])
            if key in have:
                found[visit_tract(data_id["visit"])] += 1
            else:
                missing.append(f"raw visit={key[0]} detector={key[1]} (tract {visit_tract(key[0])})")
        from lsst.daf.butler.registry import MissingCollectionError

        missing_colls = []
        for coll in campaign.data.input_collections:
            try:
                butler.collections.get_info(coll)
            except MissingCollectionError:
                missing_colls.append(coll)
        if missing_colls:
            missing.append(f"input collections missing: {missing_colls}")
            created = False
        else:
            created = ensure_chain(butler, chain, campaign.data.input_collections)
            if overlap_chain:
                created = ensure_chain(butler, overlap_chain, [chain]) or created
    limit = 100
    shown = missing[:limit] + ([f"... and {len(missing) - limit} more"] if len(missing) > limit else [])
    return {
        "ok": not missing,
        "missing_count": len(missing),
        "site": site,
        "repo": str(repo),
        "raws_per_tract": {str(t): [found.get(t, 0), expected[t]] for t in tracts},
        "missing": shown,
        "chain": chain,
        "chain_created": created,
    }


def require_chain(butler, chain: str, repo: Path, site: str, remedy: str = "") -> None:
    """Refuse to go on at a site whose input chain was never made (its check_inputs has not run,
    or REMEDY says what else to look at)."""
    from lsst.daf.butler.registry import MissingCollectionError

    try:
        butler.collections.get_info(chain)
    except MissingCollectionError:
        raise StacksideError(
            f"input chain {chain!r} does not exist in repo {repo} (site {site}): "
            + (remedy or f"run check_inputs for this site first (`check-inputs --chain {chain}`)")
        ) from None


def split_names(value: str | None) -> list[str]:
    """A comma-separated list on a command line (collections, dataset types) as its names."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def matching_runs(butler, patterns: list[str]) -> list[str]:
    """RUN collections whose names match any of the glob PATTERNS; a matching CHAINED collection
    stands for the RUNs it holds (flattened)."""
    from lsst.daf.butler import CollectionType

    runs: set[str] = set()
    for info in butler.collections.query_info("*"):
        if not any(fnmatch.fnmatchcase(info.name, p) for p in patterns):
            continue
        if info.type == CollectionType.RUN:
            runs.add(info.name)
        elif info.type == CollectionType.CHAINED:
            runs.update(butler.collections.query(info.name, flatten_chains=True, collection_types={CollectionType.RUN}))
    return sorted(runs)


def count_datasets(repo: Path, collections: str, dataset_types: str | None) -> dict[str, int]:
    butler, _ = open_butler(repo, writeable=False)
    with butler:
        runs = matching_runs(butler, split_names(collections))
        types = split_names(dataset_types)
        counts: Counter[str] = Counter()
        if runs:
            if not types:
                types = sorted({dt.name for dt in butler.registry.queryDatasetTypes("*") if not dt.isComponent()})
            for name in types:
                try:
                    refs = butler.query_datasets(name, collections=runs, find_first=False, explain=False, limit=None)
                except Exception:  # noqa: BLE001 - type not registered here: zero
                    refs = []
                if refs:
                    counts[name] = len(refs)
        for name in split_names(dataset_types):
            counts.setdefault(name, 0)
    return dict(sorted(counts.items()))
