"""Site-independence QA: one overlap tract's results from two sites, compared within tolerances.

An overlap tract is processed at its own site A (whose copy is the campaign's product) and at a
second site B; both copies come home to the hub. Whole tables are not compared row by row (the
sites may order rows differently): each numeric column is summarized by order-free statistics
(count, NaN count, median, robust scatter, quantiles) and each statistic is compared within the
column's tolerance; a non-numeric column (e.g. `band`) by its value counts, exactly; a table by
its row count; a metrics dict value by value.

Airflow-free and stack-free: the stack side (stackside/site_qa_butler.py) reads the datasets and
hands plain numpy columns and dicts to these functions; the controller's tests call them directly.
numpy is the only heavy import; matplotlib is imported by `plot_tract` alone (Agg backend).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config.checks import ROWS
from .config.models import QaConfig, Tolerance

# 1.4826 x the median absolute deviation: the standard deviation, for Gaussian data, that outliers
# do not drag.
MAD_TO_SIGMA = 1.4826
QUANTILES = {"q05": 0.05, "q25": 0.25, "q75": 0.75, "q95": 0.95}
STATISTICS = ("count", "nan_count", "median", "robust_scatter", *QUANTILES)
VALUES = "values"  # a non-numeric column's value counts, compared exactly
EXACT = "exact"  # the tolerance kind of what is compared for equality (value counts, presence)
# Rounding in |a - b| itself is forgiven: a difference exactly at the tolerance in decimal (1.0 vs
# 1.1 within 0.1) passes although binary floating point makes it a few ulps larger.
ULP_SLACK = 4 * float(np.finfo(float).eps)
FAILURE_LINES = 20  # a failure message beyond this says "and N more" and points at the report

Table = Mapping[str, Any]  # column name -> 1-d array of that column's values
Value = float | int | str | dict | list | None  # what a check compares (JSON-able once NaN is null)


@dataclass(frozen=True)
class Check:
    """One compared quantity of one dataset type of one overlap tract, and its outcome."""

    tract: int
    dataset_type: str
    quantity: str  # `psf_flux.median`, `band.values`, `rows`, a metric such as `n_objects`, `datasets`
    site_a: str  # the tract's own site: its copy is the product
    value_a: Value
    site_b: str  # the second site
    value_b: Value
    tolerance_kind: str  # relative | absolute | exact
    tolerance_value: float
    ok: bool
    note: str = ""

    @property
    def tolerance(self) -> str:
        """As people read it (and the ledger stores it): `relative 0.001`, `absolute 1e-09`, `exact`."""
        return EXACT if self.tolerance_kind == EXACT else f"{self.tolerance_kind} {self.tolerance_value:g}"

    @property
    def numeric(self) -> bool:
        return _is_number(self.value_a) and _is_number(self.value_b)

    def scaled_difference(self) -> float | None:
        """B's difference from A in units of the allowed difference: within tolerance in [-1, 1];
        +-inf where nothing may differ and something does (or one side is NaN). None when the
        values are not two numbers (value counts, something missing)."""
        if not self.numeric:
            return None
        a, b = float(self.value_a), float(self.value_b)
        if math.isnan(a) and math.isnan(b):
            return 0.0
        if math.isnan(a) or math.isnan(b):
            return math.inf
        if a == b:
            return 0.0
        allowed = allowed_difference(a, b, self.tolerance_kind, self.tolerance_value)
        if allowed == 0 or math.isinf(b - a):
            return math.copysign(math.inf, b - a)
        return (b - a) / allowed

    def describe(self) -> str:
        """One line for a person: tract, dataset type, quantity, both sites' values, the tolerance."""
        head = f"tract {self.tract} {self.dataset_type} {self.quantity}"
        if self.value_a is None or self.value_b is None:  # on one side only: the note says where
            return f"{head}: {self.note}"
        a, b = _shown_pair(self.value_a, self.value_b)
        line = f"{head}: {self.site_a} {a} vs {self.site_b} {b} ({self.tolerance})"
        if self.numeric and self.tolerance_kind != EXACT:
            fa, fb = float(self.value_a), float(self.value_b)
            if not (math.isnan(fa) or math.isnan(fb)):
                allowed = allowed_difference(fa, fb, self.tolerance_kind, self.tolerance_value)
                line += f", |difference| {abs(fb - fa):.3g} > allowed {allowed:.3g}" if not self.ok else ""
        return f"{line}: {self.note}" if self.note else line

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["value_a"], out["value_b"] = _json_value(self.value_a), _json_value(self.value_b)
        out["tolerance"] = self.tolerance
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Check:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SiteQaReport:
    """Every check of a comparison: the verdict, the JSON the stack side writes, the message a
    failed Airflow task shows."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def tracts(self) -> list[int]:
        return sorted({c.tract for c in self.checks})

    def verdict(self) -> str:
        tracts = ", ".join(map(str, self.tracts)) or "none"
        if self.ok:
            return f"pass: {len(self.checks)} quantities within tolerance (tracts {tracts})"
        return f"fail: {len(self.failures)} of {len(self.checks)} quantities beyond tolerance (tracts {tracts})"

    def failure_message(self, limit: int = FAILURE_LINES) -> str:
        """One line per failed check, at most LIMIT of them; empty when everything agrees."""
        failures = self.failures
        lines = [c.describe() for c in failures[:limit]]
        if len(failures) > limit:
            lines.append(f"... and {len(failures) - limit} more (see the report's checks)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict(),
            "tracts": self.tracts,
            "compared": len(self.checks),
            "failed": len(self.failures),
            "checks": [c.to_json() for c in self.checks],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SiteQaReport:
        return cls([Check.from_json(c) for c in data["checks"]])


# --- tolerances ----------------------------------------------------------------------------------


def tolerance_kind(tol: Tolerance) -> tuple[str, float]:
    """(relative | absolute, its value); the config model admits exactly one of the two."""
    if tol.relative is not None:
        return "relative", float(tol.relative)
    if tol.absolute is not None:
        return "absolute", float(tol.absolute)
    raise ValueError("a tolerance needs relative or absolute")


def tolerance_for(qa: QaConfig, dataset_type: str, quantity: str) -> Tolerance:
    """The tolerance of one quantity: its column's or metric's own (`psf_flux.median` -> `psf_flux`;
    the row count -> `rows`), else the campaign's default relative one."""
    own = qa.compare.get(dataset_type, {}).get(quantity.split(".", 1)[0])
    return own if own is not None else Tolerance(relative=qa.tolerance)


