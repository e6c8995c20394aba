"""A plan in pictures (PNG, matplotlib's Agg backend): the sky map of the assignment, the Gantt
chart of the simulated campaign, and each site's storage over time against its quota."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .assign import Planned
from .report import duration

PART_COLOURS = {"inputs": "#9ecae1", "scratch": "#fdae6b", "products": "#74c476"}
PART_LABELS = {
    "inputs": "inputs",
    "scratch": "intermediates",
    "products": "products not yet at {hub}",
    "inputs@hub": "inputs (every site's)",
    "scratch@hub": "intermediates",
    "products@hub": "products not yet on tape",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _site_colours(sites: list[str]) -> dict[str, tuple]:
    plt = _pyplot()
    return {site: plt.get_cmap("tab10")(i % 10) for i, site in enumerate(sites)}


def draw_all(planned: Planned, directory: Path) -> list[Path]:
    """The three pictures of PLANNED in DIRECTORY, named <plan>-<shares>-{skymap,gantt,storage}.png."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{planned.plan.doc.name}-{planned.kind.removesuffix('-aware')}"
    paths = [directory / f"{stem}-{kind}.png" for kind in ("skymap", "gantt", "storage")]
    sky_map(planned, paths[0])
    gantt(planned, paths[1])
    storage(planned, paths[2])
    return paths


def _lon(ra: np.ndarray) -> np.ndarray:
    """Longitude on the map of an RA (radians): RA 180 deg in the middle, increasing to the left."""
    return math.pi - ra


def mollweide(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mollweide's equal-area projection: x = 2 sqrt(2) / pi lon cos t, y = sqrt(2) sin t, with
    2 t + sin 2 t = pi sin lat (Newton's method). Computed here: matplotlib's own projection
    interpolates every polygon edge finely, too slow for thousands of tracts."""
    t = np.asarray(lat, dtype=float).copy()
    target = math.pi * np.sin(lat)
    for _ in range(30):
        step = (2 * t + np.sin(2 * t) - target) / np.maximum(2 + 2 * np.cos(2 * t), 1e-12)
        t -= step
        if np.all(np.abs(step) < 1e-10):
            break
    return 2 * math.sqrt(2) / math.pi * lon * np.cos(t), math.sqrt(2) * np.sin(t)


def _on_map(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    x, y = mollweide(lon, lat)
    return np.stack([x, y], axis=-1)


def sky_map(planned: Planned, path: Path) -> None:
    plt = _pyplot()
    from matplotlib.collections import LineCollection, PolyCollection

    a, sky = planned.assignment, planned.assignment.sky.map
    colours = _site_colours(a.sites)
    fig, ax = plt.subplots(figsize=(11, 6.4))
    steps = np.linspace(0.0, 1.0, 12)
    ra = sky.ra_min[:, None] + (sky.ra_max - sky.ra_min)[:, None] * steps  # along a parallel side
    dec = sky.dec_min[:, None] + (sky.dec_max - sky.dec_min)[:, None] * steps  # along a meridian side
    ra_min, ra_max = np.repeat(sky.ra_min[:, None], 12, 1), np.repeat(sky.ra_max[:, None], 12, 1)
    lon = _lon(np.concatenate([ra, ra_max, ra[:, ::-1], ra_min], axis=1))
    low, high = np.repeat(sky.dec_min[:, None], 12, 1), np.repeat(sky.dec_max[:, None], 12, 1)
    lat = np.concatenate([low, dec, high, dec[:, ::-1]], axis=1)
    face = np.array([colours[a.sites[i]] for i in a.site_of])
    polygons, faces = [], []
    for shift in (-2 * math.pi, 0.0, 2 * math.pi):  # a box across the map's edge shows on both sides
        seen = ((lon + shift).max(axis=1) > -math.pi) & ((lon + shift).min(axis=1) < math.pi)
        polygons += list(_on_map(np.clip(lon[seen] + shift, -math.pi, math.pi), lat[seen]))
        faces += list(face[seen])
    ax.add_collection(PolyCollection(polygons, facecolors=faces, edgecolors=faces, linewidths=0.2))
    boundary = a.site_of[sky.edges.a] != a.site_of[sky.edges.b]
    seg = sky.edges.segment[boundary]
    lines = []
    for shift in (-2 * math.pi, 0.0, 2 * math.pi):
        lon = _lon(seg[:, :1] + (seg[:, 2:3] - seg[:, :1]) * steps) + shift
        lat = seg[:, 1:2] + (seg[:, 3:4] - seg[:, 1:2]) * steps
        lon = np.where(np.abs(lon) <= math.pi + 1e-9, lon, np.nan)
        lines += list(_on_map(lon, lat))
    ax.add_collection(LineCollection(lines, colors="black", linewidths=0.9))
    _graticule(ax)
    if a.overlap:
        position = {int(t): i for i, t in enumerate(sky.ids)}
        where = [position[t] for t in a.overlap]
        x, y = mollweide((_lon(sky.ra[where]) + math.pi) % (2 * math.pi) - math.pi, sky.dec[where])
        seconds = [colours[s] for s in a.overlap.values()]
        ax.scatter(x, y, s=26, c=seconds, marker="o", edgecolors="black", linewidths=0.8, zorder=3)
    for site, colour in colours.items():
        n = len(a.tracts(site))
        ax.plot([], [], "s", color=colour, label=f"{site}: {n:,} tracts, {a.fraction(site):.1%} of the work")
    if a.overlap:
        ax.plot(
            [], [], "o", color="white", markeredgecolor="black", label="overlap tract (its colour: the second site)"
        )
    ax.plot([], [], "-", color="black", label="site boundary")
    ax.set_aspect("equal")
    ax.set_xlim(-2.9, 2.9)
    ax.set_ylim(-1.5, 1.5)
    ax.axis("off")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=2, fontsize=8, frameon=False)
    _save(
        fig,
        path,
        f"{planned.plan.doc.name}: {len(sky):,} tracts of a {planned.plan.doc.skymap.rings}-ring sky map, "
        f"{planned.kind} shares (Mollweide, RA 180 deg in the middle, east to the left)",
        ax,
    )


def _save(fig, path: Path, title: str, ax=None) -> None:
    """Title (the axes', or the figure's when it has several), write, close."""
    (ax.set_title if ax is not None else fig.suptitle)(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def _graticule(ax) -> None:
    """The map's outline, parallels every 30 deg and meridians every 60 deg, labelled."""
    lat = np.linspace(-math.pi / 2, math.pi / 2, 91)
    for lon_deg in range(-180, 181, 60):
        x, y = mollweide(np.full(len(lat), math.radians(lon_deg)), lat)
        edge = abs(lon_deg) == 180
        ax.plot(x, y, color="black" if edge else "grey", linewidth=0.8 if edge else 0.3, alpha=1 if edge else 0.6)
        if not edge:
            ax.text(
                *mollweide(np.array(math.radians(lon_deg)), np.radians(20.0)), f"{(180 - lon_deg) % 360}°", fontsize=7
            )
    lon = np.linspace(-math.pi, math.pi, 181)
    for lat_deg in range(-60, 61, 30):
        x, y = mollweide(lon, np.full(len(lon), math.radians(lat_deg)))
        ax.plot(x, y, color="grey", linewidth=0.3, alpha=0.6)
        ax.text(x[0] - 0.05, y[0], f"{lat_deg:+d}°", fontsize=7, ha="right", va="center")


def gantt(planned: Planned, path: Path) -> None:
    """A row per site: its steps as bars (a colour per step), its transfers below them, the global
    steps on the hub's row; the critical path outlined; the lower bound as a line."""
    plt = _pyplot()
    sim, sites = planned.simulation, list(planned.plan.sites)
    steps = list(dict.fromkeys(b.stage for b in sim.bars if b.kind in ("step", "global")))
    palette = plt.get_cmap("tab20")
    colour = {step: palette(i % 20) for i, step in enumerate(steps)}
    critical = set(sim.critical)
    fig, ax = plt.subplots(figsize=(11, 1.1 + 0.9 * len(sites)))
    for row, site in enumerate(sites):
        y = len(sites) - 1 - row
        for b in (b for b in sim.bars if b.site == site and b.end > b.start):
            on_path = f"{b.site}.{b.stage}" in critical
            edge = {"edgecolor": "red", "linewidth": 1.4} if on_path else {"edgecolor": "none"}
            start, width = b.start / 24, (b.end - b.start) / 24
            if b.kind in ("step", "global"):
                hatch = "//" if b.kind == "global" else None
                ax.broken_barh([(start, width)], (y - 0.05, 0.45), facecolors=colour[b.stage], hatch=hatch, **edge)
            else:
                ax.broken_barh([(start, width)], (y - 0.32, 0.2), facecolors="#555555", **edge)
    ax.axvline(sim.bound_h / 24, color="black", linestyle="--", linewidth=1)
    ax.text(sim.bound_h / 24, len(sites) - 0.45, " lower bound", fontsize=8, va="bottom")
    ax.set_yticks(range(len(sites)))
    ax.set_yticklabels(sites[::-1])
    ax.set_xlabel("days")
    ax.set_ylim(-0.6, len(sites) - 0.2)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[s]) for s in steps]
    handles += [plt.Rectangle((0, 0), 1, 1, color="#555555"), plt.Rectangle((0, 0), 1, 1, fill=False, ec="red")]
    labels = [*steps, "transfers (hops)", "critical path"]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=7, fontsize=8, frameon=False)
    _save(
        fig,
        path,
        f"{planned.plan.doc.name}, {planned.kind} shares: {duration(sim.makespan_h)}, "
        f"{sim.ratio:.3f} x the lower bound of {duration(sim.bound_h)} (global steps hatched)",
        ax,
    )


