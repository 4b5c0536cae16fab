"""Survival figures: PNG artifacts of a benchmark row and SVG files committed beside a leaderboard page.

Estimates come from scikit-survival (Kaplan-Meier with its log-log band, the k-sample log-rank test); this module
only draws them (lifelines, a second of imports per process, is the tests' independent reference).
Every figure is built and rendered under one fixed style (``_style``: matplotlib's defaults, DejaVu Sans,
fixed sizes), never the user's matplotlibrc, so ``png_bytes`` and ``svg_text`` give the same bytes for
the same data on any machine with the same matplotlib. The object API only: no pyplot state, no GUI.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib
import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

RISK_GROUPS = ("low", "intermediate", "high")  # group codes 0, 1, 2
_COLOURS = ("#0072B2", "#E69F00", "#B2182B")  # per risk group; told apart without colour vision too
_SERIES = (("#0072B2", "o"), ("#E69F00", "s"), ("#009E73", "^"), ("#CC79A7", "D"), ("#D55E00", "v"))  # colour, marker
_MAX_HORIZONS = 4  # calibration panels in one row
_PER_GROUP = 5  # calibration: at least this many patients per group of predicted survival
_RC = {
    "font.family": ["DejaVu Sans"],  # bundled with matplotlib, so the same glyphs everywhere
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "legend.fontsize": 8.0,
    "legend.title_fontsize": 8.0,
    "figure.dpi": 100.0,
    "svg.hashsalt": "prognosis-bench",  # stable clip-path and glyph ids instead of random ones
    "svg.fonttype": "path",  # glyphs as paths: no dependence on the viewer's fonts
}


@dataclass(frozen=True)
class RiskGroupSummary:
    """Kaplan-Meier summary of the risk groups ``RISK_GROUPS``; each tuple is indexed by group code."""

    n: tuple[int, ...]  # patients per group
    events: tuple[int, ...]  # observed events per group
    medians: tuple[float, ...]  # KM median survival; math.inf where not reached, nan for an empty group
    log_rank_p: float  # multivariate log-rank test across the non-empty groups; nan with fewer than 2


@contextmanager
def _style() -> Iterator[None]:
    """matplotlib's default style plus ``_RC``, whatever the user's matplotlibrc says; restored on exit."""
    with matplotlib.rc_context():
        matplotlib.style.use(["default", _RC])
        yield


def _figure(width: float, height: float) -> Figure:
    """An empty figure with its own Agg canvas (no pyplot), laid out by constrained layout until frozen."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _frozen(fig: Figure) -> Figure:
    """Lay the figure out once and keep that layout: constrained layout run again from its own result
    moves things by a fraction of a point, so a second render (or a PNG before an SVG) would differ."""
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    return fig


def _vector(name: str, values, n: int | None = None, of: str = "") -> np.ndarray:
    """``values`` as a 1-D float array, of length ``n`` (the length of ``of``) when given."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if n is not None and len(array) != n:
        raise ValueError(f"{name} has {len(array)} values but {of} has {n}; give one value per {of} entry")
    return array


def _survival(time, event, groups=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Checked (time, event, groups): finite non-negative times, events 0/1, group codes 0, 1, 2."""
    time = _vector("time", time)
    event = _vector("event", event, len(time), "time")
    if not np.all(np.isfinite(time)) or np.any(time < 0):
        bad = float(time[~(np.isfinite(time) & (time >= 0))][0])
        raise ValueError(f"time must be finite and non-negative, got {bad!r}")
    if not np.all(np.isin(event, (0, 1))):
        raise ValueError(f"event must be 0 (censored) or 1 (event), got {float(event[~np.isin(event, (0, 1))][0])!r}")
    if groups is None:
        return time, event.astype(bool), None
    groups = _vector("groups", groups, len(time), "time")
    codes = tuple(range(len(RISK_GROUPS)))
    if not np.all(np.isin(groups, codes)):
        bad = sorted({float(g) for g in groups[~np.isin(groups, codes)]})[:5]
        raise ValueError(f"groups must be risk-group codes {codes} ({', '.join(RISK_GROUPS)}), got {bad}")
    return time, event.astype(bool), groups.astype(int)


@dataclass(frozen=True)
class _Curve:
    """One Kaplan-Meier estimate (scikit-survival's), from time 0, with its 95 % log-log band."""

    time: np.ndarray
    survival: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def at(self, times: np.ndarray) -> np.ndarray:
        return self.survival[np.searchsorted(self.time, times, side="right") - 1]

    @property
    def median(self) -> float:
        """The first time the estimate is at or below 0.5; inf when it never gets there."""
        below = np.flatnonzero(self.survival <= 0.5)
        return float(self.time[below[0]]) if below.size else math.inf


