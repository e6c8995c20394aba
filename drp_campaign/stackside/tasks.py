"""Three small real PipelineTasks of ours, for the site-independence QA (issue #14): the datasets
the QA compares between two sites hold numbers, not mock provenance.

Every other task of the DRP-shaped pipeline stays lsst.pipe.base's mock. These subclass it (and its
config), so their connections are configured from the pipeline spec exactly as the mocks' are
(stackside/pipeline.py), and a drill's `fail_condition` fails them the same way; only what they
write differs:

- ConsolidateVisitTableTask (per visit): visit_summary, one row per detector of the visit;
- MakeObjectTableTask (per tract): object_table, one row per object per band;
- ComputeQaMetricsTask (per tract): qa_metrics, a dict of numbers from the object table.

The numbers are a deterministic function of the quantum's inputs' data IDs, the synthetic sky's
geometry (the Butler's dimension records: the same at every site, see sky.py) and the task's
config; never of RUN names, dataset UUIDs, the clock, the host or the site. So two sites that run
the same configuration write bit-identical values, and a config change (e.g. a drill's
`makeObjectTable:flux_calibration_scale=1.01`) shows up as a measurable difference.

The model, kept tiny (tens of objects per tract):
- a "true sky" per tract: TRUE_OBJECTS_PER_TRACT point sources at positions drawn from a seed of
  the tract id, inside the area every visit of the tract covers, with a true magnitude per band
  (a base magnitude and a color per band, the band's seed being a CRC of its name: stable across
  processes, unlike Python's hash());
- per visit: zero point, PSF width and sky level from a seed of the visit id (plus small
  per-detector terms); a detector's sources are the true objects inside its region;
- per object and band: the measured PSF flux is the true flux x `flux_calibration_scale` x
  (1 + noise), the noise drawn from a seed of (tract, object, band) and shrinking as 1/sqrt of the
  number of visits of that band covering the object (counted from the difference_image inputs);
  positions carry astrometric noise of the same kind;
- the QA metrics compare the table with the true sky (the "reference catalog").
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
from lsst.pex.config import Field
from lsst.pipe.base.tests.mocks import DynamicTestPipelineTask, DynamicTestPipelineTaskConfig
from lsst.utils.iteration import ensure_iterable

from .sky import DEC_HALF_HEIGHT_DEG, TRACT_HALF_WIDTH_DEG, tract_center_ra, visit_tract

_LOG = logging.getLogger(__name__)

TRUE_OBJECTS_PER_TRACT = 40
# Inside every visit of a tract (visits span RA centre +-3 deg with a +-0.4 deg dither, Dec +-3 deg):
# every object is seen by one detector of every visit, unless that visit's image is missing.
TRUE_SKY_RA_HALF_WIDTH_DEG = 2.5
TRUE_SKY_DEC_HALF_HEIGHT_DEG = 2.8
assert TRUE_SKY_RA_HALF_WIDTH_DEG < TRACT_HALF_WIDTH_DEG and TRUE_SKY_DEC_HALF_HEIGHT_DEG < DEC_HALF_HEIGHT_DEG

NOMINAL_ZERO_POINT = 31.4  # AB mag of 1 nJy, as the stack's calibrated fluxes are in nJy
SINGLE_VISIT_FRACTIONAL_ERROR = 0.02  # flux noise of one visit, relative
SINGLE_VISIT_FLOOR_NJY = 50.0  # flux noise of one visit, absolute (sky)
SINGLE_VISIT_ASTROMETRIC_ERROR_MAS = 20.0
MAS_PER_DEG = 3.6e6

# Seeds: a tag per kind of draw keeps them independent of one another.
_SKY, _COLOR, _VISIT, _DETECTOR, _MEASURE = 1, 2, 3, 4, 5


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _band_key(band: str) -> int:
    return zlib.crc32(band.encode())


# --- the model -----------------------------------------------------------------------------------


def true_sky(tract: int) -> dict[str, np.ndarray]:
    """The tract's true objects: ids, positions (deg) and base magnitudes."""
    rng = _rng(_SKY, tract)
    n = TRUE_OBJECTS_PER_TRACT
    ra0 = tract_center_ra(tract)
    return {
        "object_id": np.arange(n, dtype=np.int64) + tract * 100_000,
        "ra": ra0 + rng.uniform(-TRUE_SKY_RA_HALF_WIDTH_DEG, TRUE_SKY_RA_HALF_WIDTH_DEG, n),
        "dec": rng.uniform(-TRUE_SKY_DEC_HALF_HEIGHT_DEG, TRUE_SKY_DEC_HALF_HEIGHT_DEG, n),
        "mag": rng.uniform(18.0, 24.0, n),
    }


def true_flux(tract: int, band: str) -> np.ndarray:
    """True PSF flux (nJy) of each of the tract's objects in BAND."""
    color = _rng(_COLOR, tract, _band_key(band)).normal(0.0, 0.3, TRUE_OBJECTS_PER_TRACT)
    return 10.0 ** ((NOMINAL_ZERO_POINT - (true_sky(tract)["mag"] + color)) / 2.5)


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> list:
    from lsst.sphgeom import LonLat, UnitVector3d

    return [UnitVector3d(LonLat.fromDegrees(float(r), float(d))) for r, d in zip(ra, dec, strict=True)]