def storage(planned: Planned, path: Path) -> None:
    """Each site's disk over time: inputs, intermediates and products not yet safe, against its quota."""
    plt = _pyplot()
    sim, sites = planned.simulation, list(planned.plan.sites)
    columns = 2 if len(sites) > 1 else 1
    rows = math.ceil(len(sites) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(11, 2.8 * rows), squeeze=False)
    days = sim.times / 24
    for ax, site in zip(axes.ravel(), sites):
        r = sim.sites[site]
        parts = sim.storage[site]
        labels = [
            PART_LABELS[p].format(hub=planned.plan.hub) if site != planned.plan.hub else PART_LABELS[p + "@hub"]
            for p in parts
        ]
        ax.stackplot(days, *parts.values(), labels=labels, colors=[PART_COLOURS[p] for p in parts])
        ax.axhline(r.quota_tb, color="red", linestyle="--", linewidth=1, label="quota")
        state = f"OVER by {r.over_tb:,.0f} TB" if r.over_tb > 0 else f"{r.peak_tb / r.quota_tb:.0%} of quota"
        ax.set_title(f"{site}: peak {r.peak_tb:,.0f} TB ({state})", fontsize=9)
        ax.set_ylim(0, max(r.quota_tb, r.peak_tb) * 1.1)
        ax.set_ylabel("TB")
        ax.set_xlabel("days")
    for ax in axes.ravel()[len(sites) :]:
        ax.axis("off")
    for ax in axes.ravel()[: min(2, len(sites))]:
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _save(fig, path, f"{planned.plan.doc.name}, {planned.kind} shares: storage at each site")