def _kaplan_meier(time: np.ndarray, event: np.ndarray) -> _Curve:
    from sksurv.nonparametric import kaplan_meier_estimator

    t, survival, (low, high) = kaplan_meier_estimator(event, time, conf_type="log-log")
    if t[0] > 0:  # the curve starts at 1 at time 0
        t, survival, low, high = np.r_[0.0, t], np.r_[1.0, survival], np.r_[1.0, low], np.r_[1.0, high]
    return _Curve(t, survival, low, high)


def _format_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _fit_groups(time: np.ndarray, event: np.ndarray, groups: np.ndarray) -> dict[int, _Curve]:
    """The Kaplan-Meier estimate of each non-empty risk group, keyed by group code."""
    return {code: _kaplan_meier(time[groups == code], event[groups == code])
            for code in range(len(RISK_GROUPS)) if np.any(groups == code)}  # fmt: skip


def _summary(time: np.ndarray, event: np.ndarray, groups: np.ndarray, curves: dict[int, _Curve]) -> RiskGroupSummary:
    from sksurv.compare import compare_survival

    from bench.data.cohort import structured_y

    codes = range(len(RISK_GROUPS))
    n = tuple(int(np.sum(groups == code)) for code in codes)
    events = tuple(int(np.sum(event[groups == code])) for code in codes)
    medians = tuple(curves[code].median if code in curves else math.nan for code in codes)
    p = math.nan
    if len(curves) >= 2 and event.any():  # the k-sample log-rank test
        p = float(compare_survival(structured_y(event, time), groups)[1])
    return RiskGroupSummary(n, events, medians, p)


def risk_group_summary(time, event, groups) -> RiskGroupSummary:
    """Group sizes, events, KM medians and the log-rank p of the risk groups (codes 0, 1, 2)."""
    time, event, groups = _survival(time, event, groups)
    return _summary(time, event, groups, _fit_groups(time, event, groups))


def kaplan_meier_figure(time, event, groups, title: str, unit: str, endpoint: str = "survival") -> Figure:
    """KM curve with its 95 % CI per non-empty risk group, the log-rank p, and a number-at-risk table; the
    y-axis is the cohort's endpoint (``EvaluationPolicy.endpoint``)."""
    time, event, groups = _survival(time, event, groups)
    if len(time) == 0:
        raise ValueError("kaplan_meier_figure needs at least one patient, got none")
    curves = _fit_groups(time, event, groups)
    summary = _summary(time, event, groups, curves)
    with _style():
        fig = _figure(8.0, 4.6 + 0.2 * len(curves))
        ax = fig.add_subplot()
        for code, km in curves.items():
            mask, name, colour = groups == code, RISK_GROUPS[code], _COLOURS[code]
            label = f"{name} (n = {summary.n[code]}, {summary.events[code]} events)"
            ax.step(km.time, km.survival, where="post", color=colour, lw=1.6, label=label)
            ax.fill_between(km.time, km.low, km.high, step="post", color=colour, alpha=0.18, lw=0)
            censored = np.unique(time[mask & ~event])
            ax.plot(censored, km.at(censored), "|", color=colour, ms=5)
        xmax = float(time.max()) * 1.02 or 1.0
        ax.set(xlim=(0.0, xmax), ylim=(0.0, 1.02), title=title)
        # fixed ticks: the at-risk table is written at them, and auto ticks would move when the layout resizes
        ticks = [tick for tick in MaxNLocator(nbins=6).tick_values(0.0, xmax) if 0.0 <= tick <= xmax]
        ax.set_xticks(ticks)
        ax.set_xlabel(f"time ({unit})")
        ax.set_ylabel(endpoint)
        ax.grid(alpha=0.3)
        ax.legend(title=f"log-rank p = {_format_p(summary.log_rank_p)}", loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)  # fmt: skip
        _at_risk_table(ax, time, groups, list(curves), ticks)
        return fig


def _at_risk_table(ax, time: np.ndarray, groups: np.ndarray, codes: list[int], ticks: list[float]) -> None:
    """Numbers at risk (still followed: time >= t) of each group under the x ticks, a distance in points below
    the axes so that it stays under the x label whatever the final size."""
    below = {"xycoords": ("data", "axes fraction"), "textcoords": "offset points", "fontsize": 8,
             "annotation_clip": False}  # fmt: skip
    ax.annotate("At risk", (0.0, 0.0), xytext=(-8, -44), ha="right", va="top", fontweight="bold", **below)
    for row, code in enumerate(codes):
        offset = -44 - 12 * (row + 1)
        ax.annotate(RISK_GROUPS[code], (0.0, 0.0), xytext=(-8, offset), ha="right", va="top",
                    color=_COLOURS[code], **below)  # fmt: skip
        in_group = time[groups == code]
        for tick in ticks:
            ax.annotate(str(int(np.sum(in_group >= tick))), (tick, 0.0), xytext=(0, offset), ha="center",
                        va="top", **below)  # fmt: skip


