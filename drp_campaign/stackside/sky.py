"""The deterministic synthetic sky of the embedded default: skymap, tracts, patches, visits, detectors.

Tracts are disjoint boxes in a row along the equator (tract t spans RA [10t+1, 10t+9] deg,
Dec [-4, 4] deg; 2 deg gaps between neighbours, far more than an htm7 pixel, so no spatial join
can relate a tract to a neighbour's visits). Patches split a tract in Dec. Every visit lies
entirely inside one tract (RA inset >= 0.5 deg from the tract edges, Dec [-3, 3]); its detectors
split it in RA, so every detector overlaps every patch of its tract. Bands cycle over visits.

Every site repo gets the same records for the whole sky, so data IDs agree everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ..config import CampaignConfig
from ._errors import StacksideError

TRACT_PITCH_DEG = 10.0
TRACT_HALF_WIDTH_DEG = 4.0
DEC_HALF_HEIGHT_DEG = 4.0
VISIT_HALF_WIDTH_DEG = 3.0
VISIT_HALF_HEIGHT_DEG = 3.0
DAY_OBS = 20260101
FIRST_NIGHT = "2026-01-02T00:00:00"  # TAI; visit v starts v minutes later
VISIT_SECONDS = 30.0


def tract_center_ra(tract: int) -> float:
    return TRACT_PITCH_DEG * tract + TRACT_PITCH_DEG / 2


def visit_id(tract: int, index: int) -> int:
    """Visit ids encode their tract: (tract + 1) * 1000 + index."""
    return (tract + 1) * 1000 + index


def visit_tract(visit: int) -> int:
    return visit // 1000 - 1


def campaign_tracts(campaign: CampaignConfig) -> list[int]:
    """Every tract the campaign names, at any site."""
    return sorted({t for ts in campaign.tracts.values() for t in ts})


@dataclass(frozen=True)
class Visit:
    id: int
    tract: int
    index: int
    band: str
    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float


class SyntheticSky:
    def __init__(self, campaign: CampaignConfig):
        if campaign.data.synthetic is None:
            raise StacksideError(
                f"{campaign.file}: data.synthetic is missing; the embedded sites' synthetic sky is made from it: add it"
            )
        self.campaign = campaign
        self.instrument = campaign.data.instrument
        self.skymap = campaign.data.skymap
        self.syn = campaign.data.synthetic
        # Tract ids 0..N-1 cover every tract the campaign names (it names at least one).
        self.tracts = list(range(max(campaign_tracts(campaign)) + 1))

    # ---- geometry -------------------------------------------------------------------------
    def tract_box(self, tract: int) -> tuple[float, float, float, float]:
        c = tract_center_ra(tract)
        return (c - TRACT_HALF_WIDTH_DEG, c + TRACT_HALF_WIDTH_DEG, -DEC_HALF_HEIGHT_DEG, DEC_HALF_HEIGHT_DEG)

    def patch_box(self, tract: int, patch: int) -> tuple[float, float, float, float]:
        ra0, ra1, dec0, dec1 = self.tract_box(tract)
        step = (dec1 - dec0) / self.syn.patches_per_tract
        return (ra0, ra1, dec0 + patch * step, dec0 + (patch + 1) * step)

    def visits(self, tract: int) -> list[Visit]:
        out = []
        n = self.syn.visits_per_tract
        c = tract_center_ra(tract)
        for i in range(n):
            # A small deterministic dither, always keeping the visit inside its tract.
            dither = 0.4 * ((i % 3) - 1)
            out.append(
                Visit(
                    id=visit_id(tract, i),
                    tract=tract,
                    index=i,
                    band=self.syn.bands[i % len(self.syn.bands)],
                    ra_min=c + dither - VISIT_HALF_WIDTH_DEG,
                    ra_max=c + dither + VISIT_HALF_WIDTH_DEG,
                    dec_min=-VISIT_HALF_HEIGHT_DEG,
                    dec_max=VISIT_HALF_HEIGHT_DEG,
                )
            )
        return out

    def detector_box(self, visit: Visit, detector: int) -> tuple[float, float, float, float]:
        step = (visit.ra_max - visit.ra_min) / self.syn.detectors_per_visit
        return (visit.ra_min + detector * step, visit.ra_min + (detector + 1) * step, visit.dec_min, visit.dec_max)

    @property
    def detectors(self) -> list[int]:
        return list(range(self.syn.detectors_per_visit))

    def physical_filter(self, band: str) -> str:
        return f"{self.instrument}-{band}"

    def raw_data_ids(self, tracts: list[int]) -> list[dict[str, Any]]:
        """Data IDs of the raws the sky expects for these tracts."""
        return [
            {"instrument": self.instrument, "visit": v.id, "detector": d}
            for t in tracts
            for v in self.visits(t)
            for d in self.detectors
        ]

    def expected_raws_per_tract(self, tracts: list[int]) -> dict[int, int]:
        return {t: self.syn.visits_per_tract * self.syn.detectors_per_visit for t in tracts}

    # ---- inputs beyond raws: calibrations by date, reference catalogs by sky pixel -------------
    def visit_timespan(self, visit: int):
        import astropy.time
        from lsst.daf.butler import Timespan

        begin = astropy.time.Time(FIRST_NIGHT, scale="tai") + astropy.time.TimeDelta(visit * 60.0, format="sec")
        return Timespan(begin, begin + astropy.time.TimeDelta(VISIT_SECONDS, format="sec"))

    def calib_validity_ranges(self):
        """One validity range per (TAI) day the campaign's visits span: a daily calibration."""
        import astropy.time
        from lsst.daf.butler import Timespan

        spans = [self.visit_timespan(v.id) for t in self.tracts for v in self.visits(t)]
        first = astropy.time.Time(min(s.begin for s in spans).isot[:10] + "T00:00:00", scale="tai")
        last = max(s.end for s in spans)
        day = astropy.time.TimeDelta(86400.0, format="sec")
        ranges = []
        while first < last:
            ranges.append(Timespan(first, first + day))
            first = first + day
        return ranges

    def shards_overlapping(self, tracts: list[int], pixelization) -> list[int]:
        """Sky-pixel ids (of PIXELIZATION, e.g. the universe's htm7) whose pixels may overlap the
        tracts (sphgeom's envelope: a superset, as reference catalog loaders use)."""
        ids: set[int] = set()
        for t in tracts:
            for begin, end in pixelization.envelope(_box(*self.tract_box(t))):
                ids.update(range(begin, end))
        return sorted(ids)

    # ---- butler records -------------------------------------------------------------------
    def dimension_records(self) -> dict[str, list[dict[str, Any]]]:
        """Records per dimension element, in insertion order, as plain dicts."""
        box = _box
        inst = self.instrument
        n_visits = self.syn.visits_per_tract
        records: dict[str, list[dict[str, Any]]] = {}
        records["instrument"] = [
            {
                "name": inst,
                "visit_max": (len(self.tracts) + 1) * 1000 + n_visits + 1,
                "visit_system": 0,
                "exposure_max": (len(self.tracts) + 1) * 1000 + n_visits + 1,
                "detector_max": self.syn.detectors_per_visit,
                "class_name": None,
            }
        ]
        records["band"] = []  # a view of physical_filter in this universe: not inserted directly
        records["physical_filter"] = [
            {"instrument": inst, "name": self.physical_filter(b), "band": b} for b in self.syn.bands
        ]
        records["detector"] = [
            {"instrument": inst, "id": d, "full_name": f"D{d:02d}", "purpose": "SCIENCE"} for d in self.detectors
        ]
        records["day_obs"] = [{"instrument": inst, "id": DAY_OBS}]
        visits = []
        vdrs = []
        for t in self.tracts:
            for v in self.visits(t):
                visits.append(
                    {
                        "instrument": inst,
                        "id": v.id,
                        "name": f"MC_{v.id:06d}",
                        "physical_filter": self.physical_filter(v.band),
                        "day_obs": DAY_OBS,
                        "seq_num": v.id,
                        "exposure_time": VISIT_SECONDS,
                        "target_name": f"tract{t}",
                        "observation_reason": "science",
                        "science_program": "drp_mock",
                        "region": box(v.ra_min, v.ra_max, v.dec_min, v.dec_max),
                        "timespan": self.visit_timespan(v.id),
                    }
                )
                for d in self.detectors:
                    vdrs.append(
                        {"instrument": inst, "visit": v.id, "detector": d, "region": box(*self.detector_box(v, d))}
                    )
        records["visit"] = visits
        records["visit_detector_region"] = vdrs
        # Hash the text the sky's first version hashed (a dataclass repr): repos seeded before agree.
        syn = "Synthetic(" + ", ".join(f"{k}={v!r}" for k, v in self.syn.model_dump().items()) + ")"
        records["skymap"] = [
            {
                "name": self.skymap,
                "hash": hashlib.sha1(f"{self.skymap}:{len(self.tracts)}:{syn}".encode()).digest(),
                "tract_max": len(self.tracts),
                "patch_nx_max": 1,
                "patch_ny_max": self.syn.patches_per_tract,
            }
        ]
        records["tract"] = [{"skymap": self.skymap, "id": t, "region": box(*self.tract_box(t))} for t in self.tracts]
        records["patch"] = [
            {
                "skymap": self.skymap,
                "tract": t,
                "id": p,
                "cell_x": 0,
                "cell_y": p,
                "region": box(*self.patch_box(t, p)),
            }
            for t in self.tracts
            for p in range(self.syn.patches_per_tract)
        ]
        del records["band"]
        return records


def _box(ra0: float, ra1: float, dec0: float, dec1: float):
    from lsst.sphgeom import ConvexPolygon, LonLat, UnitVector3d

    corners = [(ra0, dec0), (ra1, dec0), (ra1, dec1), (ra0, dec1)]
    return ConvexPolygon([UnitVector3d(LonLat.fromDegrees(ra, dec)) for ra, dec in corners])
