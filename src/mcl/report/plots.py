"""The report's matplotlib figures, from plain arrays (no run directory here).

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` objects: no pyplot, no global
backend switch) and turned into PNG bytes by :func:`png`.

- :func:`training_curves`: loss and lr per epoch of each member (baselines dashed);
- :func:`size_bars`: cluster or group sizes per member, largest first;
- :func:`heatmap`: score per representation (rows) x column (attribute), in % for fractions;
- :func:`claim_bars`: the per-attribute bar chart the headline rests on (stages, ``mcl-k`` and the
  baseline: ``ensemble-k`` or ``finetune-k``, hatched in the color of the MCL representation it is
  compared with), with each attribute's chance level as a dashed line;
- :func:`scatter_grid`: 2-D maps (representation x attribute), each with a legend of the values;
- :func:`pair_histograms`: cosine similarities of positive, negative and in-group negative pairs, on
  the range the similarities span (shared by the panels).

Accuracies measured on ``n`` test images (``eval.json``'s ``test_rows``) carry their 95% Wilson
interval (:func:`mcl.report.findings.binomial_interval`, the headline's): error bars on the claim
chart, ``± half-width`` in the heatmap's cells. Titles longer than their axes are wrapped
(:func:`wrapped`), so none is clipped at the figure's edge.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from mcl.report.findings import binomial_interval
from mcl.report.recipe import BASELINES, ENSEMBLE, FINETUNE, counterpart, probe_label


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (100 dpi)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


TITLE_CHARS_PER_INCH = 9  # characters of a 12 pt title per inch of axes width (matplotlib's default font)
LEGEND_FONT = 8  # points: the smallest legend text on the report's figures


def wrapped(title: str, inches: float) -> str:
    """``title`` broken into lines that fit ``inches`` of width (titles are centred: a long one is cut at both ends)."""
    return textwrap.fill(title, width=max(20, int(inches * TITLE_CHARS_PER_INCH)))


def interval_errors(accuracies: np.ndarray, n: int | None) -> np.ndarray | None:
    """``(2, len)`` distances below/above each accuracy to its 95% Wilson bounds (None without ``n``; NaN kept)."""
    if not n:
        return None
    values = np.asarray(accuracies, dtype=float)
    bounds = np.array([binomial_interval(v, n) if np.isfinite(v) else (np.nan, np.nan) for v in values]).reshape(-1, 2)
    return np.stack([values - bounds[:, 0], bounds[:, 1] - values])


def half_width(accuracy: float, n: int | None) -> float | None:
    """Half the width of the accuracy's 95% Wilson interval (None without ``n``)."""
    if not n:
        return None
    low, high = binomial_interval(accuracy, n)
    return (high - low) / 2


def training_curves(curves: Mapping[str, list[dict[str, Any]]]) -> Figure:
    """Loss and learning rate per epoch of each member (dashed: baseline members, ensemble-k and finetune-k)."""
    figure = Figure(figsize=(11, 3.6), layout="constrained")
    loss_axes, lr_axes = figure.subplots(1, 2)
    for name, records in curves.items():
        epochs = [r["epoch"] for r in records]
        style = "--" if counterpart(name) is not None else "-"
        loss_axes.plot(epochs, [r["loss"] for r in records], style, marker="o", markersize=3, label=name)
        lr_axes.plot(epochs, [r["lr"] for r in records], style, marker="o", markersize=3, label=name)
    loss_axes.set(title="contrastive loss (mean over the epoch)", xlabel="epoch", ylabel="loss")
    lr_axes.set(title="learning rate at the epoch's last step", xlabel="epoch", ylabel="lr")
    for ax in (loss_axes, lr_axes):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_axes.legend(fontsize=8)
    return figure