def auc_figure(times, auc, low, high, title: str, unit: str) -> Figure:
    """Cumulative/dynamic AUC(t) with its bootstrap 95 % band; NaN points are left as gaps."""
    times = _vector("times", times)
    auc, low, high = (_vector(name, v, len(times), "times") for name, v in (("auc", auc), ("low", low), ("high", high)))
    with _style():
        fig = _figure(6.4, 4.0)
        ax = fig.add_subplot()
        ax.fill_between(times, low, high, color=_COLOURS[0], alpha=0.2, lw=0, label="bootstrap 95 % CI")
        ax.plot(times, auc, "o-", color=_COLOURS[0], lw=1.6, ms=4, label="AUC(t)")
        ax.axhline(0.5, color="0.4", ls="--", lw=1.0, label="chance (0.5)")
        ax.set(ylim=(0.0, 1.0), title=title)
        ax.set_xlabel(f"time ({unit})")
        ax.set_ylabel("cumulative/dynamic AUC(t)")
        ax.grid(alpha=0.3)
        fig.legend(loc="outside lower center", ncols=3, frameon=False)  # never over the curves
        return fig


def _calibration_groups(predicted: np.ndarray) -> list[np.ndarray]:
    """Indices of deciles of predicted survival; fewer, equal-sized groups so that each has >= 5 patients."""
    if len(predicted) == 0:
        return []
    count = max(1, min(10, len(predicted) // _PER_GROUP))
    return np.array_split(np.argsort(predicted, kind="stable"), count)


def _observed_at(time: np.ndarray, event: np.ndarray, horizon: float) -> tuple[float, float, float]:
    """Kaplan-Meier survival at ``horizon`` with its 95 % CI (log-log, as lifelines' and scikit-survival's);
    nan when follow-up ends before it with survivors left."""
    from sksurv.nonparametric import kaplan_meier_estimator

    times, survival, (low, high) = kaplan_meier_estimator(event, time, conf_type="log-log")
    at = int(np.searchsorted(times, horizon, side="right")) - 1
    if at < 0:
        return 1.0, 1.0, 1.0
    if time.max() < horizon and survival[at] > 0:
        return math.nan, math.nan, math.nan
    return float(survival[at]), float(low[at]), float(high[at])


def calibration_figure(horizons, predicted, time, event, title: str, unit: str,
                       notes: Sequence[str] | None = None) -> Figure:  # fmt: skip
    """Per horizon h: KM observed survival at h against mean predicted S(h|x), by deciles of prediction; ``notes``
    (one per horizon, such as the row's calibration slope and ICI) close each panel's title."""
    time, event, _ = _survival(time, event)
    horizons = _vector("horizons", horizons)
    predicted = np.asarray(predicted, dtype=float)
    if not 1 <= len(horizons) <= _MAX_HORIZONS:
        raise ValueError(f"calibration_figure draws 1 to {_MAX_HORIZONS} horizons, got {len(horizons)}; pass a subset")
    if predicted.shape != (len(time), len(horizons)):
        raise ValueError(f"predicted has shape {predicted.shape} but there are {len(time)} patients (time) and "
                         f"{len(horizons)} horizons; pass an array (n_patients, n_horizons)")  # fmt: skip
    if notes is not None and len(notes) != len(horizons):
        raise ValueError(f"notes has {len(notes)} values but there are {len(horizons)} horizons; give one per horizon")
    with _style():
        fig = _figure(0.4 + 3.0 * len(horizons), 4.4)
        fig.suptitle(title)
        axes = fig.subplots(1, len(horizons), squeeze=False)[0]
        for j, (ax, horizon) in enumerate(zip(axes, horizons, strict=True)):
            keep = ~np.isnan(predicted[:, j])
            pred, t, e = predicted[keep, j], time[keep], event[keep]
            groups = _calibration_groups(pred)
            points = []
            for index in groups:
                points.append((pred[index].mean(), *_observed_at(t[index], e[index], horizon)))
            ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1.0)
            if points:
                x, y, lo, hi = np.array(points).T
                ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o", color=_COLOURS[0], ms=4, capsize=2, lw=1.0)
            else:
                ax.text(0.5, 0.5, "no predictions", ha="center", va="center", color="0.4", transform=ax.transAxes)
            ax.set(xlim=(0, 1), ylim=(0, 1))
            ax.set_box_aspect(1)
            plural = "" if len(groups) == 1 else "s"
            note = "" if notes is None else f"\n{notes[j]}"
            ax.set_title(f"h = {horizon:g} {unit}\nn = {len(pred)}, {len(groups)} group{plural}{note}", fontsize=9)
            ax.set_xlabel("mean predicted S(h)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("observed S(h), Kaplan-Meier")
        return fig


def decision_curve_figure(thresholds, labels: Sequence[str], net_benefit, lows, highs, treat_all, title: str,
                          xlabel: str = "threshold probability") -> Figure:  # fmt: skip
    """Decision curves (Vickers and Elkin 2006): each label's net benefit against the threshold probability with
    its 95 % band (rows of ``net_benefit``, ``lows``, ``highs``), treat-all's, and treat-none's (0); NaN points are
    left as gaps. The y-axis ends a little below 0, where treat-all's curve falls out of interest."""
    thresholds = _vector("thresholds", thresholds)
    labels = [str(label) for label in labels]
    if not 1 <= len(labels) <= len(_SERIES):
        raise ValueError(f"decision_curve_figure draws 1 to {len(_SERIES)} curves, got {len(labels)}; pass fewer")
    shape = (len(labels), len(thresholds))
    curves = []
    for name, values in (("net_benefit", net_benefit), ("lows", lows), ("highs", highs)):
        array = np.asarray(values, dtype=float)
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}; pass one row per label and one column per threshold, "
                             f"{shape}")  # fmt: skip
        curves.append(array)
    net_benefit, lows, highs = curves
    treat_all = _vector("treat_all", treat_all, len(thresholds), "thresholds")
    finite = np.r_[net_benefit.ravel(), highs.ravel(), treat_all]
    finite = finite[np.isfinite(finite)]
    top = max(float(finite.max()) if finite.size else 0.0, 0.01) * 1.1
    with _style():
        columns = 3 if len(labels) == 1 else 1 if max(len(label) for label in labels) > 40 else 2
        fig = _figure(6.4, 4.4 + 0.2 * math.ceil((len(labels) + 2) / columns))  # the legend's lines below
        ax = fig.add_subplot()
        for i, label in enumerate(labels):
            colour, marker = _SERIES[i]
            ax.fill_between(thresholds, lows[i], highs[i], color=colour, alpha=0.15, lw=0)
            ax.plot(thresholds, net_benefit[i], marker=marker, color=colour, lw=1.6, ms=4, label=label)
        ax.plot(thresholds, treat_all, color="0.35", ls="--", lw=1.2, label="treat all")
        ax.axhline(0.0, color="0.0", lw=1.0, label="treat none")
        ax.set(ylim=(-0.15 * top, top), title=title)
        if len(thresholds) > 1:  # the curves fill the width; a single threshold keeps matplotlib's margins
            ax.set_xlim(float(thresholds.min()), float(thresholds.max()))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("net benefit")
        ax.grid(alpha=0.3)
        # never over the curves; long row labels get a line each
        fig.legend(loc="outside lower center", ncols=columns, frameon=False)
        return fig