def _region(data_id, element: str):
    """The sky region of ELEMENT (patch, visit_detector_region, ...) of an expanded data ID."""
    records = data_id.records if data_id.hasRecords() else {}
    record = records.get(element) if records else None
    if record is None or getattr(record, "region", None) is None:
        raise RuntimeError(
            f"data ID {data_id} carries no {element} region: the quantum graph must hold expanded data IDs"
        )
    return record.region


def _refs(refs_by_connection: Iterable[tuple[str, Any]], *dimensions: str) -> list:
    """Every input ref (of any connection) whose data ID has all of DIMENSIONS."""
    out = []
    for _, refs in refs_by_connection:
        for ref in ensure_iterable(refs):
            if all(d in ref.dataId.dimensions.names for d in dimensions):
                out.append(ref)
    return out


def _robust_sigma(values: np.ndarray) -> float:
    if not len(values):
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


# --- the tasks -----------------------------------------------------------------------------------


class _RealOutputTask(DynamicTestPipelineTask):
    """The mock's connections and failure drills; a real output instead of MockDatasets."""

    def runQuantum(self, butlerQC, inputRefs, outputRefs) -> None:
        self._mock_behaviour(butlerQC)
        [(name, ref)] = [(n, r) for n, refs in outputRefs for r in ensure_iterable(refs)]
        _LOG.info("%s on %s: writing %s", self.getName(), butlerQC.quantum.dataId, name)
        butlerQC.put(self.make(butlerQC, inputRefs), ref)

    def make(self, butlerQC, inputRefs) -> Any:
        raise NotImplementedError

    def _mock_behaviour(self, butlerQC) -> None:
        """What the mock does before its outputs (pipe_base BaseTestPipelineTask.runQuantum): sleep,
        then raise for data IDs matching `fail_condition` (a drill)."""
        quantum = butlerQC.quantum
        if self.config.sleep:
            time.sleep(self.config.sleep)
        if self.data_id_match is not None and self.data_id_match.match(quantum.dataId):
            if self.memory_required is None or butlerQC.resources.max_mem < self.memory_required:
                self._fail(quantum)


class ConsolidateVisitTableConfig(DynamicTestPipelineTaskConfig):
    zero_point_offset = Field[float](
        dtype=float, default=0.0, doc="Added to every detector's photometric zero point (mag)."
    )


class ConsolidateVisitTableTask(_RealOutputTask):
    """visit_summary: one row per detector of the visit (those whose images are inputs)."""

    ConfigClass: ClassVar = ConsolidateVisitTableConfig
    _DefaultName = "consolidateVisitTable"
    COLUMNS = ("visit", "detector", "band", "zero_point", "psf_sigma", "sky_background", "n_sources")

    def make(self, butlerQC, inputRefs):
        from astropy.table import Table

        data_id = butlerQC.quantum.dataId
        visit, band = int(data_id["visit"]), str(data_id["band"])
        sky = true_sky(visit_tract(visit))
        points = _unit_vectors(sky["ra"], sky["dec"])
        per_visit = _rng(_VISIT, visit)
        zero_point = NOMINAL_ZERO_POINT + per_visit.normal(0.0, 0.05) + self.config.zero_point_offset
        seeing = per_visit.uniform(1.4, 2.4)  # PSF sigma, pixels
        sky_level = per_visit.uniform(600.0, 1400.0)  # counts per pixel
        rows = []
        for ref in sorted(_refs(inputRefs, "visit", "detector"), key=lambda r: int(r.dataId["detector"])):
            detector = int(ref.dataId["detector"])
            per_detector = _rng(_DETECTOR, visit, detector)
            region = _region(ref.dataId, "visit_detector_region")
            rows.append(
                (
                    visit,
                    detector,
                    band,
                    zero_point + per_detector.normal(0.0, 0.005),
                    seeing * (1.0 + per_detector.normal(0.0, 0.02)),
                    sky_level * (1.0 + per_detector.normal(0.0, 0.01)),
                    sum(1 for p in points if region.contains(p)),
                )
            )
        table = Table(
            rows=rows or None,
            names=self.COLUMNS,
            dtype=(np.int64, np.int64, str, np.float64, np.float64, np.float64, np.int64),
        )
        table["zero_point"].unit = "mag"
        table["psf_sigma"].unit = "pix"
        return table


class MakeObjectTableConfig(DynamicTestPipelineTaskConfig):
    flux_calibration_scale = Field[float](
        dtype=float, default=1.0, doc="Photometric calibration factor applied to every measured flux."
    )


