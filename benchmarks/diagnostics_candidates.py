"""Group-aware candidates for a label-free signal of a stage's gain, tried on the validation grid's runs.

MCL draws an anchor's negatives only from its own pseudo-label group, so stage s can only learn what
separates samples *inside* a group of the earlier stages. The candidates here measure that directly, from
the runs' recorded stage weights (re-embedded, no training) and recorded pseudo-labels:

- ``ingroup_match_gain`` (single stages) / ``ingroup_match_gain_mcl`` (integrated ``mcl-s`` vs ``mcl-(s-1)``):
  two augmented views (the run's own augmentation, as ``mcl eval``'s label-free ``view-match@1`` row) of
  each image; the share of view-A embeddings whose nearest view-B embedding *among the members of its own
  group* is its own other view; stage s's share minus stage s-1's (resp. the integrated representations');
- ``ingroup_room``: 1 - the in-group match share of ``mcl-(s-1)``: what is left to learn inside the groups
  (known before stage s trains);
- ``view_match_gain_mcl``: the same match over all images (no group restriction), ``mcl-s`` minus ``mcl-(s-1)``;
- ``group_explained`` / ``group_explained_mcl``: between-group / total variance of stage s-1's (resp. stages
  1..s-1's, standardised and concatenated) embeddings under stage s's groups (known before stage s trains);
- ``silhouette_previous``: the silhouette of stage s's groups in stage s-1's embeddings (before stage s);
- ``reliable_novelty``: the share of stage s's variance that a ridge map from stages 1..s-1 does not predict
  *and* that two augmented views agree on (:func:`mcl.diagnostics.view_novelty`, here on a random half);
  ``within_reliable_novelty``: the same after removing each group's mean on both sides (new, view-stable
  variation inside the groups);
- ``ingroup_rank_gain_mcl``: the drop from ``mcl-(s-1)`` to ``mcl-s`` of the mean share of an anchor's in-group
  other views that are nearer to it than its own other view (a smooth ``ingroup_match_gain_mcl``);
- ``within_rank_gain``: RankMe of stage s's standardised embeddings after removing each group's mean,
  minus the same for stage s-1;
- ``ingroup_knn_change``: 1 - the mean share of an image's 10 nearest in-group neighbours that are the
  same in stage s and stage s-1 (new in-group structure).

Each is computed on the run's training images with the recorded groups (``train``) and on its held-out test
images (``test``; an image's group: the k-means clusters of the earlier stages by nearest centroid, combined,
mapped to the merged training group of the same code, else to the group of its nearest training image).
Phase ``embed`` caches every run's stage embeddings in ``ROOT/candidates/RUN.npz``; phase ``analyse``
correlates the candidates with the low-noise gain (``gain_pool``) of the validation, chooses the best on the
selection sets only, and writes ``benchmarks/results/diagnostics_candidates.md``.

    python benchmarks/diagnostics_candidates.py embed --root /tmp/mcl-validation     # ~20 s per run
    python benchmarks/diagnostics_candidates.py analyse --root /tmp/mcl-validation
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

CACHE = "candidates"  # ROOT/candidates/RUN.npz
# candidates are cached per version of the code that computes them (this file up to the analysis, and
# mcl.diagnostics, which view_novelty_mcl calls; the newline keeps this line's own mention of the marker from
# ending the hashed text here)
VERSION = hashlib.sha256((Path(__file__).read_text().split("\ndef records_with_candidates")[0]
                          + (REPO / "src" / "mcl" / "diagnostics.py").read_text()).encode()).hexdigest()[:12]
NEIGHBOURS = 10


def cache_file(run: Path) -> Path:
    """Where :func:`embed_run` writes a run's embeddings (beside the runs, not inside them)."""
    return run.parents[1] / CACHE / f"{run.name}.npz"


