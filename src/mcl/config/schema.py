"""The run configuration's schema: one typed dataclass per section, with defaults and meanings.

Names of registered things (``model.backbone``, ``objective.name``, ``multimodal.model``) are plain
strings checked against their registries by :mod:`mcl.config.validation`; loading YAML and
``--set`` overrides is :mod:`mcl.config.loading`.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Range:
    """The values a config key accepts beyond its type: ``ok(value)`` holds; ``expected`` says it in words."""

    ok: Callable[[Any], bool]
    expected: str


POSITIVE_INT = Range(lambda v: v >= 1, "a positive integer")
NON_NEGATIVE_INT = Range(lambda v: v >= 0, "a non-negative integer")
POSITIVE = Range(lambda v: v > 0, "a positive number")
NON_NEGATIVE = Range(lambda v: v >= 0, "a non-negative number")
PROBABILITY = Range(lambda v: 0 <= v <= 1, "a probability in [0, 1]")
AT_LEAST_TWO = Range(lambda v: v >= 2, "an integer >= 2")
OPTIONAL_POSITIVE_INT = Range(lambda v: v is None or v >= 1, "null or a positive integer")
OPTIONAL_NON_NEGATIVE_INT = Range(lambda v: v is None or v >= 0, "null or a non-negative integer")
OPTIONAL_POSITIVE = Range(lambda v: v is None or v > 0, "null or a positive number")
OPTIONAL_AT_LEAST_TWO = Range(lambda v: v is None or v >= 2, "null or an integer >= 2")
# Bounds far beyond any real run that keep a typo (an extra digit or ten) from becoming a MemoryError,
# an overflow deep in torch or numpy, or a generator writing for a week.
MAX_SEED = 2**32 - 1  # 1000 * seed + stage still fits torch's and numpy's seeds
MAX_ROWS = 100_000_000
MAX_DIM = 65_536
MAX_QUEUE = 16_777_216
SEED = Range(lambda v: 0 <= v <= MAX_SEED, f"an integer in [0, {MAX_SEED}]")
DIM = Range(lambda v: 1 <= v <= MAX_DIM, f"an integer in [1, {MAX_DIM}]")


def ranged(default: Any = dataclasses.MISSING, valid: Range | None = None, *,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose values must lie in ``valid`` (kept in ``metadata["range"]``; checked by
    :func:`mcl.config.validation.check_config` after the types). ``default_factory`` as in ``field``.

    Example:
        >>> @dataclass
        ... class Section:
        ...     size: int = ranged(32, Range(lambda v: 8 <= v <= 1024, "an integer in [8, 1024]"))
    """
    return field(default=default, default_factory=default_factory, metadata={"range": valid})


