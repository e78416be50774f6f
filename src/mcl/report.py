"""``mcl report RUN_DIR``: what a run learned, as one self-contained HTML page.

Writes ``RUN_DIR/report/report.html`` (every picture inlined as a base64 PNG data URI: no network,
no external files needed) and the same PNGs beside it:

- ``training_curves.png``: loss and learning rate per epoch of every stage (``metrics.jsonl``);
- ``cluster_sizes.png`` / ``pseudo_label_groups.png``: k-means cluster sizes per stage
  (``clusters.json``) and the sizes of the pseudo-label groups each later stage trained with
  (``pseudo_labels.json``);
- ``probe_<kind>.png``: accuracy per representation x attribute for every probe kind in ``eval.json``
  (``linear``, ``knn``, and any other kind, e.g. ``zeroshot``, plotted the same way), and
  ``suppression.png``: which attribute each stage picked up (linear probe, stages and MCL);
- ``feature_map.png``: a 2-D PCA (or UMAP, ``mcl report --map umap``, with ``umap-learn``) of each
  stage's features of at most 1000 test images, coloured by each attribute;
- ``pair_similarity.png``: cosine similarities of positive pairs (two augmented views of an image)
  and negative pairs in each stage's projection space (what the loss contrasts), plus the in-group
  negatives MCL restricts a later stage to.

A missing piece (no ``eval.json`` yet, an unfinished stage, a data set that moved) is skipped with
a note in the page, never an error. Plots use matplotlib's Agg canvas directly (no pyplot, no global
backend switch).
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mcl.config import Config
from mcl.errors import ConfigError, MCLError, RunDirError, one_line
from mcl.io import load_arrays, read_json, read_jsonl, write_bytes
from mcl.rundir import RunDirectory

logger = logging.getLogger("mcl")

REPORT_DIR = "report"
REPORT_FILE = "report.html"
MAX_POINTS = 1000  # test images in the feature maps
PAIR_SAMPLES = 256  # training images whose augmented pairs are compared


@dataclass
class Picture:
    """One PNG of the report."""

    name: str
    png: bytes
    caption: str


@dataclass
class Section:
    """A titled part of the page: pictures, an optional HTML table, and notes on what is missing."""

    title: str
    pictures: list[Picture] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    table_html: str = ""


class ReportRun:
    """Read-only view of a run directory with the pieces the sections need, loaded lazily."""

    def __init__(self, root: Path, config: Config, feature_map: str = "pca") -> None:
        self.root = root
        self.config = config
        self.run = RunDirectory(root)
        self.feature_map = feature_map

    @cached_property
    def finished(self) -> list[int]:
        """Stage numbers whose final weights are recorded in the manifest (and match their checksum)."""
        from mcl.api import finished_stage_numbers

        return finished_stage_numbers(self.root, self.config)

    @cached_property
    def data(self) -> tuple[Any, str]:
        """``(image table, "")``, or ``(None, why not)`` when the run's data set cannot be read."""
        from mcl.api import load_table_for

        labels = Path(self.config.data.path or "") / "labels.csv"
        if not self.config.data.path or not labels.exists():
            return None, f"data set not found ({labels}); plots of features skipped"
        try:
            return load_table_for(self.config, progress=False), ""
        except MCLError as exc:
            return None, f"data set could not be read ({exc}); plots of features skipped"

    @cached_property
    def members(self) -> dict[int, torch.nn.Module]:
        """Each finished stage's encoder (eval mode, CPU)."""
        from mcl.api import load_member

        return {s: load_member(self.root, f"stage-{s}", self.config) for s in self.finished}


# ------------------------------------------------------------------------------------------ pictures


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def training_curves(run: ReportRun) -> Section:
    """Loss and learning rate per epoch of every stage and ensemble member."""
    section = Section("Training curves")
    curves = {d.name: read_jsonl(d / "metrics.jsonl") for d in run.run.member_dirs()}
    curves = {name: records for name, records in curves.items() if records}
    if not curves:
        section.notes.append("no metrics.jsonl with epochs yet (no stage has finished an epoch)")
        return section
    figure = Figure(figsize=(11, 3.6), layout="constrained")
    loss_axes, lr_axes = figure.subplots(1, 2)
    for name, records in curves.items():
        epochs = [r["epoch"] for r in records]
        style = "--" if name.startswith("ensemble") else "-"
        loss_axes.plot(epochs, [r["loss"] for r in records], style, marker="o", markersize=3, label=name)
        lr_axes.plot(epochs, [r["lr"] for r in records], style, marker="o", markersize=3, label=name)
    loss_axes.set(title="contrastive loss (mean over the epoch)", xlabel="epoch", ylabel="loss")
    lr_axes.set(title="learning rate at the epoch's last step", xlabel="epoch", ylabel="lr")
    for ax in (loss_axes, lr_axes):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_axes.legend(fontsize=8)
    section.pictures.append(Picture("training_curves.png", _png(figure),
                                    "Per-epoch loss and learning rate of each stage (dashed: ensemble baseline). "
                                    "Later stages' losses are not comparable to stage 1's: their negatives "
                                    "come only from the anchor's pseudo-label group."))
    return section


