"""The report's sections: each reads what it needs from a :class:`ReportRun` and draws its pictures.

Which sections a run gets depends on its modality, through :data:`SECTIONS` (``modality.name ->
sections``): image runs compare two augmented views of an image, image-text runs an image and its
caption. A section that has nothing to show yet (no ``eval.json``, no finished stage, a data set
that moved) says so in a note; any other failure is an error, never hidden.

Sections:

- ``training_curves``: ``training_curves.png``, loss and learning rate per epoch of every member;
- ``cluster_sizes``: ``cluster_sizes.png`` and ``pseudo_label_groups.png``;
- ``probe_accuracy``: ``suppression.png`` (the chart the headline rests on: each stage, ``mcl-k``
  and the baseline, ``ensemble-k`` or ``finetune-k``, per attribute, with chance lines) and
  ``probe_<kind>.png`` per probe kind of ``eval.json`` (``linear``, ``knn``; ``zeroshot``, ``paired``,
  retrieval for image-text runs);
- ``feature_maps``: ``feature_map.png``, a 2-D PCA (or UMAP) of each stage's features (and the last
  finetune-k's) of at most :data:`MAX_POINTS` test images, colored by each attribute;
- ``view_pairs`` (images) / ``caption_pairs`` (image-text): ``pair_similarity.png``, cosines of the
  pairs each stage's (and each finetune-k's) loss contrasts.

What the texts say about the baseline follows the run's :attr:`ReportRun.recipe`.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

import mcl.report.plots as plots
from mcl.data.table import ImageTable
from mcl.evaluation.stage_diagnostics import COLUMNS, recorded_diagnostics
from mcl.report.data import ReportRun
from mcl.report.findings import CLASSIFICATION_PROBES, find_claim, probe_matrices, sample_count
from mcl.report.recipe import ENSEMBLE, FINETUNE, Recipe, probe_label

logger = logging.getLogger("mcl")

MAX_POINTS = 1000  # test images in the feature maps
PAIR_SAMPLES = 256  # training images whose pairs are compared
FEATURE_MAPS = ("pca", "umap")


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


SectionFunction = Callable[[ReportRun], Section]


def training_curves(run: ReportRun) -> Section:
    """Loss and learning rate per epoch of every stage and ensemble member."""
    section = Section("Training curves")
    curves = run.metrics()
    if not curves:
        section.notes.append("no training metrics yet (no stage has finished an epoch)")
        return section
    section.pictures.append(Picture("training_curves.png", plots.png(plots.training_curves(curves)),
                                    _curves_caption(run.recipe, "stage-1" in run.pseudo_label_groups())))
    return section


def _curves_caption(recipe: Recipe, stage1_grouped: bool) -> str:
    """What the curves show; ``stage1_grouped``: stage 1 trained with pseudo-labels too (stage 0's clusters)."""
    dashed = {ENSEMBLE: " (dashed: ensemble baseline)",
              FINETUNE: " (dashed: finetune-k, plain fine-tuning on random batches for as many steps)"}
    text = f"Per-epoch loss and learning rate of each stage{dashed.get(recipe.baseline or '', '')}. "
    if stage1_grouped:
        other = "finetune-k's" if recipe.baseline == FINETUNE else "an unsupervised run's"
        return text + (f"The stages' losses are not comparable to {other}: their negatives come only from the "
                       "anchor's pseudo-label group (stage 1's from stage 0's clusters).")
    return text + ("Later stages' losses are not comparable to stage 1's: their negatives come only from the "
                   "anchor's pseudo-label group.")


def cluster_sizes(run: ReportRun) -> Section:
    """k-means cluster sizes per stage and the pseudo-label group sizes of later stages."""
    section = Section("Clusters and pseudo-label groups")
    clusters, groups = run.cluster_sizes(), run.pseudo_label_groups()
    if clusters:
        section.pictures.append(Picture("cluster_sizes.png", plots.png(plots.size_bars("clusters", clusters, "images")),
                                        "Sizes of the k-means clusters of each stage's embeddings of the training "
                                        "set, largest first."))
    else:
        section.notes.append("no clusters yet (no stage has been clustered)")
    if groups:
        merged = "; ".join(f"{name}: {info.get('groups_before_merge', '?')} combined groups, "
                           f"{info.get('groups_merged', 0)} small ones merged, {info['groups']} trained with"
                           for name, info in groups.items())
        sizes = {name: list(info["group_sizes"]) for name, info in groups.items()}
        figure = plots.size_bars("groups", sizes, "images")
        section.pictures.append(Picture("pseudo_label_groups.png", plots.png(figure),
                                        "Pseudo-label groups of each stage that trained with them (the clusters of "
                                        "all earlier stages combined, small groups merged); negatives come from one "
                                        f"group. "
                                        f"{merged}."))
    elif run.config.mcl.stages > 1:
        section.notes.append("no pseudo-label groups yet (stage 2 has not started)")
    section.table_html = _diagnostics_table(run)
    return section


def _diagnostics_table(run: ReportRun) -> str:
    """Each finished stage's groups trained, negatives per anchor and label-free diagnostics (mcl.diagnostics)."""
    rows = recorded_diagnostics(run.run, run.config, run.finished)
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(title)}</th>" for title in COLUMNS.values())
    body = "".join(
        f"<tr><th>stage-{row['stage']}</th>" + "".join(
            "<td>-</td>" if row.get(key) is None else
            f"<td>{row[key]:d}</td>" if isinstance(row[key], int) else f"<td>{row[key]:.3g}</td>" for key in COLUMNS)
        + "</tr>" for row in rows)
    return ("<p>Stage diagnostics (label-free): pseudo-label groups that trained, negatives per anchor, and how "
            f"new each stage's features are.</p><table><tr><th></th>{head}</tr>{body}</table>")