def _names_only(template: str, allowed: set[str]) -> bool:
    """Whether every ``{field}`` of a format template is in ``allowed`` (and the template parses)."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None} <= allowed
    except ValueError:
        return False


def _prompt_fields(attribute: str) -> set[str]:
    """The fields a zero-shot prompt of ``attribute`` may name (:func:`mcl.data.captions.attribute_words`)."""
    return {attribute, "value", *(["texture_adj"] if attribute == "texture" else [])}


@dataclass
class DataConfig:
    """Where the images come from: a generator or an image-table directory."""

    # a generator (written into RUN_DIR/data), table (data.path: an image table, ImageFolder or shards), or an
    # image-text web format imported once (img2dataset, webdataset)
    source: Literal["trifeature", "overlay", "table", "captioned-trifeature", "captioned-fashion-mnist",
                    "captioned-trifeature-marked", "img2dataset", "webdataset"] = "trifeature"
    # image-table directory (source=table), where a generator writes, or the img2dataset folder /
    # WebDataset shard pattern (those are imported once into RUN_DIR/data as an image table)
    path: str | None = None
    # every image is resized to image_size x image_size (bilinear)
    image_size: int = ranged(32, Range(lambda v: 8 <= v <= 1024, "an integer in [8, 1024]"))
    # generators; img2dataset/webdataset: pairs read = n_train + n_test
    n_train: int = ranged(4000, Range(lambda v: 1 <= v <= MAX_ROWS, f"an integer in [1, {MAX_ROWS}]"))
    # generators; img2dataset/webdataset: the last n_test pairs are the test split
    n_test: int = ranged(1000, Range(lambda v: 0 <= v <= MAX_ROWS, f"an integer in [0, {MAX_ROWS}]"))
    seed: int = ranged(0, SEED)  # generators only
    on_bad_image: Literal["error", "skip"] = "error"  # an unreadable image: stop naming it, or drop it (logged)
    cache: bool = True  # keep the decoded table as a uint8 .npy cache beside it (DIR/.mcl_cache/)
    allow_outside_paths: bool = False  # table rows may name images outside the table directory
    # memory: decode once, keep on the device; stream: decode each batch from disk in worker processes;
    # auto: memory when the decoded set fits memory_budget_gb (default: half the available RAM / device memory)
    residency: Literal["auto", "memory", "stream"] = "auto"
    # residency auto: the most decoded data kept in memory; None: half
    memory_budget_gb: float | None = ranged(None, OPTIONAL_POSITIVE)
    # DataLoader processes decoding streamed images (0: in the training process)
    workers: int = ranged(2, NON_NEGATIVE_INT)
    # WebDataset shards streamed (residency: stream): random = the batch sampler's batches, each sample read at
    # its offset; sequential = shards in a seeded order read front to back, single-group batches bucketed
    # from the stream (mcl.data.stream); another run than random's, the same number of steps
    shard_order: Literal["random", "sequential"] = "random"
    # largest caption / .txt / .json member read, in bytes (checked from its size before reading it)
    max_text_bytes: int = ranged(1 << 20, Range(lambda v: 1 <= v <= 1 << 30, "an integer in [1, 1073741824] (bytes)"))
    # what a resume compares of every data file: stat = size and mtime; content = also its sha256 (reads all)
    fingerprint: Literal["stat", "content"] = "stat"
    # data without test rows: this fraction is held out as the test split, by a stable hash of each sample's
    # path/key (mcl.data.split); 0 = train on everything
    test_fraction: float = ranged(0.1, Range(lambda v: 0 <= v < 1, "a number in [0, 1)"))


@dataclass
class ModelConfig:
    """Backbone and projection head; each stage builds a fresh copy."""

    # a registered backbone (mcl.models.BACKBONES: convnet, resnet18, resnet50, vit, ...) or a zoo name
    # such as "timm:vit_tiny_patch16_224" / "torchvision:resnet50"
    backbone: str = "convnet"
    backbone_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments passed to the backbone
    width: float = ranged(1.0, POSITIVE)  # channel multiplier (backbones that take one)
    projection_dim: int = ranged(128, DIM)  # output of the MLP projection head (what the loss sees)
    hidden_dim: int = ranged(512, DIM)  # hidden width of the projection head


@dataclass
class ObjectiveConfig:
    """Base contrastive objective (see ``mcl.objectives``)."""

    name: str = "ntxent"  # a registered objective (mcl.objectives.OBJECTIVES): ntxent, simclr, dcl, moco, clip
    temperature: float = ranged(0.5, POSITIVE)  # softmax temperature tau of the contrastive loss
    # moco: negatives kept from earlier batches (each with its pseudo-label)
    queue_size: int = ranged(4096, Range(lambda v: 0 <= v <= MAX_QUEUE, f"an integer in [0, {MAX_QUEUE}]"))
    # moco: EMA rate of the key encoder
    momentum: float = ranged(0.99, Range(lambda v: 0 <= v < 1, "a number in [0, 1)"))


@dataclass
class AugmentConfig:
    """Batched kornia augmentation; ``color_jitter`` is the jitter strength s of SimCLR."""

    # random resized crop: the area fraction range kept
    crop_scale: tuple[float, float] = ranged((0.2, 1.0), Range(lambda v: 0 < v[0] <= v[1] <= 1,
                                                               "[min, max] with 0 < min <= max <= 1"))
    flip: float = ranged(0.5, PROBABILITY)  # probability of a horizontal flip
    # colour jitter strength s (brightness, contrast, saturation 0.8 s; hue min(0.5, 0.2 s))
    color_jitter: float = ranged(0.5, Range(lambda v: v >= 0, "a non-negative strength"))
    color_jitter_prob: float = ranged(0.8, PROBABILITY)  # probability of applying the colour jitter
    grayscale: float = ranged(0.2, PROBABILITY)  # probability of converting a view to grey
    blur: float = ranged(0.0, PROBABILITY)  # probability of a Gaussian blur
    # which code computes it, never what: fused = mcl.augment_fused (same output bit for bit, faster on CPU);
    # auto = fused on the device types where it measured faster (mcl.augment.AUTO_FUSED_DEVICES), else kornia
    backend: Literal["kornia", "fused", "auto"] = "auto"


@dataclass
class TrainConfig:
    """Optimisation of one stage."""

    epochs: int = ranged(10, POSITIVE_INT)  # per stage
    # global batch (under DDP each rank takes its slice); MCL batches come from one group
    batch_size: int = ranged(256, AT_LEAST_TWO)
    lr: float = ranged(2e-3, POSITIVE)  # peak learning rate, after the linear warm-up
    # on weights only (biases and norm parameters: none); decoupled for AdamW
    weight_decay: float = ranged(1e-4, NON_NEGATIVE)
    optimizer: Literal["adamw", "sgd"] = "adamw"  # sgd: with momentum 0.9
    warmup_epochs: float = ranged(1.0, NON_NEGATIVE)  # linear warm-up from 0 to train.lr over this many epochs
    # overrides warmup_epochs (e.g. the paper's 600 steps)
    warmup_steps: int | None = ranged(None, OPTIONAL_NON_NEGATIVE_INT)
    schedule: Literal["cosine", "constant"] = "cosine"  # after warm-up: cosine decay to 0, or the constant train.lr
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: Literal["off", "bf16", "fp16"] = "off"  # automatic mixed precision (fp16 with a gradient scaler)
    compile: bool = False  # torch.compile the model
    channels_last: bool = False  # channels-last memory format for the model and the batches (faster convs on GPU)
    threads: int = ranged(0, NON_NEGATIVE_INT)  # torch intra-op threads; 0 = torch default
    # per-stage cap on optimiser steps (quick runs on large sets); None: all epochs
    max_steps: int | None = ranged(None, OPTIONAL_POSITIVE_INT)


@dataclass
class MCLConfig:
    """The multistage part: stages, clustering and feature-aware negatives."""

    # number of training stages; auto: up to max_stages, continuing while the diagnostics say so
    stages: int | Literal["auto"] = ranged(3, Range(lambda v: v == "auto" or v >= 1, "a positive integer or 'auto'"))
    # k-means K per stage; pseudo-labels combine the clusters of every earlier stage
    clusters: int = ranged(10, AT_LEAST_TWO)
    # batch: every batch from one pseudo-label group (ClusterBatchSampler); mask: random batches, the loss ignores
    # candidates of other groups
    negatives: Literal["batch", "mask"] = "batch"
    init: Literal["scratch", "previous"] = "scratch"  # each stage trains a fresh encoder or continues the previous
    # how stages are combined: each stage's features L2-normalised then concatenated, or concatenated then normalised
    integration: Literal["normalized-concat", "concat-then-normalize"] = "normalized-concat"
    # which earlier stages' clusters form the groups: all (combined: same cluster in every stage) or latest (only the
    # last stage's clusters, as the released reference code's loop does)
    group_stages: Literal["all", "latest"] = "all"
    # smaller pseudo-label groups merge into the nearest group (by centroid)
    min_group_size: int = ranged(32, AT_LEAST_TWO)
    kmeans_restarts: int = ranged(5, POSITIVE_INT)  # k-means++ initialisations; the lowest inertia wins
    kmeans_iterations: int = ranged(100, POSITIVE_INT)  # Lloyd iterations per restart (at most)
    # torch (sampled fit, chunked assignment) or faiss (if installed); auto: torch
    kmeans_backend: Literal["auto", "torch", "faiss"] = "auto"
    # k-means fits on a seeded sample of this many points, then assigns all in chunks; None: max(64 K, 8192)
    kmeans_sample: int | None = ranged(None, OPTIONAL_AT_LEAST_TWO)
    spherical: bool = False  # cluster by cosine similarity (centroids re-normalised each step)
    # each stage's embeddings of the training set, stage-s/embeddings.npy (k-means reads it as a memory map):
    # auto = float32 up to a 1 GiB float32 map (small runs keep their exact values), else float16 (half the disk)
    embedding_dtype: Literal["auto", "float16", "float32"] = "auto"
    # a stage whose pseudo-labels leave fewer than 2 groups trains like plain SimCLR: an error unless true
    allow_single_group: bool = False
    max_stages: int = ranged(3, AT_LEAST_TWO)  # mcl.stages: auto trains at most this many stages


@dataclass
class EvalConfig:
    """Per-attribute probes and reference representations."""

    knn_k: int = ranged(20, POSITIVE_INT)  # neighbours of the kNN probe (cosine, votes weighted by exp(sim / 0.07))
    # L-BFGS iterations of the linear probe (at most); image-text runs: 0 = no linear rows (zero-shot and retrieval
    # need none; the probes are most of an image-text evaluation's time)
    linear_max_iter: int = ranged(1000, NON_NEGATIVE_INT)
    linear_c: float = ranged(1.0, POSITIVE)  # inverse L2 regularisation of the linear probe (scikit-learn's C)
    ensemble: bool = True  # train the ensemble-k baseline
    finetune_baseline: bool = False  # train the finetune-k baseline: plain fine-tuning with MCL's step budget
    # multimodal: CLIP-blind test pairs per attribute, mined with stage 0 (0: off)
    clip_blind_pairs: int = ranged(100, NON_NEGATIVE_INT)
    references: bool = True  # random-init encoder and raw pixels
    # multimodal paired benchmark: image pairs per attribute (0: off)
    paired_pairs: int = ranged(500, Range(lambda v: v >= 0, "a non-negative integer (0: off)"))
    # multimodal zero-shot prompts per attribute, e.g. {dots: ["a garment with {dots} dots"]}: each template names
    # {<attribute>} or {value}; replaces mcl's prompts of that attribute (others: "a photo of a {value} object", ...)
    zeroshot_prompts: dict[str, list[str]] = ranged(valid=Range(
        lambda v: all(ts and all(_names_only(t, _prompt_fields(a)) for t in ts) for a, ts in v.items()),
        "a mapping of attribute -> a non-empty list of templates whose only fields are {<attribute>} or {value}"),
        default_factory=dict)
    # image runs on data without attribute columns: held-out images whose two augmented views give the label-free
    # rows (alignment, uniformity, kNN agreement, view match); 0: off
    view_images: int = ranged(1000, Range(lambda v: v >= 0, "a non-negative integer (0: off)"))


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

    enabled: bool = False  # image-text MCL (needs objective.name: clip)
    # a registered two-tower model (mcl.models.two_tower.TWO_TOWER_MODELS): small, pretrained-towers,
    # open_clip, hf-clip, or open_clip:<arch> / hf:<path>
    model: str = "small"
    arch: str | None = None  # open_clip model name, e.g. "ViT-B-32"
    pretrained: str | None = None  # open_clip tag or checkpoint; hf-clip directory; pretrained-towers text model dir
    embed_dim: int = ranged(128, POSITIVE_INT)  # small and pretrained-towers (the adapters keep their own)
    init: Literal["pretrained", "previous", "scratch"] = "pretrained"  # where each stage starts (class docstring)
    stage0: bool = False  # cluster the initial model's image embeddings so stage 1 already has groups
    # the initial model's weights: "aligned" (the cached `mcl align` model, built when missing) or a checkpoint path
    stage0_checkpoint: str | None = None
    integrate_stage0: bool = False  # the integrated model (mcl-k, mcl.load) also includes stage 0
    lock_image: bool = False  # freeze the image tower (but its last unlocked_image_groups layer groups)
    # with lock_image: the last N image layer groups stay trainable
    unlocked_image_groups: int = ranged(0, NON_NEGATIVE_INT)
    # every image-tower BatchNorm keeps its running statistics (unlocked groups too): single-group MCL batches
    # would otherwise pull them towards one group's statistics (open_clip: --lock-image-freeze-bn-stats)
    freeze_bn_stats: bool = False
    lock_text: bool = False  # freeze the text tower (but its last unlocked_text_groups layer groups)
    # with lock_text: the last N text layer groups stay trainable
    unlocked_text_groups: int = ranged(0, NON_NEGATIVE_INT)
    mask_duplicate_captions: bool = True  # two pairs with the same caption are not each other's negatives
    # pretrained-towers with the text tower and all but the last image groups locked and at most a flip as
    # augmentation: auto = compute the locked parts' outputs once and train on them
    # (mcl.modalities.image_text.cache); "off" = never (quoted: YAML reads a bare off as false)
    cache_locked_features: Literal["auto", "off"] = "auto"
    # initial CLIP temperature (learned, clamped)
    init_temperature: float = ranged(0.07, Range(lambda v: 0 < v <= 1, "a number in (0, 1]"))
    # caption tokens (longer captions are cut)
    context_length: int = ranged(32, Range(lambda v: v >= 3, "an integer >= 3"))
    # pretrained-towers: resize images to this size (None: keep)
    image_resolution: int | None = ranged(None, Range(lambda v: v is None or 8 <= v <= 1024,
                                                      "null or an integer in [8, 1024]"))
    image_width: float = ranged(1.0, POSITIVE)  # small: ConvNet channel multiplier
    text_width: int = ranged(128, POSITIVE_INT)  # small: transformer width
    text_layers: int = ranged(2, POSITIVE_INT)  # small: transformer layers
    text_heads: int = ranged(4, POSITIVE_INT)  # small: attention heads (must divide text_width)
    # captioned-trifeature: probability of leaving each attribute's word out of a caption, e.g. {texture: 0.8}
    caption_drop_prob: dict[str, float] = ranged(valid=Range(lambda v: all(0 <= p <= 1 for p in v.values()),
                                                             "a mapping of attribute -> probability in [0, 1]"),
                                                 default_factory=dict)


@dataclass
class Config:
    """A whole run."""

    seed: int = 0  # stage s trains with seed 1000 * seed + s (k-means and batch order likewise)
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


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# Ranges checked after type validation: key -> (predicate, expectation).