def brier_figure(times, model, reference, title: str, unit: str) -> Figure:
    """Brier score over time of the model and of the Kaplan-Meier reference (the null model)."""
    times = _vector("times", times)
    model = _vector("model", model, len(times), "times")
    reference = _vector("reference", reference, len(times), "times")
    with _style():
        fig = _figure(6.4, 4.0)
        ax = fig.add_subplot()
        ax.plot(times, reference, "s--", color="0.4", lw=1.2, ms=3, label="Kaplan-Meier (null model)")
        ax.plot(times, model, "o-", color=_COLOURS[0], lw=1.6, ms=3, label="model")
        ax.set_ylim(bottom=0.0)
        ax.set_title(title)
        ax.set_xlabel(f"time ({unit})")
        ax.set_ylabel("Brier score (lower is better)")
        ax.grid(alpha=0.3)
        fig.legend(loc="outside lower center", ncols=3, frameon=False)  # never over the curves
        return fig


def forest_figure(labels: Sequence[str], differences, lows, highs, title: str, xlabel: str,
                  notes: Sequence[str] | None = None) -> Figure:  # fmt: skip
    """One row per label (top first): the difference with its CI, a line at 0, optional notes on the right."""
    labels = [str(label) for label in labels]
    n = len(labels)
    differences = _vector("differences", differences, n, "labels")
    lows, highs = _vector("lows", lows, n, "labels"), _vector("highs", highs, n, "labels")
    if notes is not None and len(notes) != n:
        raise ValueError(f"notes has {len(notes)} values but labels has {n}; give one note per row or none")
    y = np.arange(n)[::-1].astype(float)  # the first row at the top
    finite = np.isfinite(differences) & np.isfinite(lows) & np.isfinite(highs)
    outside = np.flatnonzero(finite & ((lows > differences) | (highs < differences)))
    if outside.size:
        i = int(outside[0])
        raise ValueError(f"row {labels[i]!r}: the interval [{lows[i]:g}, {highs[i]:g}] does not contain the "
                         f"difference {differences[i]:g}; pass lows <= differences <= highs")  # fmt: skip
    d, lo, hi = differences[finite], lows[finite], highs[finite]
    span = np.abs(np.r_[d, lo, hi])
    reach = 1.15 * float(span.max()) if span.size and span.max() > 0 else 1.0  # 0 in the middle
    with _style():
        # Labels and notes keep their room: the plot itself is 4.5 inches wide whatever their length.
        text = 0.068 * (max(map(len, labels), default=0) + max(map(len, map(str, notes or [])), default=0))
        fig = _figure(4.5 + text + 0.6, 1.3 + 0.28 * max(n, 1))
        ax = fig.add_subplot()
        ax.axvline(0.0, color="0.4", lw=1.0)
        ax.errorbar(d, y[finite], xerr=[d - lo, hi - d], fmt="o", color=_COLOURS[0], ms=4, capsize=2, lw=1.2)
        for row in y[~finite]:
            ax.text(0.0, row, "n/a", ha="center", va="center", color="0.35", style="italic",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})  # fmt: skip
        ax.set(xlim=(-reach, reach), ylim=(-0.7, n - 0.3), title=title)
        ax.set_yticks(y, labels)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
        if notes is not None:
            right = ax.twinx()
            right.set_ylim(ax.get_ylim())
            right.set_yticks(y, [str(note) for note in notes])
            right.tick_params(length=0)
        return fig


