"""Whether pseudo-label groups can train: never degrade to plain SimCLR in silence, and advice on K.

A stage whose pseudo-labels leave fewer than 2 groups has no feature-aware negative at all (every batch
draws from the whole training set): :func:`check_groups` stops it with a one-line error naming the
numbers and the keys that fix it, unless ``mcl.allow_single_group``. Groups smaller than a batch leave
an anchor fewer negatives than the batch size: a warning with :func:`cluster_advice` (the largest K, or
the batch size, that keeps groups a full batch when ``s`` stages' clusters are combined, about
``N / K**s`` samples a group). :func:`check_cluster_budget` says the same before the first stage.

Example:
    >>> check_groups(2, {"groups": 1, "groups_before_merge": 3}, stats, config, num_samples=96)
    ConfigError: stage-2: the pseudo-labels leave 1 group (3 before merging ...); lower mcl.min_group_size ...
"""

from __future__ import annotations

import logging

from mcl.config import Config
from mcl.errors import ConfigError

logger = logging.getLogger("mcl")


def check_groups(stage: int, info: dict, stats: dict, config: Config, num_samples: int, combined: int = 1) -> None:
    """Stop a stage whose pseudo-labels leave fewer than 2 groups (it would train like plain SimCLR).

    Allowed with ``mcl.allow_single_group``; then, and for groups smaller than a batch, a warning says so.
    The message names the numbers and the keys that fix it; ``combined``: how many stages' clusters the
    pseudo-labels combine.
    """
    groups, before = info["groups"], info.get("groups_before_merge", info["groups"])
    if groups < 2:
        sizes = sorted(info.get("sizes_before_merge", []), reverse=True)
        keep = f" to at most {sizes[1]}" if len(sizes) >= 2 and sizes[1] >= 2 else ""
        fix = (f"lower mcl.min_group_size ({config.mcl.min_group_size}){keep} or mcl.clusters ({config.mcl.clusters})"
               if before >= 2 else f"raise mcl.clusters ({config.mcl.clusters})")
        message = (f"stage-{stage}: the pseudo-labels leave {groups} group ({before} before merging groups smaller "
                   f"than mcl.min_group_size={config.mcl.min_group_size}, {num_samples} training samples), so "
                   f"stage {stage} would train like plain SimCLR with no feature-aware negative; {fix}, or set "
                   "mcl.allow_single_group: true to train it anyway")
        if not config.mcl.allow_single_group:
            raise ConfigError(message)
        logger.warning("%s (allowed by mcl.allow_single_group)", message.split(", so ")[0])
        return
    batch = config.train.batch_size
    if stats["median_group_size"] < batch:
        logger.warning("stage-%d: %d pseudo-label groups, median %d samples, smaller than train.batch_size=%d: "
                       "an anchor gets %.0f negatives on average instead of %d; %s", stage, groups,
                       stats["median_group_size"], batch, stats["mean_negatives"], batch - 1,
                       cluster_advice(config, num_samples, combined))


def cluster_advice(config: Config, num_samples: int, stages_combined: int) -> str:
    """What K (or batch size) keeps groups of ``stages_combined`` combined stages at least one batch."""
    batch = config.train.batch_size
    k_ok = max(2, int((num_samples / batch) ** (1 / stages_combined)))
    return (f"mcl.clusters <= {k_ok} keeps groups a full batch for {num_samples} samples, or lower "
            f"train.batch_size to <= {max(2, num_samples // config.mcl.clusters ** stages_combined)}")


def check_cluster_budget(config: Config, num_samples: int) -> None:
    """K guidance before training: warn when K is too large for N and the batch (groups smaller than a batch)."""
    clusters, batch, stages = config.mcl.clusters, config.train.batch_size, config.mcl.stages
    if stages < 2 and not config.multimodal.stage0:
        return
    per_group = num_samples / clusters
    if per_group < config.mcl.min_group_size:
        logger.warning("mcl.clusters=%d on %d training samples gives stage-2 groups of ~%.0f samples, below "
                       "mcl.min_group_size=%d: most groups will be merged away; use mcl.clusters <= %d",
                       clusters, num_samples, per_group, config.mcl.min_group_size,
                       max(2, num_samples // config.mcl.min_group_size))
    elif per_group < batch:
        logger.warning("mcl.clusters=%d on %d training samples gives stage-2 groups of ~%.0f samples, smaller than "
                       "train.batch_size=%d (later stages combine clusters, so their groups are smaller still); %s",
                       clusters, num_samples, per_group, batch, cluster_advice(config, num_samples, 1))