def embed_run(run: Path) -> None:
    """``ROOT/candidates/RUN.npz``: every stage's features of the train/test images, clean and two views."""
    import torch

    from mcl.api import load_member, read_run_config
    from mcl.data import load_table
    from mcl.evaluation.runner import two_views
    from mcl.integration import MultistageEncoder

    torch.set_num_threads(1)
    config = read_run_config(run)
    table = load_table(config.data.path, config.data.image_size, progress=False)
    out = {}
    images = {}
    for split in ("train", "test"):
        part = table.subset(split).images
        view_a, view_b = two_views(config, part)
        images[split] = {"clean": part, "a": view_a, "b": view_b}
    stage = 1
    while (run / f"stage-{stage}" / "encoder.safetensors").exists():
        encoder = MultistageEncoder([load_member(run, f"stage-{stage}", config)])
        for split, kinds in images.items():
            for kind, x in kinds.items():
                out[f"{stage}/{split}/{kind}"] = encoder.embed_stages(x)[0]
        stage += 1
    cache_file(run).parent.mkdir(exist_ok=True)
    np.savez(cache_file(run), **out)
    recorded = np.load(run / "stage-1" / "embeddings.npy")  # L2-normalised features
    print(f"{run.name}: {stage - 1} stages; stage-1 train embeddings match the recorded ones: "
          f"{np.allclose(recorded, _normalise(out['1/train/clean']), atol=1e-4)}", flush=True)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def integrated(blocks: list[np.ndarray]) -> np.ndarray:
    """``normalized-concat`` integration (as the runs use) of per-stage features."""
    return np.concatenate([_normalise(b) for b in blocks], axis=1)


def ingroup_match(view_a: np.ndarray, view_b: np.ndarray, groups: np.ndarray | None) -> float:
    """Share of rows whose nearest other-view row (cosine), among the same group's rows, is their own view."""
    similarity = _normalise(view_a) @ _normalise(view_b).T
    if groups is not None:
        similarity = np.where(groups[:, None] == groups[None, :], similarity, -np.inf)
    return float((similarity.argmax(1) == np.arange(len(view_a))).mean())


def ingroup_rank(view_a: np.ndarray, view_b: np.ndarray, groups: np.ndarray) -> float:
    """Mean share of an anchor's same-group other-view rows more similar to it than its own other view."""
    similarity = _normalise(view_a) @ _normalise(view_b).T
    same = groups[:, None] == groups[None, :]
    positive = np.diag(similarity)[:, None]
    above = ((similarity > positive) & same).sum(1)
    return float((above / np.maximum(same.sum(1) - 1, 1)).mean())