def icc_figure(labels: Sequence[str], values: Sequence[Sequence[float]], title: str, lines: Sequence[float]) -> Figure:
    """The ICC distributions side by side: one horizontal box (and its features as points) per group, top to bottom
    in the order given, with dashed reference lines at ``lines`` (good and excellent reliability)."""
    with _style():
        fig = _figure(7.5, 1.2 + 0.42 * len(labels))
        ax = fig.add_subplot()
        positions = np.arange(len(labels))[::-1]
        shown = [np.asarray(v, dtype=float) if len(v) else np.array([np.nan]) for v in values]
        ax.boxplot(shown, positions=positions, orientation="horizontal", widths=0.6, showfliers=False,
                   medianprops={"color": "black"})  # fmt: skip
        for y, v in zip(positions, shown):
            offsets = (np.arange(v.size) % 7 - 3) * 0.045  # a fixed jitter: the same figure from the same values
            ax.plot(v, y + offsets, "o", ms=2.2, color=_SERIES[0][0], alpha=0.5)
        for line in lines:
            ax.axvline(line, color="grey", linestyle="--", linewidth=0.8)
        ax.set_yticks(positions, [f"{label} (n={len(v)})" for label, v in zip(labels, values)])
        ax.set_xlim(min(-0.05, *(float(np.nanmin(v)) - 0.05 for v in shown if np.isfinite(v).any())), 1.02)
        ax.set_xlabel("ICC(2,1) across versions (dashed: " + ", ".join(f"{x:g}" for x in lines) + ")")
        ax.set_title(title)
        return fig


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG, the same bytes for the same figure (no software tag).

    A figure not yet laid out is laid out by this one drawing (the cheap path of a row's PNG artifacts), then kept.
    """
    buffer = io.BytesIO()
    with _style():
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    fig.set_layout_engine("none")
    return buffer.getvalue()


def svg_text(fig: Figure) -> str:
    """A newly built figure as SVG, byte-identical across calls, processes and machines with the same matplotlib
    (a figure drawn before, as PNG, keeps that drawing's layout, which depends on its resolution).

    No date; ids come from a fixed salt; glyphs are paths. The "Creator" tag keeps matplotlib's version
    on purpose: the paths themselves can change between matplotlib versions, and the tag says why.
    """
    buffer = io.StringIO()
    with _style():
        if fig.get_layout_engine() is not None:
            _frozen(fig)
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()