def _size_bars(title: str, sizes_per_stage: dict[str, list[int]], ylabel: str) -> Figure:
    figure = Figure(figsize=(3.4 * len(sizes_per_stage) + 0.5, 3.2), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(sizes_per_stage), squeeze=False)[0])
    for ax, (name, sizes) in zip(axes, sizes_per_stage.items(), strict=True):
        ordered = sorted(sizes, reverse=True)
        ax.bar(range(len(ordered)), ordered, color="tab:blue")
        ax.set(title=f"{name}: {len(ordered)} {title}", xlabel="rank (largest first)", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def cluster_sizes(run: ReportRun) -> Section:
    """k-means cluster sizes per stage and the pseudo-label group sizes of later stages."""
    section = Section("Clusters and pseudo-label groups")
    clusters, groups, merged = {}, {}, []
    for directory in run.run.member_dirs():
        if (directory / "clusters.json").exists():
            clusters[directory.name] = list(read_json(directory / "clusters.json")["sizes"])
        if (directory / "pseudo_labels.json").exists():
            info = read_json(directory / "pseudo_labels.json")
            groups[directory.name] = list(info["group_sizes"])
            merged.append(f"{directory.name}: {info.get('groups_before_merge', '?')} combined groups, "
                          f"{info.get('groups_merged', 0)} small ones merged, {info['groups']} trained with")
    if clusters:
        section.pictures.append(Picture("cluster_sizes.png", _png(_size_bars("clusters", clusters, "images")),
                                        "Sizes of the k-means clusters of each stage's embeddings of the training "
                                        "set, largest first."))
    else:
        section.notes.append("no clusters.json yet (no stage has been clustered)")
    if groups:
        section.pictures.append(Picture("pseudo_label_groups.png",
                                        _png(_size_bars("groups", groups, "images")),
                                        "Pseudo-label groups each later stage trained with (clusters of all earlier "
                                        "stages combined, small groups merged); negatives come from one group. "
                                        + "; ".join(merged) + "."))
    elif run.config.mcl.stages > 1:
        section.notes.append("no pseudo_labels.json yet (stage 2 has not started)")
    return section


# ------------------------------------------------------------------------------------------ eval.json


def _row_value(row: dict[str, Any]) -> float | None:
    """The row's score: ``accuracy`` if present, else its first other numeric field."""
    value = row.get("accuracy")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    for key, value in row.items():
        if key not in ("representation", "attribute", "probe") and isinstance(value, (int, float)) \
                and not isinstance(value, bool):
            return float(value)
    return None


def probe_matrices(rows: list[dict[str, Any]]) -> dict[str, tuple[list[str], list[str], np.ndarray]]:
    """``probe kind -> (representations, attributes, values)``; missing cells are NaN.

    Works for any probe kind: a row needs a score (``accuracy`` or another number); its column is
    ``attribute`` (else ``task``/``category``/``benchmark``), its row ``representation``.
    """
    cells: dict[str, dict[tuple[str, str], float]] = {}
    for row in rows:
        value = _row_value(row)
        if value is None:
            continue
        column = next((str(row[k]) for k in ("attribute", "task", "category", "benchmark") if k in row), "score")
        cells.setdefault(str(row.get("probe", "probe")), {})[(str(row.get("representation", "model")), column)] = value
    out = {}
    for probe, values in cells.items():
        names = list(dict.fromkeys(name for name, _ in values))
        columns = list(dict.fromkeys(column for _, column in values))
        matrix = np.array([[values.get((n, c), np.nan) for c in columns] for n in names], dtype=float)
        out[probe] = (names, columns, matrix)
    return out


def _is_fraction(matrix: np.ndarray) -> bool:
    finite = matrix[np.isfinite(matrix)]
    return finite.size > 0 and float(finite.min()) >= 0 and float(finite.max()) <= 1


def _heatmap(probe: str, names: list[str], columns: list[str], matrix: np.ndarray) -> Figure:
    fraction = _is_fraction(matrix)
    shown = 100 * matrix if fraction else matrix
    figure = Figure(figsize=(1.3 * len(columns) + 3, 0.42 * len(names) + 1.6), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(shown, cmap="viridis", aspect="auto", vmin=0 if fraction else None,
                      vmax=100 if fraction else None)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    for (i, j), value in np.ndenumerate(shown):
        if np.isfinite(value):
            dark = fraction and value > 60
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8, color="black" if dark else "white")
    figure.colorbar(image, ax=ax, label="accuracy (%)" if fraction else "score")
    ax.set_title(f"{probe} probe")
    return figure


def _suppression_bars(names: list[str], columns: list[str], matrix: np.ndarray) -> Figure | None:
    chosen = [i for i, n in enumerate(names) if n.startswith("stage-")]
    integrated = [i for i, n in enumerate(names) if n.startswith("mcl-")]
    chosen += integrated[-1:]
    if not chosen:
        return None
    figure = Figure(figsize=(1.6 * len(columns) + 3, 3.6), layout="constrained")
    ax = figure.subplots()
    width = 0.8 / len(chosen)
    for k, i in enumerate(chosen):
        ax.bar(np.arange(len(columns)) + (k - (len(chosen) - 1) / 2) * width, 100 * matrix[i], width, label=names[i])
    ax.set_xticks(range(len(columns)), columns)
    ax.set(ylabel="linear-probe accuracy (%)", ylim=(0, 105), title="which attribute each stage picked up")
    ax.legend(fontsize=8, ncols=min(4, len(chosen)))
    return figure


def _html_table(names: list[str], columns: list[str], matrix: np.ndarray) -> str:
    scale = 100 if _is_fraction(matrix) else 1
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        f"<tr><th>{html.escape(n)}</th>"
        + "".join(f"<td>{scale * v:.1f}</td>" if np.isfinite(v) else "<td>-</td>" for v in row) + "</tr>"
        for n, row in zip(names, matrix, strict=True))
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def probe_accuracy(run: ReportRun) -> Section:
    """Heatmaps of ``eval.json`` per probe kind, and the per-stage suppression picture."""
    section = Section("Per-attribute probe accuracy (eval.json)")
    path = run.root / "eval.json"
    if not path.exists():
        section.notes.append(f"no eval.json yet; run 'mcl eval {run.root}' to add the probe results")
        return section
    matrices = probe_matrices(read_json(path).get("rows", []))
    if not matrices:
        section.notes.append("eval.json has no rows with a score")
    for probe, (names, columns, matrix) in matrices.items():
        safe = "".join(ch if ch.isalnum() else "_" for ch in probe)
        section.pictures.append(Picture(f"probe_{safe}.png", _png(_heatmap(probe, names, columns, matrix)),
                                        f"{probe} probe: score per representation (rows) and attribute (columns)."))
        section.table_html += f"<h3>{html.escape(probe)}</h3>" + _html_table(names, columns, matrix)
    if "linear" in matrices and (bars := _suppression_bars(*matrices["linear"])) is not None:
        section.pictures.insert(0, Picture("suppression.png", _png(bars),
                                           "Linear-probe accuracy per attribute of each stage alone and of the "
                                           "integrated MCL representation: an attribute a stage leaves at chance is "
                                           "suppressed there; a later stage that picks it up is MCL at work."))
    return section