def _html_table(names: list[str], columns: list[str], matrix: np.ndarray) -> str:
    scale = 100 if plots.is_fraction(matrix) else 1
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        f"<tr><th>{html.escape(n)}</th>"
        + "".join(f"<td>{scale * v:.1f}</td>" if np.isfinite(v) else "<td>-</td>" for v in row) + "</tr>"
        for n, row in zip(names, matrix, strict=True))
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def probe_accuracy(run: ReportRun) -> Section:
    """The claim chart (stages, mcl-k, ensemble-k, chance) and a heatmap per probe kind of ``eval.json``."""
    section = Section("Per-attribute probe accuracy (eval.json)")
    evaluation = run.evaluation
    if evaluation is None:
        section.notes.append(f"no eval.json yet; run 'mcl eval {run.root}' to add the probe results")
        return section
    warnings = evaluation.warnings()
    if warnings:
        section.title += ": " + " and ".join(w.split(":", 1)[0] for w in warnings)  # STALE / PARTIAL
        section.notes += warnings
    matrices = probe_matrices(evaluation.result.get("rows", []))
    if not matrices:
        section.notes.append("eval.json has no rows with a score")
    chance = run.chance()
    n = sample_count(evaluation.result)
    for probe, (names, columns, matrix) in matrices.items():
        safe = "".join(ch if ch.isalnum() else "_" for ch in probe)
        with_chance = chance if probe in CLASSIFICATION_PROBES else None
        section.pictures.append(Picture(f"probe_{safe}.png",
                                        plots.png(plots.heatmap(probe, names, columns, matrix, with_chance, n)),
                                        f"{probe} probe: score per representation (rows) and attribute (columns)."))
        section.table_html += f"<h3>{html.escape(probe)}</h3>" + _html_table(names, columns, matrix)
    recipe = run.recipe
    claim = None if recipe.fine_tuning else find_claim(evaluation.result, chance)
    if recipe.probe in matrices and (bars := plots.claim_bars(recipe.probe, *matrices[recipe.probe], chance,
                                                              claim.k if claim else None,
                                                              recipe.baseline, n)) is not None:
        interval = f" Error bars: the 95% Wilson interval of each accuracy on {n} test images." if n else ""
        section.pictures.insert(0, Picture("suppression.png", plots.png(bars), _claim_caption(recipe) + interval))
    return section