def size_bars(what: str, sizes_per_member: Mapping[str, list[int]], ylabel: str) -> Figure:
    """One bar chart per member of ``what`` (clusters, groups) sizes, largest first."""
    figure = Figure(figsize=(3.4 * len(sizes_per_member) + 0.5, 3.2), layout="constrained")
    axes = figure.subplots(1, len(sizes_per_member), squeeze=False)[0]
    for ax, (name, sizes) in zip(axes, sizes_per_member.items(), strict=True):
        ordered = sorted(sizes, reverse=True)
        ax.bar(range(len(ordered)), ordered, color="tab:blue")
        ax.set(title=f"{name}: {len(ordered)} {what}", xlabel="rank (largest first)", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def is_fraction(matrix: np.ndarray) -> bool:
    """Whether every finite score lies in [0, 1] (shown as %)."""
    finite = matrix[np.isfinite(matrix)]
    return finite.size > 0 and float(finite.min()) >= 0 and float(finite.max()) <= 1


def column_label(column: str, chance: Mapping[str, float] | None) -> str:
    """``color`` or ``color (chance 33%)`` when the column's chance level is known."""
    level = (chance or {}).get(column)
    return column if level is None else f"{column} (chance {100 * level:.0f}%)"


def heatmap(probe: str, names: list[str], columns: list[str], matrix: np.ndarray,
            chance: Mapping[str, float] | None = None, n: int | None = None) -> Figure:
    """Scores per representation (rows) and column, with their values written in the cells.

    ``n``: test images behind each accuracy; a classification probe's cells (``chance`` given, scores
    in [0, 1]) then read ``74.1 ± 2.7``, the half-width of the 95% Wilson interval.
    """
    fraction = is_fraction(matrix)
    shown = 100 * matrix if fraction else matrix
    with_interval = bool(n) and fraction and chance is not None
    figure = Figure(figsize=((2.2 if with_interval else 1.5) * len(columns) + 3, 0.42 * len(names) + 1.8),
                    layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(shown, cmap="viridis", aspect="auto", vmin=0 if fraction else None,
                      vmax=100 if fraction else None)
    ax.set_xticks(range(len(columns)), [column_label(c, chance) for c in columns], rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    for (i, j), value in np.ndenumerate(shown):
        if np.isfinite(value):
            dark = fraction and value > 60
            text = f"{value:.1f}"
            if with_interval:
                text += f" ± {100 * half_width(float(matrix[i, j]), n):.1f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if dark else "white")
    figure.colorbar(image, ax=ax, label="accuracy (%)" if fraction else "score")
    ax.set_title(f"{probe} probe" + (f" (± 95% interval, {n} test images)" if with_interval else ""))
    return figure


def claim_rows(names: list[str], k: int | None = None, baseline: str | None = ENSEMBLE) -> list[int]:
    """Rows of the claim chart: every ``stage-s``, then ``mcl-k`` and ``<baseline>-k``.

    ``k``: the headline's (:class:`mcl.report.findings.Claim`), else the last ``mcl-k``. With the
    ``finetune`` baseline every ``mcl-k`` and every ``finetune-k`` (the headline compares each pair).
    """
    chosen = [i for i, n in enumerate(names) if n.startswith("stage-")]
    integrated = [n for n in names if n.startswith("mcl-")]
    if baseline == FINETUNE:
        return chosen + [names.index(n) for n in integrated] + [
            i for i, n in enumerate(names) if n.startswith(f"{FINETUNE}-")]
    if k is None and integrated:
        k = int(integrated[-1].split("-", 1)[1])
    if k is not None:
        chosen += [names.index(n) for n in (f"mcl-{k}", f"{baseline}-{k}") if n in names]
    return chosen


def claim_bars(probe: str, names: list[str], columns: list[str], matrix: np.ndarray,
               chance: Mapping[str, float], k: int | None = None, baseline: str | None = ENSEMBLE,
               n: int | None = None) -> Figure | None:
    """Accuracy per attribute of each stage, ``mcl-k`` and the baseline's rows (:func:`claim_rows`), chance dashed.

    A baseline bar (``ensemble-k``, ``finetune-k``) is hatched, in the color of the representation it
    is compared with (:func:`mcl.report.recipe.counterpart`) when that one is on the chart too. ``n``: test
    images behind each accuracy; every bar then carries its 95% Wilson interval as an error bar.
    """
    chosen = claim_rows(names, k, baseline)
    if not chosen:
        return None
    width_inches = 1.8 * len(columns) + 3
    figure = Figure(figsize=(width_inches, 3.8), layout="constrained")
    ax = figure.subplots()
    width = 0.8 / len(chosen)
    palette = iter(f"C{n}" for n in range(len(chosen)))
    bar_colors = {names[i]: next(palette) for i in chosen if counterpart(names[i]) is None}
    for position, i in enumerate(chosen):
        name = names[i]
        baseline_row = any(name.startswith(f"{b}-") for b in BASELINES)
        if name not in bar_colors:  # a baseline bar: its counterpart's color, or one of its own
            bar_colors[name] = bar_colors.get(str(counterpart(name))) or next(palette)
        errors = interval_errors(matrix[i], n)
        ax.bar(np.arange(len(columns)) + (position - (len(chosen) - 1) / 2) * width, 100 * matrix[i], width,
               label=name, hatch="//" if baseline_row else None, color=bar_colors[name],
               edgecolor="white" if baseline_row else None, yerr=None if errors is None else 100 * errors,
               error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "black"})
    for j, column in enumerate(columns):
        if column in chance:
            ax.hlines(100 * chance[column], j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1.2,
                      label="chance" if j == min(c for c, name in enumerate(columns) if name in chance) else None)
    ax.set_xticks(range(len(columns)), columns)
    title = f"{probe_label(probe)} accuracy per attribute: " + ", ".join(
        ["each stage"] + [names[i] for i in chosen if not names[i].startswith("stage-")])
    if n:
        title += f" (bars: 95% interval, {n} test images)"
    # the legend takes ~1.5 in beside the axes: the title wraps to what is left
    ax.set(ylabel=f"{probe_label(probe)} accuracy (%)", ylim=(0, 105), title=wrapped(title, width_inches - 2.3))
    ax.legend(fontsize=LEGEND_FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def colors(count: int) -> Any:
    """The color map of an attribute with ``count`` values."""
    import matplotlib

    return matplotlib.colormaps["tab20" if count > 10 else "tab10"]


def scatter_grid(maps: Mapping[str, np.ndarray], attributes: Mapping[str, np.ndarray],
                 values: Mapping[str, list[str]], method: str) -> Figure:
    """One 2-D map per representation (row) and attribute (column), colored by the attribute's value.

    Every map carries its own legend (value -> color), so each picture reads on its own.
    """
    names = list(attributes)
    figure = Figure(figsize=(5.0 * len(names), 3.2 * len(maps) + 0.4), layout="constrained")
    axes = figure.subplots(len(maps), len(names), squeeze=False)
    for i, (representation, points) in enumerate(maps.items()):
        for j, attribute in enumerate(names):
            cmap = colors(len(values[attribute]))
            ax = axes[i, j]
            ax.scatter(points[:, 0], points[:, 1], color=cmap(attributes[attribute] % cmap.N), s=5, linewidths=0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(wrapped(f"{representation}, colored by {attribute}", 3.0), fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{representation} ({method})")
            _value_legend(ax, attribute, values[attribute])
    return figure


def _value_legend(ax: Any, attribute: str, values: list[str]) -> None:
    """The attribute's values beside the map, colored as in :func:`scatter_grid`."""
    cmap = colors(len(values))
    handles = [Line2D([], [], marker="o", linestyle="", color=cmap(i % cmap.N), markersize=6)
               for i in range(len(values))]
    ax.legend(handles, values, title=attribute, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=LEGEND_FONT,
              title_fontsize=LEGEND_FONT + 1, frameon=False, ncols=1 if len(values) <= 10 else 2,
              handletextpad=0.3, labelspacing=0.3)


def pair_histograms(similarities: Mapping[str, tuple[np.ndarray, np.ndarray | None]], positive: str,
                    negative: str) -> Figure:
    """Per member: histograms of positive-pair, negative-pair and (when given) in-group negative cosines.

    ``similarities``: ``member -> (square cosine matrix, same-group mask or None)``; the diagonal
    holds the positive pairs.
    """
    figure = Figure(figsize=(3.6 * len(similarities), 3.2), layout="constrained")
    axes = figure.subplots(1, len(similarities), squeeze=False)[0]
    bins = np.linspace(*similarity_range([s for s, _ in similarities.values()]), 41)
    for ax, (name, (similarity, same_group)) in zip(axes, similarities.items(), strict=True):
        diagonal = np.eye(len(similarity), dtype=bool)
        ax.hist(similarity[~diagonal], bins=bins, density=True, alpha=0.5, color="tab:gray", label=negative)
        if same_group is not None:
            ax.hist(similarity[same_group & ~diagonal], bins=bins, density=True, histtype="step",
                    color="tab:orange", linewidth=1.5, label=f"in-group {negative}")
        ax.hist(similarity[diagonal], bins=bins, density=True, alpha=0.6, color="tab:green", label=positive)
        ax.set(title=name, xlabel="cosine similarity", ylabel="density", xlim=(bins[0], bins[-1]))
        ax.legend(fontsize=LEGEND_FONT)
    return figure


def similarity_range(matrices: list[np.ndarray]) -> tuple[float, float]:
    """The span of every finite cosine in ``matrices`` plus 2% of it each side (within [-1, 1]; never empty).

    Contrastive features often put all pairs in 0.9-1.0: a fixed -1..1 axis would squeeze them into two bins.
    """
    finite = np.concatenate([m[np.isfinite(m)].ravel() for m in matrices]) if matrices else np.empty(0)
    if finite.size == 0:
        return -1.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    pad = max(0.02 * (high - low), 1e-3)
    return max(-1.0, low - pad), min(1.0, high + pad)