class MakeObjectTableTask(_RealOutputTask):
    """object_table: one row per true object per band of the tract's coadds, measured on the coadd
    of the patch holding it, with the number of that band's visits covering it."""

    ConfigClass: ClassVar = MakeObjectTableConfig
    _DefaultName = "makeObjectTable"
    COLUMNS = ("object_id", "patch", "band", "ra", "dec", "psf_flux", "psf_flux_err", "n_visits")

    def make(self, butlerQC, inputRefs):
        from astropy.table import Table

        tract = int(butlerQC.quantum.dataId["tract"])
        sky = true_sky(tract)
        points = _unit_vectors(sky["ra"], sky["dec"])
        coadds = _refs(inputRefs, "patch", "band")
        patches = {int(r.dataId["patch"]): _region(r.dataId, "patch") for r in coadds}
        bands = sorted({str(r.dataId["band"]) for r in coadds})
        coadded = {(int(r.dataId["patch"]), str(r.dataId["band"])) for r in coadds}
        images = [
            (str(r.dataId["band"]), _region(r.dataId, "visit_detector_region"), int(r.dataId["visit"]))
            for r in _refs(inputRefs, "visit", "detector")
        ]
        cols: dict[str, list] = {c: [] for c in self.COLUMNS}
        cos_dec = np.cos(np.radians(sky["dec"]))
        for band in bands:
            flux = true_flux(tract, band)
            for i, point in enumerate(points):
                patch = next((p for p, region in sorted(patches.items()) if region.contains(point)), None)
                n_visits = len({visit for b, region, visit in images if b == band and region.contains(point)})
                if patch is None or (patch, band) not in coadded or n_visits == 0:
                    continue  # no coadd of this band holds the object: nothing measured
                noise = _rng(_MEASURE, tract, int(sky["object_id"][i]), _band_key(band)).normal(0.0, 1.0, 3)
                single_err = SINGLE_VISIT_FRACTIONAL_ERROR * flux[i] + SINGLE_VISIT_FLOOR_NJY
                err = single_err / math.sqrt(n_visits) * self.config.flux_calibration_scale
                astrometric = SINGLE_VISIT_ASTROMETRIC_ERROR_MAS / math.sqrt(n_visits) / MAS_PER_DEG
                cols["object_id"].append(int(sky["object_id"][i]))
                cols["patch"].append(patch)
                cols["band"].append(band)
                cols["ra"].append(float(sky["ra"][i] + noise[1] * astrometric / cos_dec[i]))
                cols["dec"].append(float(sky["dec"][i] + noise[2] * astrometric))
                cols["psf_flux"].append(
                    float(flux[i] * (1.0 + noise[0] * single_err / flux[i] / math.sqrt(n_visits)))
                    * self.config.flux_calibration_scale
                )
                cols["psf_flux_err"].append(err)
                cols["n_visits"].append(n_visits)
        table = Table(
            [cols[c] for c in self.COLUMNS],
            names=self.COLUMNS,
            dtype=(np.int64, np.int64, str, np.float64, np.float64, np.float64, np.float64, np.int64),
        )
        for name, unit in (("ra", "deg"), ("dec", "deg"), ("psf_flux", "nJy"), ("psf_flux_err", "nJy")):
            table[name].unit = unit
        return table


class ComputeQaMetricsConfig(DynamicTestPipelineTaskConfig):
    min_snr = Field[float](
        dtype=float, default=5.0, doc="Only rows with psf_flux / psf_flux_err above this enter the scatters."
    )


class ComputeQaMetricsTask(_RealOutputTask):
    """qa_metrics: numbers of the tract's object table, and its scatter about the true sky (the
    reference catalog): astrometric (mas) and photometric (mmag, robust)."""

    ConfigClass: ClassVar = ComputeQaMetricsConfig
    _DefaultName = "computeQaMetrics"
    METRICS = ("n_objects", "median_psf_flux", "median_snr", "astrometric_scatter_mas", "photometric_scatter_mmag")

    def make(self, butlerQC, inputRefs):
        tract = int(butlerQC.quantum.dataId["tract"])
        from astropy.table import vstack

        [(_, refs)] = list(inputRefs)
        table = vstack([butlerQC.get(ref) for ref in ensure_iterable(refs)])
        sky = true_sky(tract)
        index = {int(o): i for i, o in enumerate(sky["object_id"])}
        rows = [index[int(o)] for o in table["object_id"]]
        flux = np.asarray(table["psf_flux"], dtype=np.float64)
        snr = flux / np.asarray(table["psf_flux_err"], dtype=np.float64)
        good = snr > self.config.min_snr
        truth = np.array([true_flux(tract, b)[i] for b, i in zip(table["band"], rows, strict=True)])
        dra = (np.asarray(table["ra"]) - sky["ra"][rows]) * np.cos(np.radians(sky["dec"][rows]))
        ddec = np.asarray(table["dec"]) - sky["dec"][rows]
        offsets_mas = np.hypot(dra, ddec)[good] * MAS_PER_DEG
        dmag_mmag = -2.5 * np.log10(flux[good] / truth[good]) * 1000.0 if good.any() else np.array([])
        return {
            "n_objects": len(set(int(o) for o in table["object_id"])),
            "median_psf_flux": float(np.median(flux)) if len(flux) else float("nan"),
            "median_snr": float(np.median(snr)) if len(snr) else float("nan"),
            "astrometric_scatter_mas": float(np.sqrt(np.mean(offsets_mas**2))) if len(offsets_mas) else float("nan"),
            "photometric_scatter_mmag": _robust_sigma(dmag_mmag),
        }