def _claim_caption(recipe: Recipe) -> str:
    """The claim chart's caption: what its bars are, for the run's baseline."""
    probe = probe_label(recipe.probe)
    chance = "the dashed line is the attribute's chance level (1 / number of its values)"
    if recipe.fine_tuning:
        return (f"{probe.capitalize()} accuracy per attribute of stage 0 (the model MCL fine-tunes), of each stage "
                "alone, of mcl-k (stages 1..k integrated) and of finetune-k (plain fine-tuning from where stage 1 "
                "starts, on random batches, with the same locks, learning rate, data and as many steps as stages "
                "1..k; one model, where mcl-k integrates k). Each finetune-k bar is hatched in the color of the "
                f"MCL representation it is compared with (finetune-1: stage-1, finetune-k: mcl-k); {chance}. MCL "
                "beat plain fine-tuning on an attribute where the solid bar stands above the hatched bar of its "
                "color.")
    text = (f"{probe.capitalize()} accuracy per attribute of each stage alone, of mcl-k (stages 1..k integrated)")
    if recipe.baseline == ENSEMBLE:
        text += (" and of ensemble-k (k seeds of stage 1 integrated: same size and training compute, hatched in "
                 "mcl-k's color)")
    elif recipe.baseline == FINETUNE:
        text += (" and of finetune-k (stage 1's training continued on random batches for as many steps as stages "
                 "1..k: one model, hatched in the color of the one it is compared with)")
    text += (f"; {chance}. An attribute a stage leaves near its chance line is suppressed there; mcl-k well above "
             "it")
    if recipe.baseline is not None:
        text += f" where {recipe.baseline}-k is not"
    return text + " means a later stage picked up what stage 1 suppressed."


def _project_2d(features: np.ndarray, method: str) -> tuple[np.ndarray, str]:
    """PCA by default: linear like the probes, deterministic and instant; UMAP (seeded) on request."""
    if method == "umap":
        import umap  # optional; checked by write_report

        return umap.UMAP(n_components=2, random_state=0, n_jobs=1).fit_transform(features), "UMAP"
    centered = features - features.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    return centered @ components[:2].T, "PCA"


def _sample(table: ImageTable, split: str, limit: int, seed: int) -> ImageTable:
    rows = np.sort(np.random.default_rng(seed).permutation(len(table.subset(split)))[:limit])
    return table.subset(split).take(rows)


def feature_maps(run: ReportRun) -> Section:
    """2-D maps of each stage's (and all stages') features of up to :data:`MAX_POINTS` test images, per attribute."""
    section = Section("Feature maps")
    if not run.finished:
        section.notes.append("no finished stage yet")
        return section
    table, why_not = run.table
    if table is None:
        section.notes.append(why_not)
        return section
    if not table.attribute_names():
        section.notes.append("the data set has no attribute columns to color by")
        return section
    subset = _sample(table, "test" if len(table.subset("test")) else "train", MAX_POINTS, 0)
    maps, method = {}, "PCA"
    for name, features in run.features(np.asarray(subset.images)).items():
        maps[name], method = _project_2d(features, run.feature_map)
    figure = plots.scatter_grid(maps, subset.attributes, subset.attribute_values, method)
    what = "image embeddings" if run.modality.name == "multimodal" else "backbone features"
    rows = "each stage alone, then all stages integrated"
    if any(name.startswith(f"{FINETUNE}-") for name in maps):
        rows += f", last row: {list(maps)[-1]}, the plain fine-tuning baseline after as many steps"
    else:
        rows = rows.replace(", then", ", last row:")
    section.pictures.append(Picture("feature_map.png", plots.png(figure),
                                    f"{method} of the {what} of {len(subset)} test images; row: representation "
                                    f"({rows}), column: the attribute giving the color (legend beside each map). "
                                    "Points sorted into one-color clusters mean the features separate that "
                                    "attribute."))
    return section