def allowed_difference(a: float, b: float, kind: str, value: float) -> float:
    if kind == "relative":
        return value * max(abs(a), abs(b))
    if kind == "absolute":
        return value
    return 0.0


def within(a: float, b: float, tol: Tolerance) -> bool:
    """Whether two sites' values agree: relative |a - b| <= r x max(|a|, |b|), absolute
    |a - b| <= x; at the tolerance passes. Two NaNs agree (both sites found nothing to measure);
    one NaN does not."""
    return _within(float(a), float(b), *tolerance_kind(tol))


def _within(a: float, b: float, kind: str, value: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:  # equal infinities too
        return True
    diff = abs(a - b)
    if math.isinf(diff):
        return False
    return diff <= allowed_difference(a, b, kind, value) + ULP_SLACK * max(abs(a), abs(b))


# --- statistics ----------------------------------------------------------------------------------


def is_numeric(values: np.ndarray) -> bool:
    """Integers and floats are summarized by statistics; anything else (strings, booleans) is
    compared by its value counts."""
    return values.dtype.kind in "iuf"


def column_values(column: Any) -> np.ndarray:
    """A column as a 1-d numpy array; a masked numeric column's masked entries become NaN."""
    if isinstance(column, np.ma.MaskedArray):
        if column.dtype.kind in "iuf":
            return np.ma.filled(column.astype(float), np.nan)
        return np.asarray(np.ma.filled(column.astype(str), ""))
    return np.asarray(column).reshape(-1)


def column_statistics(values: np.ndarray) -> dict[str, float | int]:
    """Order-free summary of a numeric column: non-NaN count, NaN count, median, robust scatter
    (1.4826 x MAD) and quantiles, over the non-NaN values (NaN where there are none)."""
    values = np.asarray(values, dtype=float)
    good = values[~np.isnan(values)]
    stats: dict[str, float | int] = {"count": int(good.size), "nan_count": int(values.size - good.size)}
    if good.size == 0:
        return {**stats, **{name: math.nan for name in STATISTICS[2:]}}
    median = float(np.median(good))
    stats["median"] = median
    with np.errstate(invalid="ignore"):  # infinities make the scatter NaN: both sites alike
        stats["robust_scatter"] = float(MAD_TO_SIGMA * np.median(np.abs(good - median)))
    for name, q in QUANTILES.items():
        stats[name] = float(np.quantile(good, q))
    return stats


def value_counts(values: np.ndarray) -> dict[str, int]:
    """A non-numeric column's values and how often each occurs (keys as text, sorted)."""
    names, counts = np.unique(np.asarray(values).astype(str), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def table_rows(table: Table) -> int:
    return max((len(column_values(c)) for c in table.values()), default=0)


# --- comparisons ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """Which tract and which two sites a comparison is of: A's copy is the product, B's the second."""

    tract: int
    site_a: str
    site_b: str

    def check(
        self, dataset_type: str, quantity: str, a: Value, b: Value, kind: str, value: float, ok: bool, note: str = ""
    ) -> Check:
        return Check(self.tract, dataset_type, quantity, self.site_a, a, self.site_b, b, kind, value, bool(ok), note)


def compare_tables(side: Side, dataset_type: str, table_a: Table, table_b: Table, qa: QaConfig) -> list[Check]:
    """Compare one dataset type's table (all of the tract's datasets of it, concatenated) from
    both sites: the row count; then, if both have rows, every column: present on both sides, and
    its statistics (numeric) or value counts (anything else)."""
    check = _Maker(side, dataset_type, qa)
    rows_a, rows_b = table_rows(table_a), table_rows(table_b)
    empty = [s for s, n in ((side.site_a, rows_a), (side.site_b, rows_b)) if n == 0]
    note = "" if len(empty) != 1 else f"the table is empty at {empty[0]}"
    checks = [check.numbers(ROWS, rows_a, rows_b, note)]
    if empty:  # nothing to summarize; one side empty already fails on its row count
        return checks
    for name in list(table_a) + [n for n in table_b if n not in table_a]:
        if name not in table_a or name not in table_b:
            checks.append(check.missing(name, "column", in_a=name in table_a))
            continue
        values_a, values_b = column_values(table_a[name]), column_values(table_b[name])
        if is_numeric(values_a) and is_numeric(values_b):
            stats_a, stats_b = column_statistics(values_a), column_statistics(values_b)
            checks += [check.numbers(f"{name}.{stat}", stats_a[stat], stats_b[stat]) for stat in STATISTICS]
        else:
            checks.append(check.exact(f"{name}.{VALUES}", value_counts(values_a), value_counts(values_b)))
    return checks


def compare_metrics(
    side: Side, dataset_type: str, metrics_a: Mapping[str, Any], metrics_b: Mapping[str, Any], qa: QaConfig
) -> list[Check]:
    """Compare one dataset type's metrics dict from both sites, metric by metric: numbers within
    their tolerance, anything else exactly; a metric on one side only fails."""
    check = _Maker(side, dataset_type, qa)
    checks = []
    for name in list(metrics_a) + [n for n in metrics_b if n not in metrics_a]:
        if name not in metrics_a or name not in metrics_b:
            checks.append(check.missing(name, "metric", in_a=name in metrics_a))
        elif _is_number(metrics_a[name]) and _is_number(metrics_b[name]):
            checks.append(check.numbers(name, metrics_a[name], metrics_b[name]))
        else:
            checks.append(check.exact(name, metrics_a[name], metrics_b[name]))
    return checks


def compare_presence(
    side: Side, dataset_type: str, quantity: str, have_a: Iterable[str], have_b: Iterable[str], what: str = "datasets"
) -> Check:
    """Whether both sites hold the same datasets (e.g. data IDs) of a type for the tract: the
    check fails naming what one side lacks, so a missing dataset is a finding, not a crash."""
    a, b = sorted(set(have_a)), sorted(set(have_b))
    lacks = [
        f"{what} missing at {site}: {_listed(sorted(set(other) - set(mine)))}"
        for site, mine, other in ((side.site_a, a, b), (side.site_b, b, a))
        if set(other) - set(mine)
    ]
    if not a and not b:
        lacks = [f"no {what} at either site"]
    return side.check(dataset_type, quantity, len(a), len(b), EXACT, 0.0, not lacks, "; ".join(lacks))


@dataclass(frozen=True)
class _Maker:
    """Makes the checks of one dataset type of one tract (the tolerance looked up per quantity)."""

    side: Side
    dataset_type: str
    qa: QaConfig

    def _check(self, quantity: str, a: Value, b: Value, kind: str, value: float, ok: bool, note: str = "") -> Check:
        return self.side.check(self.dataset_type, quantity, a, b, kind, value, ok, note)

    def numbers(self, quantity: str, a: float | int, b: float | int, note: str = "") -> Check:
        kind, value = tolerance_kind(tolerance_for(self.qa, self.dataset_type, quantity))
        a, b = _plain(a), _plain(b)
        return self._check(quantity, a, b, kind, value, _within(float(a), float(b), kind, value), note)

    def exact(self, quantity: str, a: Value, b: Value) -> Check:
        ok = a == b
        return self._check(quantity, a, b, EXACT, 0.0, ok, "" if ok else "values differ")

    def missing(self, name: str, what: str, *, in_a: bool) -> Check:
        site = self.side.site_b if in_a else self.side.site_a
        present = "present"
        a, b = (present, None) if in_a else (None, present)
        return self._check(name, a, b, EXACT, 0.0, False, f"{what} {name} missing at {site}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _plain(value: Any) -> float | int:
    """numpy scalars as Python numbers (JSON, the ledger)."""
    return int(value) if isinstance(value, int | np.integer) else float(value)


def _json_value(value: Value) -> Value:
    """NaN (and infinities) are not JSON: NaN is null, an infinity its text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


def _shown_pair(a: Value, b: Value) -> tuple[str, str]:
    """Two values as text with just enough digits to tell them apart (up to 17)."""
    if not (_is_number(a) and _is_number(b)) or isinstance(a, int) and isinstance(b, int):
        return _short(a), _short(b)
    for digits in range(6, 18):
        shown = f"{float(a):.{digits}g}", f"{float(b):.{digits}g}"
        if shown[0] != shown[1] or float(a) == float(b):
            return shown
    return shown


def _short(value: Value, limit: int = 80) -> str:
    if value is None:
        return "(missing)"
    text = ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
    text = "{" + text + "}" if isinstance(value, dict) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listed(names: list[str], limit: int = 8) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# --- plots ---------------------------------------------------------------------------------------

PLOT_LIMIT = 1000.0  # scaled differences beyond +-this are drawn at the edge
MARKERS = {
    "count": "s",
    "nan_count": "x",
    "median": "o",
    "robust_scatter": "D",
    "q05": "<",
    "q25": "v",
    "q75": "^",
    "q95": ">",
}
VALUE_MARKER = "*"  # rows, a metric, value counts, presence: the quantity itself


def plot_name(tract: int) -> str:
    """The file name of one tract's plot in the report directory (the campaign view serves it)."""
    return f"site_qa_tract{tract}.png"


def plot_tract(checks: Iterable[Check], path: str | Path) -> Path:
    """One PNG for one tract: per dataset type, a row per column or metric, each compared quantity
    at B's difference from A in units of its allowed difference (the shaded band [-1, 1] is within
    tolerance; symmetric-log beyond); failures in red and named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checks = list(checks)
    if not checks:
        raise ValueError("plot_tract: no checks to plot")
    tracts = {c.tract for c in checks}
    if len(tracts) != 1:
        raise ValueError(f"plot_tract: one tract per plot, got {sorted(tracts)}")
    first = checks[0]
    panels: dict[str, dict[str, list[Check]]] = {}
    for c in checks:
        panels.setdefault(c.dataset_type, {}).setdefault(c.quantity.split(".", 1)[0], []).append(c)
    heights = [len(rows) + 1.2 for rows in panels.values()]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(10, 1.6 + 0.34 * sum(heights)),
        sharex=True,
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    bad = [c for c in checks if not c.ok]
    for ax, (dataset_type, rows) in zip(axes[:, 0], panels.items(), strict=True):
        _plot_panel(ax, dataset_type, rows)
    ax = axes[-1, 0]
    ax.set_xscale("symlog", linthresh=1.0, linscale=1.0)
    ax.set_xlim(-PLOT_LIMIT * 1.6, PLOT_LIMIT * 1.6)
    ticks = [-1000, -100, -10, -1, 0, 1, 10, 100, 1000]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel(f"({first.site_b} - {first.site_a}) / allowed difference    (within tolerance: -1 to 1, shaded)")
    verdict = f"{len(bad)} of {len(checks)} quantities beyond tolerance" if bad else f"all {len(checks)} agree"
    fig.suptitle(
        f"Tract {first.tract}: {first.site_b} vs {first.site_a} (the product)  -  {verdict}",
        fontsize=13,
        fontweight="bold",
        color="firebrick" if bad else "black",
    )
    handles = [
        plt.Line2D([], [], marker=m, linestyle="", color="0.3", label=name.replace("_", " "))
        for name, m in {**MARKERS, "rows, metric, values": VALUE_MARKER}.items()
    ]
    handles.append(plt.Line2D([], [], marker="o", linestyle="", color="firebrick", label="beyond tolerance"))
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8, frameon=False)
    height = fig.get_figheight()  # inches: room for the legend's two rows below, the title above
    fig.tight_layout(rect=(0, 0.55 / height, 1, 1 - 0.45 / height))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_panel(ax, dataset_type: str, rows: dict[str, list[Check]]) -> None:
    """One dataset type: a row per column or metric, its quantities as markers (one per statistic),
    and one red note per failing row saying which quantities fail and by how much."""
    names = list(rows)
    ax.axvspan(-1, 1, color="#cfe8cf", zorder=0)
    ax.axvline(0, color="0.6", linewidth=0.8, zorder=1)
    edge = PLOT_LIMIT * 1.4
    failed = 0
    for y, name in enumerate(names):
        group = rows[name]
        notes, xs = [], []
        for i, c in enumerate(group):
            stat = c.quantity.split(".", 1)[1] if "." in c.quantity else ""
            scaled = c.scaled_difference()
            x = 0.0 if scaled is None and c.ok else edge if scaled is None else max(-edge, min(edge, scaled))
            offset = (i - (len(group) - 1) / 2) * 0.07
            ax.scatter(
                [x],
                [y + offset],
                marker=MARKERS.get(stat, VALUE_MARKER),
                s=28 if c.ok else 44,
                color="#2b6cb0" if c.ok else "firebrick",
                zorder=3 if c.ok else 4,
            )
            if not c.ok:
                failed += 1
                xs.append(x)
                notes.append(_plot_note(c, stat, scaled))
        if notes:
            x = xs[0]
            text = "; ".join(notes) if len(notes) <= 3 else f"{'; '.join(notes[:3])}; +{len(notes) - 3} more"
            ax.annotate(
                text,
                (x, y),
                xytext=(-9 if x > 0 else 9, 0),
                textcoords="offset points",
                ha="right" if x > 0 else "left",
                va="center",
                fontsize=8,
                color="firebrick",
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
                zorder=5,
            )
    ax.set_yticks(range(len(names)), names)
    for label, name in zip(ax.get_yticklabels(), names, strict=True):
        if not all(c.ok for c in rows[name]):
            label.set_color("firebrick")
            label.set_fontweight("bold")
    ax.set_ylim(len(names) - 0.5, -0.5)
    total = sum(len(g) for g in rows.values())
    ax.set_title(
        f"{dataset_type}: {total - failed}/{total} within tolerance",
        loc="left",
        fontsize=10,
        color="firebrick" if failed else "black",
    )
    ax.grid(axis="x", color="0.85", linewidth=0.6)


def _plot_note(c: Check, stat: str, scaled: float | None) -> str:
    """How a failing quantity is named next to its marker: by how many allowed differences it is
    off, or (nothing may differ, or something is missing) its note or both values."""
    name = stat.replace("_", " ") or c.quantity
    if scaled is not None and math.isfinite(scaled):
        return f"{name} {scaled:+.3g}"
    if c.note:
        return c.note
    a, b = _shown_pair(c.value_a, c.value_b)
    return f"{name} {a} vs {b}"