def centre_groups(x: np.ndarray, groups: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """``x`` (the given ``rows`` of the data) minus each group's mean over those rows; unchanged without groups."""
    if groups is None:
        return x
    labels = np.unique(groups[rows], return_inverse=True)[1]
    means = np.zeros((labels.max() + 1, x.shape[1]))
    np.add.at(means, labels, x)
    return x - (means / np.bincount(labels)[:, None])[labels]


def explained_variance(x: np.ndarray, groups: np.ndarray) -> float:
    """Between-group variance / total variance of the standardised rows of ``x``."""
    from mcl.diagnostics import _standardise

    x = _standardise(x)
    means = np.zeros((groups.max() + 1, x.shape[1]))
    np.add.at(means, groups, x)
    means /= np.maximum(np.bincount(groups, minlength=len(means)), 1)[:, None]
    return float((means[groups] ** 2).sum() / max((x ** 2).sum(), 1e-12))


def within_group(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Standardised rows of ``x`` minus their group's mean."""
    from mcl.diagnostics import _standardise

    x = _standardise(x)
    means = np.zeros((groups.max() + 1, x.shape[1]))
    np.add.at(means, groups, x)
    means /= np.maximum(np.bincount(groups, minlength=len(means)), 1)[:, None]
    return x - means[groups]


def ingroup_neighbours(x: np.ndarray, groups: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Indices ``(n, k)`` of each row's k nearest same-group rows (cosine; -1 pads small groups)."""
    similarity = _normalise(x) @ _normalise(x).T
    similarity = np.where(groups[:, None] == groups[None, :], similarity, -np.inf)
    np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1)[:, :k]
    return np.where(np.take_along_axis(similarity, order, 1) > -np.inf, order, -1)


def knn_change(x_new: np.ndarray, x_old: np.ndarray, groups: np.ndarray, k: int = NEIGHBOURS) -> float:
    """1 - mean share of in-group k-nearest neighbours that two representations share."""
    a, b = ingroup_neighbours(x_new, groups, k), ingroup_neighbours(x_old, groups, k)
    valid = (a >= 0).sum(1)
    shared = ((a[:, :, None] == b[:, None, :]) & (a[:, :, None] >= 0)).any(2).sum(1)
    keep = valid > 0
    return float(1 - (shared[keep] / valid[keep]).mean())


def test_groups(run: Path, stage: int, embeddings: dict[str, np.ndarray]) -> np.ndarray:
    """Held-out images' groups for stage ``stage``: nearest earlier centroids, combined, mapped to a training group."""
    from mcl.files import load_arrays

    train_codes, test_codes = np.zeros(len(embeddings["1/train/clean"]), np.int64), None
    for t in range(1, stage):
        arrays = load_arrays(run / f"stage-{t}" / "clusters.safetensors")
        centroids = arrays["centroids"].astype(np.float64)
        # k-means ran on the L2-normalised training embeddings (stage-t/embeddings.npy)
        points = _normalise(embeddings[f"{t}/test/clean"])
        nearest = (((points[:, None, :] - centroids[None]) ** 2).sum(-1)).argmin(1)
        train_codes = train_codes * len(centroids) + arrays["labels"]
        test_codes = nearest if test_codes is None else test_codes * len(centroids) + nearest
    groups = load_arrays(run / f"stage-{stage}" / "pseudo_labels.safetensors")["pseudo_labels"]
    before_train = integrated([embeddings[f"{t}/train/clean"] for t in range(1, stage)])
    before_test = integrated([embeddings[f"{t}/test/clean"] for t in range(1, stage)])
    out = np.empty(len(test_codes), np.int64)
    for i, code in enumerate(test_codes):
        same = groups[train_codes == code]
        if len(same):
            out[i] = np.bincount(same).argmax()
        else:
            out[i] = groups[(before_train @ before_test[i]).argmax()]
    return out


def candidates(run: Path, stage: int) -> dict[str, float]:
    """Every candidate of transition ``stage - 1 -> stage`` of ``run``, on train (``NAME``) and test (``NAME@test``)."""
    from sklearn.metrics import silhouette_score

    from mcl.diagnostics import rankme, view_novelty
    from mcl.files import load_arrays

    e = dict(np.load(cache_file(run)))
    out = {}
    for split in ("train", "test"):
        if split == "train":
            groups = load_arrays(run / f"stage-{stage}" / "pseudo_labels.safetensors")["pseudo_labels"]
        else:
            groups = test_groups(run, stage, e)
        groups = np.unique(groups, return_inverse=True)[1]
        suffix = "" if split == "train" else "@test"

        def block(t: int, kind: str, split: str = split) -> np.ndarray:
            return e[f"{t}/{split}/{kind}"]

        def mcl(k: int, kind: str) -> np.ndarray:
            return integrated([block(t, kind) for t in range(1, k + 1)])

        now = ingroup_match(block(stage, "a"), block(stage, "b"), groups)
        before = ingroup_match(block(stage - 1, "a"), block(stage - 1, "b"), groups)
        now_mcl = ingroup_match(mcl(stage, "a"), mcl(stage, "b"), groups)
        before_mcl = ingroup_match(mcl(stage - 1, "a"), mcl(stage - 1, "b"), groups)
        out["ingroup_match_gain" + suffix] = now - before
        out["ingroup_match_gain_mcl" + suffix] = now_mcl - before_mcl
        out["ingroup_room" + suffix] = 1 - before_mcl
        out["ingroup_rank_gain_mcl" + suffix] = (ingroup_rank(mcl(stage - 1, "a"), mcl(stage - 1, "b"), groups)
                                                - ingroup_rank(mcl(stage, "a"), mcl(stage, "b"), groups))
        earlier = np.concatenate([block(t, "clean") for t in range(1, stage)], axis=1)
        views = [np.concatenate([block(t, kind) for t in range(1, stage)], axis=1) for kind in ("a", "b")]
        if split == "train":  # fit on half of the images, score the views of the other half
            order = np.random.default_rng(stage).permutation(len(earlier))
            fit, held = order[: len(order) // 2], order[len(order) // 2:]
            for name, g in (("reliable_novelty", None), ("within_reliable_novelty", groups)):
                out[name] = view_novelty(
                    centre_groups(earlier[fit], g, fit), centre_groups(block(stage, "clean")[fit], g, fit),
                    tuple(centre_groups(v[held], g, held) for v in views),
                    tuple(centre_groups(block(stage, kind)[held], g, held) for kind in ("a", "b")))
        else:  # fit on the training images, score the held-out images' views
            train_groups = np.unique(load_arrays(run / f"stage-{stage}" / "pseudo_labels.safetensors")[
                "pseudo_labels"], return_inverse=True)[1]
            every = np.arange(len(groups))
            fit_before = np.concatenate([e[f"{t}/train/clean"] for t in range(1, stage)], axis=1)
            for name, g, tg in (("reliable_novelty@test", None, None),
                                ("within_reliable_novelty@test", groups, train_groups)):
                rows = np.arange(len(fit_before))
                out[name] = view_novelty(
                    centre_groups(fit_before, tg, rows), centre_groups(e[f"{stage}/train/clean"], tg, rows),
                    tuple(centre_groups(v, g, every) for v in views),
                    tuple(centre_groups(block(stage, kind), g, every) for kind in ("a", "b")))
        out["view_match_gain_mcl" + suffix] = (ingroup_match(mcl(stage, "a"), mcl(stage, "b"), None)
                                              - ingroup_match(mcl(stage - 1, "a"), mcl(stage - 1, "b"), None))
        previous = block(stage - 1, "clean")
        out["group_explained" + suffix] = explained_variance(previous, groups)
        out["group_explained_mcl" + suffix] = explained_variance(
            np.concatenate([block(t, "clean") for t in range(1, stage)], axis=1), groups)
        out["silhouette_previous" + suffix] = float(silhouette_score(previous, groups)) if groups.max() > 0 else 0.0
        out["within_rank_gain" + suffix] = (rankme(within_group(block(stage, "clean"), groups))
                                            - rankme(within_group(previous, groups)))
        out["ingroup_knn_change" + suffix] = knn_change(block(stage, "clean"), previous, groups)
    out[SHIPPED] = shipped_view_novelty(e, stage)
    return out


SHIPPED = "view_novelty_mcl"  # reliable_novelty as mcl records it (``view_novelty``), reported beside it


def shipped_view_novelty(e: dict[str, np.ndarray], stage: int) -> float:
    """:func:`mcl.diagnostics.view_novelty` as :mod:`mcl.stages` computes it: L2-normalised embeddings, the fixed
    sample's even positions to fit, its odd positions' views (these runs' 1000 training rows are the whole sample)."""
    from mcl.diagnostics import view_novelty

    def stages(kind: str, last: int, rows: slice) -> np.ndarray:
        return np.concatenate([_normalise(e[f"{t}/train/{kind}"])[rows] for t in range(1, last)], axis=1)

    fit, held = slice(0, None, 2), slice(1, None, 2)  # as mcl.diagnostics.view_rows
    return view_novelty(stages("clean", stage, fit), _normalise(e[f"{stage}/train/clean"])[fit],
                        (stages("a", stage, held), stages("b", stage, held)),
                        (_normalise(e[f"{stage}/train/a"])[held], _normalise(e[f"{stage}/train/b"])[held]))


NAMES = ("ingroup_match_gain", "ingroup_match_gain_mcl", "ingroup_room", "ingroup_rank_gain_mcl", "reliable_novelty",
         "within_reliable_novelty", "view_match_gain_mcl", "group_explained",
         "group_explained_mcl", "silhouette_previous", "within_rank_gain", "ingroup_knn_change")


def records_with_candidates(root: Path) -> list[dict]:
    """The validation's transitions (:func:`diagnostics_validation.transitions`) with every candidate added."""
    from diagnostics_validation import transitions

    records = []
    for record in transitions(root):
        run = root / "runs" / record["run"]
        if cache_file(run).exists():
            saved = run.parents[1] / CACHE / f"{run.name}-{record['stage']}-{VERSION}.json"
            if not saved.exists():
                saved.write_text(json.dumps(candidates(run, record["stage"])))
            records.append({**record, **json.loads(saved.read_text())})
    return records


def analyse(root: Path, out: Path) -> str:
    """Write the candidates' rank correlations with ``gain_pool`` and the one chosen on the selection sets."""
    from diagnostics_validation import (
        BLIND,
        BLIND_HYPOTHESES,
        CONFIRMATION,
        SELECTION,
        bootstrap_interval,
        correlation_table,
        interval,
        selection_sign,
        spearman,
    )

    records = [r for r in records_with_candidates(root) if "gain_pool" in r]
    blind = [r for r in records if r["data"] in BLIND]  # the blind test: its own section, at the end
    records = [r for r in records if r["data"] not in BLIND]
    names = [name + suffix for suffix in ("", "@test") for name in NAMES]
    anchors = ("mean_negatives", "rankme", "novelty")
    selection = [r for r in records if r["data"] in SELECTION]
    confirmation = [r for r in records if r["data"] in CONFIRMATION]
    others = sorted({r["data"] for r in records} - set(SELECTION) - set(CONFIRMATION))
    held = [r for r in records if r["data"] not in SELECTION]  # every transition the choice never saw
    groups = {"selection (" + ", ".join(SELECTION) + ")": selection,
              "confirmation (" + ", ".join(CONFIRMATION) + ")": confirmation}
    if others:
        groups["extra (" + ", ".join(others) + ")"] = [r for r in records if r["data"] in others]
    groups.update({"all confirmation": held, "all": records})
    groups.update({f"stage {s} only": [r for r in records if r["stage"] == s]
                   for s in sorted({r["stage"] for r in records})})
    # Signals whose scale differs between backbones flip sign between data sets where the other backbone gains
    # more: the correlation within one backbone shows it.
    groups.update({f"{backbone} only": [r for r in records if r["run"].rsplit("-", 2)[1] == backbone]
                   for backbone in sorted({r["run"].rsplit("-", 2)[1] for r in records})})

    def rho(rows: list[dict], name: str) -> float:
        return spearman([r[name] for r in rows], [r["gain_pool"] for r in rows])

    sign = {name: selection_sign(selection, name) for name in (*anchors, *names)}
    best = max((name for name in names if sign[name]), key=lambda name: abs(rho(selection, name)))
    lines = ["# Group-aware candidates for a label-free signal of a stage's gain", "",
             f"{len({r['run'] for r in records})} runs, {len(records)} transitions of the validation grid "
             "(`benchmarks/diagnostics_validation.py`), target `gain_pool` (the suppressed attribute's linear-probe "
             "gain from stage s on 8000 fresh images). Candidates: "
             f"{len(names)} ({len(NAMES)} quantities x train/test images; `reliable_novelty`, "
             "`within_reliable_novelty` and `ingroup_rank_gain_mcl` were added after a first look at the other "
             "nine), defined in `benchmarks/diagnostics_candidates.py`. Written by "
             "`python benchmarks/diagnostics_candidates.py analyse`.", "",
             f"Chosen on the selection sets only by |rho|: **{best}**: rho {rho(selection, best):+.2f} on selection "
             f"(n={len(selection)}); held out: {rho(confirmation, best):+.2f} on confirmation, "
             f"**{rho(held, best):+.2f} on all confirmation** (n={len(held)}, 90% bootstrap interval over whole runs "
             f"{interval(bootstrap_interval(held, best, 'gain_pool'))}); {rho(records, best):+.2f} on all "
             f"{len(records)} transitions (selection included, so not a test).", ""]
    anchor = "mean_negatives"

    def signed_rho(rows: list[dict], name: str) -> float:
        # the direction a signal is read in is fixed on the selection sets, as the chosen candidate's is
        return sign[name] * rho(rows, name)

    beat = {name: [c for c in names if signed_rho(rows, c) > signed_rho(rows, anchor)]
            for name, rows in (("confirmation", confirmation), ("all confirmation", held))}
    extra = [r for r in records if r["data"] in others]
    lines += [f"The recorded `{anchor}` on the same transitions: {rho(selection, anchor):+.2f} on selection, "
              f"{rho(confirmation, anchor):+.2f} on confirmation"
              + (f", {rho(extra, anchor):+.2f} on the extra set(s) (the chosen candidate: {rho(extra, best):+.2f})"
                 if len(extra) >= 3 else "") + f", {rho(held, anchor):+.2f} on all confirmation, "
              f"{rho(records, anchor):+.2f} on all. Candidates above it on the held-out transitions, each rho "
              "multiplied by the sign it has on the selection sets (looked up after the choice, not a choice): on "
              f"confirmation {beat['confirmation'] or 'none'}, "
              f"on all confirmation {beat['all confirmation'] or 'none'}.",
              ""]
    lines += ["Spearman rank correlation with `gain_pool`:", ""]
    lines += correlation_table(groups, "gain_pool", (*anchors, *names))
    lines += ["", f"90% bootstrap intervals over the {len(held)} all-confirmation transitions (whole runs "
              "resampled): " + ", ".join(f"{name} {interval(bootstrap_interval(held, name, 'gain_pool'))}"
                                         for name in (*anchors, *names)) + ".", "",
        "| run | s | gain_pool | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
    for r in records:
        lines.append(f"| {r['run']} | {r['stage']} | {100 * r['gain_pool']:+.1f} | "
                     + " | ".join(f"{r[name]:.3g}" for name in names) + " |")
    if blind:
        tested = dict(BLIND_HYPOTHESES)
        lines += ["", "## Blind test", "",
                  f"Data sets {', '.join(BLIND)}, generated after everything above was chosen; "
                  f"{len({r['run'] for r in blind})} runs, {len(blind)} transitions, left out of every table above. "
                  "Hypotheses written before the runs: " + "; ".join(f"`{n}`: {what}" for n, what in tested.items())
                  + f". The candidate chosen on the selection sets, {best}, is shown with them, and `{SHIPPED}`: "
                  "`reliable_novelty` as mcl now records it (`view_novelty`: L2-normalised embeddings, even/odd "
                  "positions of the sample instead of a random half; added after this test, not a hypothesis).", "",
                  "| signal | rho on selection | rho on all confirmation | rho on blind | 90% interval on blind "
                  "(whole runs) | rho > 0 on blind |", "|---|---|---|---|---|---|"]
        for name in dict.fromkeys([*tested, SHIPPED, best, *anchors, *names]):
            value = rho(blind, name)
            verdict = "yes" if value > 0 else "no"
            lines.append(f"| {name} | {rho(selection, name):+.2f} | {rho(held, name):+.2f} | {value:+.2f} | "
                         f"{interval(bootstrap_interval(blind, name, 'gain_pool'))} | "
                         + (f"**{verdict}** (hypothesis)" if name in tested else verdict) + " |")
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def main() -> None:
    """Command line: ``embed`` or ``analyse``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["embed", "analyse"])
    parser.add_argument("--root", type=Path, default=Path("/tmp/mcl-validation"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "diagnostics_candidates.md")
    args = parser.parse_args()
    runs = sorted(run for run in (args.root / "runs").glob("*") if (run / "eval.json").exists())
    if args.phase == "embed":
        for run in runs:
            if not cache_file(run).exists():
                embed_run(run)
        return
    print(analyse(args.root, args.out))


if __name__ == "__main__":
    main()