# ------------------------------------------------------------------------------------------ features


FEATURE_MAPS = ("pca", "umap")


def _project_2d(features: np.ndarray, method: str) -> tuple[np.ndarray, str]:
    """PCA by default: linear like the probes, deterministic and instant; UMAP (seeded) on request."""
    if method == "umap":
        import umap  # optional; checked by write_report

        return umap.UMAP(n_components=2, random_state=0, n_jobs=1).fit_transform(features), "UMAP"
    centred = features - features.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T, "PCA"


def _test_subset(table: Any, limit: int) -> Any:
    test = table.subset("test")
    if len(test) == 0:
        test = table.subset("train")
    rows = np.sort(np.random.default_rng(0).permutation(len(test))[:limit])
    return test.take(rows)


def _stage_features(run: ReportRun, images: np.ndarray) -> dict[str, np.ndarray]:
    from mcl.integration import MultistageEncoder, integrate

    members = run.members
    raw = MultistageEncoder(list(members.values())).embed_stages(images)  # each stage run once
    as_tensors = [torch.from_numpy(r) for r in raw]
    features = {f"stage-{s}": integrate([r]).numpy() for s, r in zip(members, as_tensors, strict=True)}
    if len(members) > 1:
        features[f"mcl-{len(members)}"] = integrate(as_tensors, run.config.mcl.integration).numpy()
    return features


