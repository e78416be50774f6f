"""The run configuration's schema: one typed dataclass per section, with defaults and meanings.

Names of registered things (``model.backbone``, ``objective.name``, ``multimodal.model``) are plain
strings checked against their registries by :mod:`mcl.config.validation`; loading YAML and
``--set`` overrides is :mod:`mcl.config.loading`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

FORMAT_VERSION = 1


@dataclass
class DataConfig:
    """Where the images come from: a generator or an image-table directory."""

    source: Literal["trifeature", "overlay", "table", "captioned-trifeature", "captioned-fashion-mnist",
                    "captioned-trifeature-marked", "img2dataset", "webdataset"] = "trifeature"
    # image-table directory (source=table), where a generator writes, or the img2dataset folder /
    # WebDataset shard pattern (those are imported once into RUN_DIR/data as an image table)
    path: str | None = None
    image_size: int = 32
    n_train: int = 4000  # generators; img2dataset/webdataset: pairs read = n_train + n_test
    n_test: int = 1000  # generators; img2dataset/webdataset: the last n_test pairs are the test split
    seed: int = 0  # generators only
    on_bad_image: Literal["error", "skip"] = "error"
    cache: bool = True
    allow_outside_paths: bool = False  # table rows may name images outside the table directory
    # memory: decode once, keep on the device; stream: decode each batch from disk in worker processes;
    # auto: memory when the decoded set fits memory_budget_gb (default: half the available RAM / device memory)
    residency: Literal["auto", "memory", "stream"] = "auto"
    memory_budget_gb: float | None = None
    workers: int = 2  # DataLoader processes decoding streamed images (0: in the training process)
    # WebDataset shards streamed (residency: stream): random = the batch sampler's batches, each sample read at
    # its offset; sequential = shards in a seeded order read front to back, single-group batches bucketed
    # from the stream (mcl.data.stream); another run than random's, the same number of steps
    shard_order: Literal["random", "sequential"] = "random"
    # data without test rows: this fraction is held out as the test split, by a stable hash of each sample's
    # path/key (mcl.data.split); 0 = train on everything
    test_fraction: float = 0.1


@dataclass
class ModelConfig:
    """Backbone and projection head; each stage builds a fresh copy."""

    # a registered backbone (mcl.models.BACKBONES: convnet, resnet18, resnet50, vit, ...) or a zoo name
    # such as "timm:vit_tiny_patch16_224" / "torchvision:resnet50"
    backbone: str = "convnet"
    backbone_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments passed to the backbone
    width: float = 1.0  # channel multiplier (backbones that take one)
    projection_dim: int = 128
    hidden_dim: int = 512


@dataclass
class ObjectiveConfig:
    """Base contrastive objective (see ``mcl.objectives``)."""

    name: str = "ntxent"  # a registered objective (mcl.objectives.OBJECTIVES): ntxent, simclr, dcl, moco, clip
    temperature: float = 0.5
    queue_size: int = 4096  # moco: negatives kept from earlier batches (each with its pseudo-label)
    momentum: float = 0.99  # moco: EMA rate of the key encoder


@dataclass
class AugmentConfig:
    """Batched kornia augmentation; ``color_jitter`` is the jitter strength s of SimCLR."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip: float = 0.5
    color_jitter: float = 0.5
    color_jitter_prob: float = 0.8
    grayscale: float = 0.2
    blur: float = 0.0
    # which code computes it, never what: fused = mcl.augment_fused (same output bit for bit, faster on CPU);
    # auto = fused on the device types where it measured faster (mcl.augment.AUTO_FUSED_DEVICES), else kornia
    backend: Literal["kornia", "fused", "auto"] = "auto"


