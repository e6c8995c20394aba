"""A rings sky map's geometry, computed with numpy: the layout of lsst.skymap's RingsSkyMap
(version 1 numbering), without the LSST stack.

With R rings, declination is cut into bands of height h = pi / (R + 1): two polar caps of h/2 and
R rings of h. Ring i (0 = southernmost) spans dec [h (i + 1/2) - pi/2, h (i + 3/2) - pi/2], its
centre at dec h (i + 1) - pi/2. It holds n_i = floor(2 pi cos(d_i) / h) + 1 tracts, d_i being
min(|start|, |stop|) of the ring (its edge nearer the equator, so no tract is wider than h there).
Tract j of ring i is centred at RA raStart + 2 pi j / n_i and spans RA +- pi / n_i.
Tract ids: 0 is the south cap, then ring 0 from raStart eastwards, ring 1, ..., the north cap last.

Areas (steradians): a ring tract (2 pi / n_i)(sin stop - sin start); a cap 2 pi (1 - cos(h / 2)).
They tile the sphere: the areas sum to 4 pi.

Neighbours share an edge of non-zero length: j and j +- 1 in the same ring (a meridian edge of
length h); tracts of adjacent rings whose RA ranges overlap (a parallel edge, the overlap in RA
times cos of the shared declination); a cap and every tract of the ring next to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TWO_PI = 2 * math.pi


@dataclass(frozen=True)
class Edges:
    """Shared edges between neighbouring tracts, as positions into the SkyMap's arrays (a < b)."""

    a: np.ndarray
    b: np.ndarray
    length: np.ndarray  # arc length of the shared edge, radians
    segment: np.ndarray  # (n, 4): ra0, dec0, ra1, dec1 of the shared edge, radians (for drawing)


@dataclass(frozen=True)
class SkyMap:
    """Tracts of a rings sky map (all of it, or a footprint of it): one array entry per tract."""

    rings: int
    ids: np.ndarray  # tract id
    ring: np.ndarray  # -1: the south cap; `rings`: the north cap
    ra: np.ndarray  # centre, radians in [0, 2 pi)
    dec: np.ndarray
    ra_min: np.ndarray  # the tract's box; ra_min may be < 0 and ra_max > 2 pi (not wrapped)
    ra_max: np.ndarray
    dec_min: np.ndarray
    dec_max: np.ndarray
    area: np.ndarray  # steradians
    edges: Edges

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray) -> SkyMap:
        """The tracts where KEEP is true, with the edges between them."""
        position = np.full(len(self), -1)
        position[keep] = np.arange(int(np.count_nonzero(keep)))
        both = keep[self.edges.a] & keep[self.edges.b]
        e = self.edges
        edges = Edges(position[e.a[both]], position[e.b[both]], e.length[both], e.segment[both])
        fields = ("ids", "ring", "ra", "dec", "ra_min", "ra_max", "dec_min", "dec_max", "area")
        return SkyMap(self.rings, **{name: getattr(self, name)[keep] for name in fields}, edges=edges)

    def neighbours(self) -> list[list[int]]:
        """Each tract's neighbours (positions)."""
        out: list[list[int]] = [[] for _ in range(len(self))]
        for a, b in zip(self.edges.a.tolist(), self.edges.b.tolist()):
            out[a].append(b)
            out[b].append(a)
        return out


def ring_counts(rings: int) -> tuple[float, np.ndarray]:
    """The ring height h and the number of tracts in each ring."""
    h = math.pi / (rings + 1)
    start = h * (np.arange(rings) + 0.5) - math.pi / 2
    nearest_equator = np.minimum(np.abs(start), np.abs(start + h))
    return h, (TWO_PI * np.cos(nearest_equator) / h).astype(int) + 1


def rings_sky_map(rings: int, ra_start_deg: float = 0.0) -> SkyMap:
    """The whole sky map of RINGS rings (lsst_cells_v1, the LSST DRP's, has 120: 18,938 tracts)."""
    h, counts = ring_counts(rings)
    ra0 = math.radians(ra_start_deg) % TWO_PI
    ring = np.concatenate([[-1], np.repeat(np.arange(rings), counts), [rings]])
    j = np.concatenate([[0], np.concatenate([np.arange(n) for n in counts]), [0]])
    n = np.concatenate([[1], np.repeat(counts, counts), [1]])
    width = TWO_PI / n
    is_cap = (ring < 0) | (ring == rings)
    ra = np.where(is_cap, 0.0, (ra0 + width * j) % TWO_PI)
    dec = np.where(ring < 0, -math.pi / 2, np.where(ring == rings, math.pi / 2, h * (ring + 1) - math.pi / 2))
    dec_min = np.where(ring < 0, -math.pi / 2, h * (ring + 0.5) - math.pi / 2)
    dec_max = np.where(ring == rings, math.pi / 2, h * (ring + 1.5) - math.pi / 2)
    ra_min = np.where(is_cap, 0.0, ra - width / 2)
    ra_max = np.where(is_cap, TWO_PI, ra + width / 2)
    area = width * (np.sin(dec_max) - np.sin(dec_min))
    first = np.concatenate([[1], 1 + np.cumsum(counts)[:-1]])  # id of each ring's tract 0
    edges = _edges(h, counts, first, ra0, len(ring))
    ids = np.arange(len(ring))
    return SkyMap(rings, ids, ring, ra, dec, ra_min, ra_max, dec_min, dec_max, area, edges)


