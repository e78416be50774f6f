"""The multistage loop: train, embed, cluster, regroup, repeat. This is MCL.

::

    pseudo_labels = None                                 # stage 1: ordinary contrastive learning
                                                         # (or stage-0 clusters of an initial model)
    for stage in 1..S:
        model = fresh encoder (seed per stage)           # mcl.init: scratch | previous
        train(model, negatives restricted to pseudo_labels)
        clusters[stage] = kmeans(embed(model, train set), K)
        pseudo_labels = combine(clusters[1..stage])      # all stages, not only the latest
    representation = concat(stage features)              # mcl.integration

Every phase's output is recorded in the run directory's manifest, so a re-run skips what finished
and resumes an unfinished stage from its last epoch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mcl import distributed
from mcl.clustering import KMeansResult, kmeans
from mcl.config import Config
from mcl.errors import RunDirError
from mcl.io import load_arrays, read_json, save_arrays, write_json
from mcl.logging_utils import phase
from mcl.models import unwrap_model
from mcl.rundir import RunDirectory
from mcl.sampling import (
    ClusterBatchSampler,
    RandomBatchSampler,
    combine_cluster_labels,
    group_centroids,
    merge_small_groups,
)
from mcl.tasks import StageTask, load_model_weights, save_model
from mcl.training import remove_checkpoint, train

logger = logging.getLogger("mcl")

ENCODER_FILE = "encoder.safetensors"
CLUSTERS_FILE = "clusters.safetensors"
PSEUDO_LABELS_FILE = "pseudo_labels.safetensors"


def stage_seed(config: Config, stage: int) -> int:
    """Each stage (and each ensemble member) trains with its own seed."""
    return config.seed * 1000 + stage


@dataclass
class StageHistory:
    """What the stages so far produced: the clusterings that define the next pseudo-labels."""

    cluster_labels: list[np.ndarray] = field(default_factory=list)
    centroids: list[np.ndarray] = field(default_factory=list)
    models: list[nn.Module] = field(default_factory=list)


def next_pseudo_labels(history: StageHistory, config: Config) -> tuple[np.ndarray, dict]:
    """Pseudo-labels for the next stage: every earlier stage's clusters combined, small groups merged."""
    combined = combine_cluster_labels(history.cluster_labels, config.mcl.clusters)
    centroids = group_centroids(history.cluster_labels, history.centroids, combined)
    merged_labels, merged = merge_small_groups(combined, centroids, config.mcl.min_group_size)
    sizes = np.bincount(merged_labels)
    info = {"groups_before_merge": int(combined.max()) + 1, "groups_merged": merged, "groups": len(sizes),
            "group_sizes": sizes.tolist()}
    if merged:
        logger.info("merged %d pseudo-label groups smaller than %d samples into their nearest group",
                    merged, config.mcl.min_group_size)
    return merged_labels, info


def _load_pseudo_labels(path: Path, num_samples: int) -> np.ndarray:
    labels = load_arrays(path)["pseudo_labels"]
    if labels.shape != (num_samples,):
        raise RunDirError(f"{path}: {labels.shape[0]} pseudo-labels for a training set of {num_samples} samples")
    return labels


def stage_pseudo_labels(run: RunDirectory, stage: int, history: StageHistory, config: Config,
                        num_samples: int) -> np.ndarray:
    """Compute (or reload) and record the pseudo-labels stage ``stage`` trains with."""
    path = run.stage_dir(stage) / PSEUDO_LABELS_FILE
    if run.is_finished(path):
        return _load_pseudo_labels(path, num_samples)
    labels, info = next_pseudo_labels(history, config)
    if distributed.is_main_process():
        write_json(run.stage_dir(stage) / "pseudo_labels.json", info)
        save_arrays(path, {"pseudo_labels": labels})
        run.record(path)
    return labels


def train_or_load(task: StageTask, config: Config, run: RunDirectory, directory: Path, seed: int,
                  pseudo_labels: np.ndarray | None, previous: nn.Module | None, name: str,
                  progress: bool = True) -> nn.Module:
    """One stage's encoder: reloaded if finished, else trained (resuming from its checkpoint)."""
    model = task.build_model(seed, previous)
    weights = directory / ENCODER_FILE
    if run.is_finished(weights):
        return load_model_weights(model, weights)
    directory.mkdir(parents=True, exist_ok=True)
    if config.train.compile:
        model = torch.compile(model)
    if pseudo_labels is None:
        sampler = RandomBatchSampler(task.num_samples, config.train.batch_size, seed, distributed.rank(),
                                     distributed.world_size())
    elif config.mcl.negatives == "batch":
        sampler = ClusterBatchSampler(pseudo_labels, config.train.batch_size, seed, distributed.rank(),
                                      distributed.world_size())
    else:
        sampler = RandomBatchSampler(task.num_samples, config.train.batch_size, seed, distributed.rank(),
                                     distributed.world_size())
    labels = None if pseudo_labels is None else torch.as_tensor(pseudo_labels, device=task.device)
    started = time.perf_counter()
    train(model, task.loss, sampler, config.train, directory, labels, stage_name=name, progress=progress,
          extra_state=task.training_state(model))
    model = unwrap_model(model)
    if distributed.is_main_process():
        save_model(model, weights, {"name": name, "seed": str(seed)})
        run.record(weights)
        remove_checkpoint(directory)
    distributed.barrier()
    logger.info("%s trained in %.1f s", name, time.perf_counter() - started)
    return model