def _colours(count: int) -> Any:
    import matplotlib

    return matplotlib.colormaps["tab20" if count > 10 else "tab10"]


def _scatter_grid(maps: dict[str, np.ndarray], table: Any, method: str) -> Figure:
    attributes = table.attribute_names()
    figure = Figure(figsize=(3.2 * len(attributes), 3.0 * len(maps) + 0.8), layout="constrained")
    axes = figure.subplots(len(maps), len(attributes), squeeze=False)
    for i, (name, points) in enumerate(maps.items()):
        for j, attribute in enumerate(attributes):
            cmap = _colours(len(table.attribute_values[attribute]))
            ax = axes[i, j]
            ax.scatter(points[:, 0], points[:, 1], color=cmap(table.attributes[attribute] % cmap.N), s=5,
                       linewidths=0)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"coloured by {attribute}")
            if j == 0:
                ax.set_ylabel(f"{name} ({method})")
            if i == len(maps) - 1:
                _value_legend(ax, table.attribute_values[attribute])
    return figure


def _value_legend(ax: Any, values: list[str]) -> None:
    """The attribute's values under its column, coloured as in :func:`_scatter_grid`."""
    from matplotlib.lines import Line2D

    cmap = _colours(len(values))
    handles = [Line2D([], [], marker="o", linestyle="", color=cmap(i % cmap.N), markersize=4)
               for i in range(len(values))]
    ax.legend(handles, values, loc="upper center", bbox_to_anchor=(0.5, -0.04), ncols=3, fontsize=7,
              frameon=False)


def feature_maps(run: ReportRun) -> Section:
    """2-D maps of each stage's features of up to :data:`MAX_POINTS` test images, per attribute."""
    section = Section("Feature maps")
    if not run.finished:
        section.notes.append("no finished stage yet")
        return section
    table, why_not = run.data
    if table is None:
        section.notes.append(why_not)
        return section
    if not table.attribute_names():
        section.notes.append("the data set has no attribute columns to colour by")
        return section
    subset = _test_subset(table, MAX_POINTS)
    maps, method = {}, "PCA"
    for name, features in _stage_features(run, np.asarray(subset.images)).items():
        maps[name], method = _project_2d(features, run.feature_map)
    section.pictures.append(Picture("feature_map.png", _png(_scatter_grid(maps, subset, method)),
                                    f"{method} of the backbone features of {len(subset)} test images; row: stage "
                                    "(last row: all stages integrated), column: the attribute giving the colour. "
                                    "Colour-sorted clusters mean the features separate that attribute."))
    return section