def _edges(h: float, counts: np.ndarray, first: np.ndarray, ra0: float, total: int) -> Edges:
    parts: list[tuple[np.ndarray, ...]] = []
    for i, n in enumerate(counts.tolist()):  # meridian edges within a ring
        if n < 2:
            continue
        j = np.arange(n if n > 2 else 1)  # two tracts in a ring share both meridians: one edge, twice as long
        start = h * (i + 0.5) - math.pi / 2
        boundary = ra0 + TWO_PI * (j + 0.5) / n
        length = np.full(len(j), h * (2 if n == 2 else 1))
        seg = np.stack([boundary, np.full(len(j), start), boundary, np.full(len(j), start + h)], axis=1)
        parts.append((first[i] + j, first[i] + (j + 1) % n, length, seg))
    rings = len(counts)
    for i in range(-1, rings):  # parallel edges between ring i and i + 1 (caps are rings -1 and R)
        below = _ring_intervals(i, counts, first, ra0, total)
        above = _ring_intervals(i + 1, counts, first, ra0, total)
        boundary_dec = h * (i + 1.5) - math.pi / 2
        parts.append(_parallel_edges(below, above, boundary_dec))
    a, b, length, seg = (np.concatenate(x) for x in zip(*parts))
    low, high = np.minimum(a, b), np.maximum(a, b)
    return Edges(low, high, length, seg)


def _ring_intervals(i: int, counts: np.ndarray, first: np.ndarray, ra0: float, total: int) -> tuple:
    """(first tract id, number of tracts, RA offset of the first boundary) of ring I; caps are one tract."""
    if i < 0:
        return 0, 1, 0.0
    if i >= len(counts):
        return total - 1, 1, 0.0
    n = int(counts[i])
    return int(first[i]), n, ra0 - math.pi / n


def _parallel_edges(below: tuple, above: tuple, dec: float) -> tuple[np.ndarray, ...]:
    """Edges along the parallel DEC between two rings: cut [0, 2 pi) at both rings' tract
    boundaries; each piece lies in one tract of each ring."""
    cuts = [np.array([0.0, TWO_PI])]
    for _, n, offset in (below, above):
        if n > 1:
            cuts.append((offset + TWO_PI * np.arange(n) / n) % TWO_PI)
    x = np.unique(np.concatenate(cuts))
    lo, hi = x[:-1], x[1:]
    keep = hi - lo > 1e-12
    lo, hi = lo[keep], hi[keep]
    mid = (lo + hi) / 2

    def tract_of(ring: tuple) -> np.ndarray:
        start, n, offset = ring
        return start + (np.floor(((mid - offset) % TWO_PI) * n / TWO_PI).astype(int) % n)

    a, b = tract_of(below), tract_of(above)
    # Merge the pieces of one pair of tracts (one shared edge); pieces of a pair are adjacent or
    # wrap around RA 0, so the edge drawn spans from the first piece's start to the last's end.
    pairs, inverse = np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    length = np.bincount(inverse, weights=(hi - lo) * math.cos(dec), minlength=len(pairs))
    span = np.bincount(inverse, weights=hi - lo, minlength=len(pairs))
    at_zero = np.zeros(len(pairs), bool)
    at_zero[inverse[lo == 0]] = True
    at_end = np.zeros(len(pairs), bool)
    at_end[inverse[hi == TWO_PI]] = True
    wraps = at_zero & at_end & (span < TWO_PI - 1e-9)  # an edge across RA 0: draw it from below 0
    shift = wraps[inverse] & (mid > math.pi)
    lo, hi = np.where(shift, lo - TWO_PI, lo), np.where(shift, hi - TWO_PI, hi)
    start = np.full(len(pairs), np.inf)
    end = np.full(len(pairs), -np.inf)
    np.minimum.at(start, inverse, lo)
    np.maximum.at(end, inverse, hi)
    seg = np.stack([start, np.full(len(pairs), dec), end, np.full(len(pairs), dec)], axis=1)
    return pairs[:, 0], pairs[:, 1], length, seg


def footprint(sky: SkyMap, dec_min_deg: float, dec_max_deg: float, max_tracts: int | None = None) -> SkyMap:
    """The tracts whose centres lie in [DEC_MIN, DEC_MAX] (degrees), the first MAX_TRACTS of them by id."""
    keep = (sky.dec >= math.radians(dec_min_deg) - 1e-12) & (sky.dec <= math.radians(dec_max_deg) + 1e-12)
    if max_tracts is not None:
        keep &= np.cumsum(keep) <= max_tracts
    return sky.subset(keep)


def find_tract(sky: SkyMap, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """The id of the tract of the whole sky map SKY holding each point (radians): the ring from the
    declination, then the tract from the RA (nearest centre), as RingsSkyMap.findTractIdArray."""
    h, counts = ring_counts(sky.rings)
    first_start = h / 2 - math.pi / 2
    ring = np.clip(np.floor((dec - first_start) / h).astype(int), -1, sky.rings)
    ring[dec < first_start] = -1
    ring[dec > -first_start] = sky.rings
    inner = (ring >= 0) & (ring < sky.rings)
    out = np.where(ring < 0, 0, len(sky) - 1)
    n = counts[ring[inner]]
    first = np.concatenate([[1], 1 + np.cumsum(counts)[:-1]])
    ra0 = sky.ra[1] if len(sky) > 2 else 0.0  # ring 0's tract 0 is at raStart
    j = np.floor(((ra[inner] - ra0) % TWO_PI) * n / TWO_PI + 0.5).astype(int) % n
    out[inner] = first[ring[inner]] + j
    return out
