"""The multistage loop: train, embed, cluster, regroup, repeat. This is MCL.

::

    pseudo_labels = None                                 # stage 1: ordinary contrastive learning
                                                         # (or stage-0 clusters of an initial model)
    for stage in 1..S:
        model = fresh encoder (seed per stage)           # mcl.init: scratch | previous
        train(model, negatives restricted to pseudo_labels)
        clusters[stage] = kmeans(embed(model, train set), K)  # embeddings: stage-s/embeddings.npy on disk
        pseudo_labels = combine(clusters[1..stage])      # all stages, not only the latest
    representation = concat(stage features)              # mcl.integration

Every phase is one :meth:`RunDirectory.phase <mcl.run.RunDirectory.phase>` call that loads its
recorded result or computes, saves and records it, so a re-run skips what finished and resumes an
unfinished stage from its last epoch. The embeddings k-means reads are written to disk chunk by chunk
(:mod:`mcl.embedding_file`) and recorded before k-means starts, so a clustering phase that was killed
resumes without embedding again. ``fit`` (default :func:`mcl.training.train`) is injectable:
any function with its signature (:class:`mcl.training.Fit`) trains the stages instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mcl import distributed
from mcl.clustering import KMeansResult
from mcl.config import Config, save_config
from mcl.data.loader import BatchSampler
from mcl.diagnostics import continue_training, group_statistics, sample_rows, stage_diagnostics, view_rows
from mcl.embedding_file import EmbeddingFile, open_embeddings
from mcl.errors import RunDirError
from mcl.files import load_arrays, read_json, read_jsonl, save_arrays, write_json
from mcl.group_checks import check_cluster_budget, check_groups
from mcl.logging_utils import phase, timed_phase
from mcl.models import unwrap_model
from mcl.pseudolabels import cluster_stage, pseudo_labels_from_stages
from mcl.run import (
    AUTO_STAGES_FILE,
    CLUSTERS_FILE,
    CLUSTERS_INFO_FILE,
    DIAGNOSTICS_FILE,
    EMBEDDINGS_FILE,
    ENCODER_FILE,
    METRICS_FILE,
    PSEUDO_LABELS_FILE,
    PSEUDO_LABELS_INFO_FILE,
    VIEWS_FILE,
    RunDirectory,
)
from mcl.sampling import ClusterBatchSampler, RandomBatchSampler
from mcl.tasks import StageTask, load_model_weights, save_model, stage_seed
from mcl.training import Fit, remove_checkpoint, train

logger = logging.getLogger("mcl")


@dataclass
class StageHistory:
    """What the stages so far produced: the clusterings that define the next pseudo-labels."""

    cluster_labels: list[np.ndarray] = field(default_factory=list)
    centroids: list[np.ndarray] = field(default_factory=list)
    models: list[nn.Module] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)


def next_pseudo_labels(history: StageHistory, config: Config) -> tuple[np.ndarray, dict]:
    """Pseudo-labels for the next stage: the earlier stages' clusters combined (``mcl.group_stages``), small groups
    merged."""
    return pseudo_labels_from_stages(history.cluster_labels, history.centroids, config.mcl.min_group_size,
                                     config.mcl.group_stages)


def batch_sampler(num_samples: int, pseudo_labels: np.ndarray | None, config: Config, seed: int) -> BatchSampler:
    """MCL's feature-aware batches (``mcl.negatives: batch``) once there are pseudo-labels; else random ones.

    In ``mask`` mode batches stay random and the loss masks candidates of other groups.
    """
    size, rank, world = config.train.batch_size, distributed.rank(), distributed.world_size()
    if pseudo_labels is not None and config.mcl.negatives == "batch":
        return ClusterBatchSampler(pseudo_labels, size, seed, rank, world)
    return RandomBatchSampler(num_samples, size, seed, rank, world)


# ---- one call per phase: load what the run recorded, else compute, save and record


def stage_pseudo_labels(run: RunDirectory, stage: int, history: StageHistory, config: Config,
                        num_samples: int) -> np.ndarray:
    """The pseudo-labels stage ``stage`` trains with (every earlier stage's clusters combined)."""

    def compute() -> np.ndarray:
        labels, info = next_pseudo_labels(history, config)
        stats = group_statistics(labels, config.train.batch_size, config.mcl.negatives)
        info = {**info, "groups_trained": stats["groups_trained"], "mean_negatives": stats["mean_negatives"]}
        check_groups(stage, info, stats, config, num_samples, len(history.cluster_labels))
        logger.info("stage-%d: %d pseudo-label groups train (%d before merging), %.1f negatives per anchor",
                    stage, stats["groups_trained"], info["groups_before_merge"], stats["mean_negatives"])
        if distributed.is_main_process():
            write_json(run.stage_dir(stage) / PSEUDO_LABELS_INFO_FILE, info)
        return labels

    def load(path: Path) -> np.ndarray:
        labels = load_arrays(path)["pseudo_labels"]
        if labels.shape != (num_samples,):
            raise RunDirError(f"{path}: {labels.shape[0]} pseudo-labels for a training set of {num_samples} samples")
        return labels

    return run.phase(run.stage_dir(stage) / PSEUDO_LABELS_FILE, compute,
                     lambda labels, path: save_arrays(path, {"pseudo_labels": labels}), load)


def train_or_load(task: StageTask, config: Config, run: RunDirectory, directory: Path, seed: int,
                  pseudo_labels: np.ndarray | None, previous: nn.Module | None, name: str,
                  progress: bool = True, fit: Fit = train, start_from: nn.Module | None = None) -> nn.Module:
    """One stage's encoder: reloaded if finished, else trained by ``fit`` (resuming from its checkpoint).

    ``start_from``: weights to start from whatever ``mcl.init`` says (the fine-tuning baseline's chain).
    """
    model = task.build_model(seed, previous)
    if start_from is not None:
        model.load_state_dict(unwrap_model(start_from).state_dict())

    def compute() -> nn.Module:
        directory.mkdir(parents=True, exist_ok=True)
        trained = torch.compile(model) if config.train.compile else model
        loader = task.loader(batch_sampler(task.num_samples, pseudo_labels, config, seed))
        labels = None if pseudo_labels is None else torch.as_tensor(pseudo_labels, device=task.device)
        started = time.perf_counter()
        with timed_phase(f"{name} train"):
            fit(trained, task.loss, loader, config.train, directory, labels, stage_name=name, progress=progress,
                extra_state=task.training_state(trained))
        logger.info("%s trained in %.1f s", name, time.perf_counter() - started)
        return unwrap_model(trained)

    def save(trained: nn.Module, path: Path) -> None:
        save_model(trained, path, {"name": name, "seed": str(seed)})
        remove_checkpoint(directory)

    return run.phase(directory / ENCODER_FILE, compute, save, lambda path: load_model_weights(model, path))


def embed_or_reuse(task: StageTask, model: nn.Module, config: Config, run: RunDirectory, stage: int) -> Path:
    """``stage-s/embeddings.npy``: the stage's embeddings of the training set, written and recorded, or reused.

    Each rank writes its shard into the file (``task.embed(model, out=...)``, a collective); the file is
    recorded before the ``embed`` phase ends, so a run killed during k-means reuses it on resume.
    """
    path = run.stage_dir(stage) / EMBEDDINGS_FILE
    if run.is_finished(path):
        logger.info("stage-%d: reusing the recorded embeddings %s", stage, path)
        return path
    with phase(f"stage-{stage}", "embed", f"embedding {task.num_samples} training samples"):
        task.embed(model, out=EmbeddingFile(path, task.num_samples, config.mcl.embedding_dtype))
        if distributed.is_main_process():
            run.record(path)
        distributed.barrier()
    return path


def cluster_or_load(task: StageTask, model: nn.Module, config: Config, run: RunDirectory, stage: int) -> KMeansResult:
    """k-means on the stage's embeddings of the training set (rank 0 clusters, every rank gets the result).

    k-means reads the embeddings from their file in chunks (pread; memory: its fit sample plus one chunk).
    """
    directory = run.stage_dir(stage)

    def compute() -> KMeansResult:
        path = embed_or_reuse(task, model, config, run, stage)
        result = None
        if distributed.is_main_process():
            embeddings = open_embeddings(path, task.num_samples)
            with phase(f"stage-{stage}", "cluster", f"k-means, K={config.mcl.clusters}"):
                result = cluster_stage(embeddings, config.mcl.clusters, stage_seed(config, stage),
                                       restarts=config.mcl.kmeans_restarts, iterations=config.mcl.kmeans_iterations,
                                       spherical=config.mcl.spherical, backend=config.mcl.kmeans_backend,
                                       device=task.device, sample_size=config.mcl.kmeans_sample)
        return distributed.broadcast_object(result)

    def save(result: KMeansResult, path: Path) -> None:
        write_json(directory / CLUSTERS_INFO_FILE, {"inertia": result.inertia, "iterations": result.iterations,
                                                    "backend": result.backend, "sizes": result.sizes.tolist()})
        save_arrays(path, {"centroids": result.centroids, "labels": result.labels, "sizes": result.sizes})

    def load(path: Path) -> KMeansResult:
        arrays = load_arrays(path)
        if arrays["labels"].shape != (task.num_samples,):
            raise RunDirError(f"{path}: {arrays['labels'].shape[0]} cluster labels for {task.num_samples} samples")
        meta = read_json(directory / CLUSTERS_INFO_FILE)
        return KMeansResult(arrays["centroids"], arrays["labels"], arrays["sizes"], meta["inertia"],
                            meta["iterations"], meta["backend"])

    result = run.phase(directory / CLUSTERS_FILE, compute, save, load)
    if distributed.is_main_process() and not run.is_finished(directory / CLUSTERS_INFO_FILE):
        run.record(directory / CLUSTERS_INFO_FILE)  # hashed like every finished file: an edit is refused
    return result


def views_or_load(task: StageTask, model: nn.Module, config: Config, run: RunDirectory, stage: int) -> None:
    """``stage-s/views.safetensors``: the stage's embeddings of two augmented views of the diagnostics' view rows.

    The same seeded views for every stage, so ``view_novelty`` compares stages on equal images; recorded, so a
    resumed or grown run reuses them. Cost: a forward pass of ``DIAGNOSTICS_SAMPLE`` images at most."""
    rows = view_rows(sample_rows(task.num_samples, config.seed))

    def compute() -> dict[str, np.ndarray]:
        with timed_phase(f"stage-{stage} views"):
            return dict(zip("ab", task.embed_views(model, rows), strict=True))

    run.phase(run.stage_dir(stage) / VIEWS_FILE, compute, lambda views, path: save_arrays(path, views),
              load_arrays)


def recorded_views(run: RunDirectory, stages: list[int], rows: int,
                   widths: list[int]) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The recorded views of ``stages`` (``(rows, widths[i])`` twice each), or None when a stage has none (an
    earlier mcl's stage). A file of other arrays or shapes is a RunDirError."""
    views = []
    for path, width in zip((run.stage_dir(t) / VIEWS_FILE for t in stages), widths, strict=True):
        if not run.is_finished(path):
            return None
        arrays = load_arrays(path)
        if set(arrays) != {"a", "b"} or not arrays["a"].shape == arrays["b"].shape == (rows, width):
            raise RunDirError(f"{path}: expected arrays 'a' and 'b' of shape {(rows, width)}, got "
                              f"{ {name: tuple(value.shape) for name, value in arrays.items()} }")
        views.append((arrays["a"], arrays["b"]))
    return views


def compute_diagnostics(run: RunDirectory, config: Config, stage: int, num_samples: int, cluster_labels: np.ndarray,
                        pseudo_labels: np.ndarray | None) -> dict:
    """Stage ``stage``'s diagnostics from the run's recorded embeddings (its own and every earlier stage's).

    ``cluster_labels``: stage ``stage``'s k-means ids ``(N,)``; ``pseudo_labels``: what it trained with.
    """
    started = time.perf_counter()
    stats = group_statistics(pseudo_labels, config.train.batch_size, config.mcl.negatives, num_samples)
    # Stages finished by an earlier mcl may have no recorded embeddings: compare with those that have them.
    recorded = [t for t in range(stage + 1) if run.is_finished(run.stage_dir(t) / EMBEDDINGS_FILE)]
    if stage not in recorded:
        logger.info("stage-%d diagnostics: its embeddings were not recorded (a run from an earlier mcl)", stage)
        return {"stage": stage, "groups_trained": stats["groups_trained"], "mean_negatives": stats["mean_negatives"]}
    rows = sample_rows(num_samples, config.seed)
    embeddings = [np.asarray(open_embeddings(run.stage_dir(t) / EMBEDDINGS_FILE, num_samples)[rows],
                             dtype=np.float32) for t in recorded]
    values = stage_diagnostics(embeddings[-1], embeddings[:-1], cluster_labels[rows],
                               None if pseudo_labels is None else pseudo_labels[rows], config.mcl.clusters,
                               stage_seed(config, stage), config.mcl.spherical,
                               recorded_views(run, recorded, len(view_rows(rows)), [e.shape[1] for e in embeddings]))
    return {"stage": stage, "groups_trained": stats["groups_trained"], "mean_negatives": stats["mean_negatives"],
            **values, "seconds": time.perf_counter() - started}


def diagnose_or_load(task: StageTask, config: Config, run: RunDirectory, stage: int, history: StageHistory,
                     pseudo_labels: np.ndarray | None) -> dict:
    """``stage-s/diagnostics.json``: label-free diagnostics of stage ``stage`` (:mod:`mcl.diagnostics`), logged.

    Read on a fixed seeded sample of the training set from the recorded embeddings of stage ``stage`` and of
    every earlier stage (stage 0 included), so the cost is a few small matrix products and k-means fits on
    at most :data:`mcl.diagnostics.DIAGNOSTICS_SAMPLE` rows. ``history`` holds the stages before ``stage``
    and, last, stage ``stage``'s clustering.
    """
    path = run.stage_dir(stage) / DIAGNOSTICS_FILE

    def compute() -> dict:
        return compute_diagnostics(run, config, stage, task.num_samples, history.cluster_labels[-1], pseudo_labels)

    result = run.phase(path, compute, lambda values, target: write_json(target, values), read_json)
    shown = ", ".join(f"{key} {value:.3g}" for key, value in result.items()
                      if key not in ("stage", "sample", "seconds") and isinstance(value, (int, float)))
    logger.info("stage-%d diagnostics: %s", stage, shown)
    return result


def initial_stage(task: StageTask, model: nn.Module, config: Config, run: RunDirectory) -> KMeansResult:
    """Stage 0: record an untrained initial model's weights in ``stage-0/`` and cluster its embeddings.

    On resume the recorded weights are loaded back into ``model``, so every later use of it (e.g.
    stages that start from the initial weights) sees exactly the model that was clustered.
    """
    run.phase(run.weights("stage-0"), lambda: model,
              lambda initial, path: save_model(initial, path, {"name": "stage-0", "seed": "initial"}),
              lambda path: load_model_weights(model, path))
    clusters = cluster_or_load(task, model, config, run, 0)
    views_or_load(task, model, config, run, 0)
    return clusters


def planned_stages(config: Config) -> tuple[Config, bool]:
    """``(config, auto)``: with ``mcl.stages: auto``, the config planned for ``mcl.max_stages`` stages and True."""
    if config.mcl.stages != "auto":
        return config, False
    return replace(config, mcl=replace(config.mcl, stages=config.mcl.max_stages)), True


def trained_stages(config: Config, run: RunDirectory, history: StageHistory) -> Config:
    """The config with ``mcl.stages`` = the stages trained (an auto run that stopped early), saved as config.yaml.

    Evaluation, ``mcl.load`` and the baselines then see the stages the run chose.
    """
    if len(history.models) >= config.mcl.stages:
        return config
    chosen = replace(config, mcl=replace(config.mcl, stages=len(history.models)))
    if distributed.is_main_process():
        save_config(chosen, run.config_path)
    distributed.barrier()
    return chosen


def run_stages(task: StageTask, config: Config, run: RunDirectory, progress: bool = True,
               initial_model: nn.Module | None = None, fit: Fit = train, auto: bool = False) -> StageHistory:
    """Train all ``config.mcl.stages`` stages; returns the per-stage models and clusterings.

    ``initial_model`` (e.g. a pretrained CLIP before fine-tuning) is clustered first as stage 0
    (:func:`initial_stage`): its clusters join the pseudo-label combination of every stage, so stage 1
    already trains with feature-aware negatives. ``history.models`` holds the trained stages only;
    ``history.cluster_labels`` starts with stage 0's clustering when there is one. ``fit`` trains
    each stage (default :func:`mcl.training.train`). ``auto`` (``mcl.stages: auto``): after each stage
    s >= 2, :func:`mcl.diagnostics.continue_training` decides from the diagnostics whether stage s+1 trains
    (at most ``config.mcl.stages``); the decision is logged and written to ``stages_auto.json``.
    """
    history = StageHistory()
    check_cluster_budget(config, task.num_samples)
    if initial_model is not None:
        clusters = initial_stage(task, initial_model, config, run)
        history.cluster_labels.append(clusters.labels)
        history.centroids.append(clusters.centroids)
    for stage in range(1, config.mcl.stages + 1):
        pseudo_labels = None
        if history.cluster_labels:
            pseudo_labels = stage_pseudo_labels(run, stage, history, config, task.num_samples)
        previous = history.models[-1] if history.models else None
        model = train_or_load(task, config, run, run.stage_dir(stage), stage_seed(config, stage), pseudo_labels,
                              previous, f"stage-{stage}", progress, fit)
        clusters = cluster_or_load(task, model, config, run, stage)
        views_or_load(task, model, config, run, stage)
        history.models.append(model)
        history.cluster_labels.append(clusters.labels)
        history.centroids.append(clusters.centroids)
        history.diagnostics.append(diagnose_or_load(task, config, run, stage, history, pseudo_labels))
        if auto and stage < config.mcl.stages:
            go_on, reason = continue_training(history.diagnostics)
            logger.info("mcl.stages auto: %s stage %d (%s)", "training" if go_on else "stopping before", stage + 1,
                        reason)
            if distributed.is_main_process():
                write_json(run.root / AUTO_STAGES_FILE, {"after_stage": stage, "continue": go_on, "reason": reason,
                                                         "max_stages": config.mcl.stages})
            if not go_on:
                break
    return history


def train_ensemble(task: StageTask, config: Config, run: RunDirectory, progress: bool = True,
                   fit: Fit = train) -> list[nn.Module]:
    """The ``ensemble-k`` baseline: extra independently seeded single-stage models.

    Member 1 is stage 1 itself (a single-stage model); members 2..S train with seeds the stages
    never use, with ordinary random batches. Concatenated like MCL's stages, ensemble-k has the same
    feature size and training compute as MCL with k stages.
    """
    members = []
    for member in range(2, config.mcl.stages + 1):
        seed = stage_seed(config, 100 + member)
        members.append(train_or_load(task, config, run, run.ensemble_dir(member), seed, None, None,
                                     f"ensemble-{member}", progress, fit))
    return members


def stage_steps(run: RunDirectory, stage: int) -> int:
    """Optimiser steps stage ``stage`` took (from its recorded per-epoch metrics)."""
    return sum(int(record["steps"]) for record in read_jsonl(run.stage_dir(stage) / METRICS_FILE))


def train_finetune_baseline(task: StageTask, config: Config, run: RunDirectory, progress: bool = True,
                            fit: Fit = train) -> list[nn.Module]:
    """The ``finetune-k`` baseline: plain fine-tuning, the same budget as MCL's first k stages.

    ``finetune-1`` starts where stage 1 starts (stage 0's weights with ``multimodal.init: pretrained``)
    and ``finetune-k`` continues from ``finetune-(k-1)``; each trains with ordinary random batches, the
    same locks, learning rate, schedule and data, for exactly as many optimiser steps as stage k took,
    so ``finetune-k`` has seen as many steps as ``stage-1..k`` together. It answers "did MCL help, or
    would more fine-tuning have done the same?".
    """
    members: list[nn.Module] = []
    for k in range(1, config.mcl.stages + 1):
        seed = stage_seed(config, 200 + k)
        steps = stage_steps(run, k)
        per_epoch = len(batch_sampler(task.num_samples, None, config, seed))
        budget = replace(config, train=replace(config.train, max_steps=steps, epochs=max(1, -(-steps // per_epoch))))
        members.append(train_or_load(task, budget, run, run.member_dir(f"finetune-{k}"), seed, None, None,
                                     f"finetune-{k}", progress, fit, start_from=members[-1] if members else None))
    return members