@dataclass
class TrainConfig:
    """Optimisation of one stage."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None  # overrides warmup_epochs (e.g. the paper's 600 steps)
    schedule: Literal["cosine", "constant"] = "cosine"  # after warm-up: cosine decay to 0, or the constant train.lr
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: Literal["off", "bf16", "fp16"] = "off"
    compile: bool = False
    channels_last: bool = False
    threads: int = 0  # torch intra-op threads; 0 = torch default
    max_steps: int | None = None  # per-stage cap on optimiser steps (quick runs on large sets); None: all epochs


@dataclass
class MCLConfig:
    """The multistage part: stages, clustering and feature-aware negatives."""

    stages: int | Literal["auto"] = 3  # auto: up to max_stages, continuing while the diagnostics say so
    clusters: int = 10
    negatives: Literal["batch", "mask"] = "batch"
    init: Literal["scratch", "previous"] = "scratch"
    integration: Literal["normalized-concat", "concat-then-normalize"] = "normalized-concat"
    min_group_size: int = 32
    kmeans_restarts: int = 5
    kmeans_iterations: int = 100
    kmeans_backend: Literal["auto", "torch", "faiss"] = "auto"
    # k-means fits on a seeded sample of this many points, then assigns all in chunks; None: max(64 K, 8192)
    kmeans_sample: int | None = None
    spherical: bool = False
    # each stage's embeddings of the training set, stage-s/embeddings.npy (k-means reads it as a memory map):
    # auto = float32 up to a 1 GiB float32 map (small runs keep their exact values), else float16 (half the disk)
    embedding_dtype: Literal["auto", "float16", "float32"] = "auto"
    # a stage whose pseudo-labels leave fewer than 2 groups trains like plain SimCLR: an error unless true
    allow_single_group: bool = False
    max_stages: int = 3  # mcl.stages: auto trains at most this many stages (at least 2)


@dataclass
class EvalConfig:
    """Per-attribute probes and reference representations."""

    knn_k: int = 20
    linear_max_iter: int = 1000
    linear_c: float = 1.0
    ensemble: bool = True  # train the ensemble-k baseline
    finetune_baseline: bool = False  # train the finetune-k baseline: plain fine-tuning with MCL's step budget
    clip_blind_pairs: int = 100  # multimodal: CLIP-blind test pairs per attribute, mined with stage 0 (0: off)
    references: bool = True  # random-init encoder and raw pixels
    paired_pairs: int = 500  # multimodal paired benchmark: image pairs per attribute (0: off)
    # image runs on data without attribute columns: held-out images whose two augmented views give the label-free
    # rows (alignment, uniformity, kNN agreement, view match); 0: off
    view_images: int = 1000


@dataclass
class MultimodalConfig:
    """Image-text (CLIP-style) MCL: a two-tower model per stage, clusters of its image embeddings.

    ``init``: where every stage's weights start. ``pretrained`` (default, as in the reference): each
    stage fine-tunes from the same initial model (the pretrained towers; for ``small`` one seeded
    random initialisation shared by all stages); ``previous``: from the previous stage; ``scratch``:
    a fresh per-stage seeded build (pretrained towers are still loaded, new parts draw new weights).
    ``stage0``: before stage 1, cluster the initial model's image embeddings as "stage 0", so that
    stage 1 already trains with feature-aware negatives.
    """

    enabled: bool = False
    # a registered two-tower model (mcl.models.two_tower.TWO_TOWER_MODELS): small, pretrained-towers,
    # open_clip, hf-clip, or open_clip:<arch> / hf:<path>
    model: str = "small"
    arch: str | None = None  # open_clip model name, e.g. "ViT-B-32"
    pretrained: str | None = None  # open_clip tag or checkpoint; hf-clip directory; pretrained-towers text model dir
    embed_dim: int = 128  # small and pretrained-towers (the adapters keep their own)
    init: Literal["pretrained", "previous", "scratch"] = "pretrained"
    stage0: bool = False
    # the initial model's weights: "aligned" (the cached `mcl align` model, built when missing) or a checkpoint path
    stage0_checkpoint: str | None = None
    integrate_stage0: bool = False  # the integrated model (mcl-k, mcl.load) also includes stage 0
    lock_image: bool = False
    unlocked_image_groups: int = 0  # with lock_image: the last N image layer groups stay trainable
    # every image-tower BatchNorm keeps its running statistics (unlocked groups too): single-group MCL batches
    # would otherwise pull them towards one group's statistics (open_clip: --lock-image-freeze-bn-stats)
    freeze_bn_stats: bool = False
    lock_text: bool = False
    unlocked_text_groups: int = 0
    mask_duplicate_captions: bool = True  # two pairs with the same caption are not each other's negatives
    # pretrained-towers with the text tower and all but the last image groups locked and at most a flip as
    # augmentation: auto = compute the locked parts' outputs once and train on them
    # (mcl.modalities.image_text.task); "off" = never (quoted: YAML reads a bare off as false)
    cache_locked_features: Literal["auto", "off"] = "auto"
    init_temperature: float = 0.07
    context_length: int = 32
    image_resolution: int | None = None  # pretrained-towers: resize images to this size (None: keep)
    image_width: float = 1.0  # small: ConvNet channel multiplier
    text_width: int = 128  # small: transformer width
    text_layers: int = 2
    text_heads: int = 4
    # captioned-trifeature: probability of leaving each attribute's word out of a caption, e.g. {texture: 0.8}
    caption_drop_prob: dict[str, float] = field(default_factory=dict)


@dataclass
class Config:
    """A whole run."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mcl: MCLConfig = field(default_factory=MCLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    multimodal: MultimodalConfig = field(default_factory=MultimodalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), as written to ``config.yaml``."""
        return _plain(dataclasses.asdict(self))

    def validate(self) -> Config:
        """Check value ranges, registered names and keys that go together; returns self."""
        from mcl.config.validation import check_config

        check_config(self)
        return self


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# Ranges checked after type validation: key -> (predicate, expectation).