def cluster_or_load(task: StageTask, model: nn.Module, config: Config, run: RunDirectory, stage: int) -> KMeansResult:
    """k-means on the stage's embeddings of the training set (reloaded if finished)."""
    directory = run.stage_dir(stage)
    path = directory / CLUSTERS_FILE
    if run.is_finished(path):
        arrays = load_arrays(path)
        if arrays["labels"].shape != (task.num_samples,):
            raise RunDirError(f"{path}: {arrays['labels'].shape[0]} cluster labels for {task.num_samples} samples")
        meta = read_json(directory / "clusters.json")
        return KMeansResult(arrays["centroids"], arrays["labels"], arrays["sizes"], meta["inertia"],
                            meta["iterations"], meta["backend"])
    with phase(f"stage-{stage}", "embed", f"embedding {task.num_samples} training samples"):
        embeddings = task.embed(model)
    result = None
    if distributed.is_main_process():
        with phase(f"stage-{stage}", "cluster", f"k-means, K={config.mcl.clusters}"):
            result = kmeans(embeddings, config.mcl.clusters, config.mcl.kmeans_restarts,
                            config.mcl.kmeans_iterations, seed=stage_seed(config, stage),
                            spherical=config.mcl.spherical, backend=config.mcl.kmeans_backend, device=embeddings.device)
        write_json(directory / "clusters.json", {"inertia": result.inertia, "iterations": result.iterations,
                                                 "backend": result.backend, "sizes": result.sizes.tolist()})
        save_arrays(path, {"centroids": result.centroids, "labels": result.labels, "sizes": result.sizes})
        run.record(path)
    return distributed.broadcast_object(result)


def initial_stage(task: StageTask, model: nn.Module, config: Config, run: RunDirectory) -> KMeansResult:
    """Stage 0: record an untrained initial model's weights in ``stage-0/`` and cluster its embeddings.

    On resume the recorded weights are loaded back into ``model``, so every later use of it (e.g.
    stages that start from the initial weights) sees exactly the model that was clustered.
    """
    weights = run.stage_dir(0) / ENCODER_FILE
    if run.is_finished(weights):
        load_model_weights(model, weights)
    elif distributed.is_main_process():
        save_model(model, weights, {"name": "stage-0", "seed": "initial"})
        run.record(weights)
    distributed.barrier()
    return cluster_or_load(task, model, config, run, 0)


def run_stages(task: StageTask, config: Config, run: RunDirectory, progress: bool = True,
               initial_model: nn.Module | None = None) -> StageHistory:
    """Train all ``config.mcl.stages`` stages; returns the per-stage models and clusterings.

    ``initial_model`` (e.g. a pretrained CLIP before fine-tuning) is clustered first as stage 0
    (:func:`initial_stage`): its clusters join the pseudo-label combination of every stage, so stage 1
    already trains with feature-aware negatives. ``history.models`` holds the trained stages only;
    ``history.cluster_labels`` starts with stage 0's clustering when there is one.
    """
    history = StageHistory()
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
                              previous, f"stage-{stage}", progress)
        clusters = cluster_or_load(task, model, config, run, stage)
        history.models.append(model)
        history.cluster_labels.append(clusters.labels)
        history.centroids.append(clusters.centroids)
    return history


def train_ensemble(task: StageTask, config: Config, run: RunDirectory, progress: bool = True) -> list[nn.Module]:
    """The ``ensemble-k`` baseline: extra independently seeded single-stage models.

    Member 1 is stage 1 itself (a single-stage model); members 2..S train with seeds the stages
    never use, with ordinary random batches. Concatenated like MCL's stages, ensemble-k has the same
    feature size and training compute as MCL with k stages.
    """
    members = []
    for member in range(2, config.mcl.stages + 1):
        seed = stage_seed(config, 100 + member)
        members.append(train_or_load(task, config, run, run.ensemble_dir(member), seed, None, None,
                                     f"ensemble-{member}", progress))
    return members