def _two_views(images: np.ndarray, run: ReportRun) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmented views of ``images`` (seeded: the same for every stage; the caller's RNG is left alone)."""
    from mcl.augment import build_augmentation, to_float_images

    augment = build_augmentation(run.config.augment, images.shape[1])
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        batch = to_float_images(torch.from_numpy(np.array(images, copy=True)))
        return augment(batch), augment(batch)


def _pair_cosines(model: torch.nn.Module, views: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    """Cosine similarity matrix between view A and view B in ``model``'s projection space."""
    with torch.no_grad():
        z_a, z_b = (F.normalize(model(view), dim=1) for view in views)
    return (z_a @ z_b.T).numpy()


def _stage_pseudo_labels(run: ReportRun, stage: int, rows: np.ndarray) -> np.ndarray | None:
    from mcl.stages import PSEUDO_LABELS_FILE

    path = run.run.stage_dir(stage) / PSEUDO_LABELS_FILE
    if not run.run.is_finished(path):
        return None
    return load_arrays(path)["pseudo_labels"][rows]


def pair_similarities(run: ReportRun) -> Section:
    """Histograms of positive- and negative-pair cosine similarities per stage."""
    section = Section("Positive and negative pairs")
    stages = run.finished
    table, why_not = run.data
    if not stages or table is None:
        section.notes.append("no finished stage yet" if not stages else why_not)
        return section
    train = table.subset("train")
    rows = np.sort(np.random.default_rng(1).permutation(len(train))[:PAIR_SAMPLES])
    views = _two_views(np.asarray(train.take(rows).images), run)
    positive = np.eye(len(rows), dtype=bool)
    figure = Figure(figsize=(3.6 * len(stages), 3.2), layout="constrained")
    axes = figure.subplots(1, len(stages), squeeze=False)[0]
    for ax, stage in zip(axes, stages, strict=True):
        similarity = _pair_cosines(run.members[stage], views)
        bins = np.linspace(-1, 1, 41)
        ax.hist(similarity[~positive], bins=bins, density=True, alpha=0.5, color="tab:gray", label="negatives")
        labels = _stage_pseudo_labels(run, stage, rows) if stage > 1 else None
        if labels is not None:
            same = (labels[:, None] == labels[None, :]) & ~positive
            ax.hist(similarity[same], bins=bins, density=True, histtype="step", color="tab:orange", linewidth=1.5,
                    label="in-group negatives")
        ax.hist(similarity[positive], bins=bins, density=True, alpha=0.6, color="tab:green", label="positives")
        ax.set(title=f"stage-{stage}", xlabel="cosine similarity", ylabel="density")
        ax.legend(fontsize=7)
    section.pictures.append(Picture("pair_similarity.png", _png(figure),
                                    f"Cosine similarity in each stage's projection space (what the loss sees) of "
                                    f"{len(rows)} training images: positives are two augmented views of one image, "
                                    "negatives views of different images; from stage 2 on, in-group negatives are "
                                    "the ones MCL contrasts against (same pseudo-label)."))
    return section


SECTIONS: list[Callable[[ReportRun], Section]] = [
    training_curves, cluster_sizes, probe_accuracy, feature_maps, pair_similarities,
]


# ------------------------------------------------------------------------------------------ HTML

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
.note { color: #8a5a00; background: #fff6e0; padding: 0.4em 0.8em; border-radius: 4px; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; } th { background: #f4f4f4; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; } dt { font-weight: bold; }
"""


def _summary(run: ReportRun) -> str:
    config = run.config
    items = {
        "run directory": str(run.root.resolve()),
        "data": f"{config.data.source} ({config.data.path})",
        "model": f"{config.model.backbone}, width {config.model.width}",
        "objective": f"{config.objective.name}, temperature {config.objective.temperature}",
        "MCL": f"{config.mcl.stages} stages, K={config.mcl.clusters}, negatives={config.mcl.negatives}, "
               f"init={config.mcl.init}",
        "training": f"{config.train.epochs} epochs per stage, batch {config.train.batch_size}, lr {config.train.lr}",
        "finished stages": ", ".join(f"stage-{s}" for s in run.finished) or "none yet",
    }
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items.items()) + "</dl>"


def _section_html(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
    for picture in section.pictures:
        data = base64.b64encode(picture.png).decode()
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(picture.name)}">'
                     f"<figcaption>{html.escape(picture.caption)}</figcaption></figure>")
    parts.append(section.table_html)
    return "\n".join(parts)


def render_html(run: ReportRun, sections: list[Section]) -> str:
    """The whole page: summary, then every section (no external resources)."""
    body = "\n".join(_section_html(section) for section in sections)
    title = f"MCL report: {run.root.resolve().name}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{_summary(run)}\n{body}\n"
            "</body></html>\n")


def _build(section: Callable[[ReportRun], Section], run: ReportRun) -> Section:
    """One section; a piece the report cannot draw (e.g. a model kind it does not know) becomes a note.

    A damaged run directory (:class:`RunDirError`) is still an error: the page would misreport it.
    """
    name = section.__name__.replace("_", " ")
    logger.info("report: %s", name)
    try:
        return section(run)
    except RunDirError:
        raise
    except Exception as exc:  # the report is a viewer: one failing plot must not hide the others
        logger.debug("report section %s failed", name, exc_info=True)
        reason = one_line(exc)[:300]
        return Section(name.capitalize(), notes=[f"could not be drawn ({type(exc).__name__}: {reason})"])


def write_report(run_dir: str | Path, feature_map: str = "pca") -> Path:
    """Write ``RUN_DIR/report/report.html`` and its PNGs (atomically); returns the HTML's path.

    ``feature_map``: ``pca`` or ``umap`` (needs ``umap-learn``) for ``feature_map.png``.
    """
    from mcl.api import read_run_config

    if feature_map not in FEATURE_MAPS:
        raise ConfigError(f"feature map {feature_map!r}: expected one of {', '.join(FEATURE_MAPS)}")
    if feature_map == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            raise ConfigError("--map umap: the 'umap-learn' package is not installed "
                              "(pip install umap-learn)") from None
    root = Path(run_dir)
    run = ReportRun(root, read_run_config(root), feature_map)
    run.run.read_manifest()  # a run directory of another format version is an error, not a page
    sections = [_build(section, run) for section in SECTIONS]
    out = root / REPORT_DIR
    for picture in (p for section in sections for p in section.pictures):
        write_bytes(out / picture.name, picture.png)
    write_bytes(out / REPORT_FILE, render_html(run, sections).encode())
    return out / REPORT_FILE