def _view_cosines(run: ReportRun, member: str, images: np.ndarray) -> np.ndarray:
    """Cosines between two augmented views (seeded: the same for every stage) in the member's projection space."""
    from mcl.augment import build_augmentation, to_float_images

    augment = build_augmentation(run.config.augment, images.shape[1])
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # the caller's RNG is left alone
        torch.manual_seed(0)
        batch = to_float_images(torch.from_numpy(np.array(images, copy=True)))
        model = run.member(member)
        z_a, z_b = (F.normalize(model(view), dim=1) for view in (augment(batch), augment(batch)))
    return (z_a @ z_b.T).numpy()


def _caption_cosines(run: ReportRun, member: str, table: ImageTable) -> np.ndarray:
    """Cosines between each image and every caption in the member's joint embedding space."""
    from mcl.embedding import encode_images, encode_texts

    model = run.member(member)
    return (encode_images(model, table.images) @ encode_texts(model, list(table.captions or [])).T).numpy()


def _pair_section(run: ReportRun, pairs: str, positive: str, negative: str, caption: str,
                  cosines: Callable[[str, ImageTable], np.ndarray]) -> Section:
    section = Section(f"Positive and negative pairs ({pairs})")
    if not run.finished:  # before reading the data set: nothing to compare without a stage
        section.notes.append("no finished stage yet")
        return section
    table, why_not = run.table
    if table is None:
        section.notes.append(why_not)
        return section
    rows = np.sort(np.random.default_rng(1).permutation(len(table.subset("train")))[:PAIR_SAMPLES])
    sample = table.subset("train").take(rows)
    similarities = {}
    for member in run.stage_members() + run.baseline_members():
        labels = run.pseudo_labels(member, rows) if member.startswith("stage-") else None
        same = None if labels is None else labels[:, None] == labels[None, :]
        similarities[member] = (cosines(member, sample), same)
    figure = plots.pair_histograms(similarities, positive, negative)
    if run.baseline_members():
        caption += " finetune-k panels: the plain fine-tuning baseline, no groups (its batches are random)."
    section.pictures.append(Picture("pair_similarity.png", plots.png(figure), caption.format(n=len(rows))))
    return section


def view_pairs(run: ReportRun) -> Section:
    """Image runs: cosines of two augmented views of one image (positives) and of different images."""
    return _pair_section(
        run, "two views", "positives", "negatives",
        "Cosine similarity in each stage's projection space (what the loss sees) of {n} training images: "
        "positives are two augmented views of one image, negatives views of different images; from stage 2 on, "
        "in-group negatives are the ones MCL contrasts against (same pseudo-label).",
        lambda member, sample: _view_cosines(run, member, np.asarray(sample.images)))


def caption_pairs(run: ReportRun) -> Section:
    """Image-text runs: cosines of an image and its own caption (positives) and other images' captions."""
    return _pair_section(
        run, "image and caption", "image, own caption", "other captions",
        "Cosine similarity in each stage's joint embedding space (what the CLIP loss sees) of {n} training "
        "images: positives pair an image with its own caption, negatives with other images' captions; in-group "
        "negatives are the ones MCL contrasts against (same pseudo-label).",
        lambda member, sample: _caption_cosines(run, member, sample))


SECTIONS: dict[str, tuple[SectionFunction, ...]] = {
    "images": (training_curves, cluster_sizes, probe_accuracy, feature_maps, view_pairs),
    "multimodal": (training_curves, cluster_sizes, probe_accuracy, feature_maps, caption_pairs),
}


def sections_for(run: ReportRun) -> tuple[SectionFunction, ...]:
    """The sections of the run's modality (see :data:`SECTIONS`)."""
    return SECTIONS[run.modality.name]
