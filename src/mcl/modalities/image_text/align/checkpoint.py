"""The aligned stage 0 on disk: build it once, cache it under a digest of its settings, load it.

Output of :func:`build_aligned_stage0`: one safetensors file (written atomically), the *full*
``state_dict`` of the model, metadata ``mcl_align`` (JSON: the settings, the model's keyword
arguments, the corpus, the time taken, the Trifeature zero-shot accuracies). The name
:data:`~mcl.modalities.image_text.align.ALIGNED` means
``$MCL_CACHE_DIR/aligned-stage0-<digest of the settings>.safetensors`` (default cache ``~/.cache/mcl``).
A file lock (``<file>.lock``) makes concurrent processes (e.g. DDP ranks) build it once: the others
wait, then load.

Example:
    >>> model = aligned_stage0(ALIGNED)                   # built on first use (a few minutes), then cached
    >>> build_aligned_stage0(load_align_settings(), "stage0.safetensors")
    >>> load_stage0_into(run_model, "stage0.safetensors")  # what multimodal.stage0_checkpoint does
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcl.errors import ConfigError, RunDirError
from mcl.files import load_tensors_with_metadata, save_tensors
from mcl.logging_utils import logger, record_time
from mcl.modalities.image_text.align.corpus import build_corpus, installed_corpus
from mcl.modalities.image_text.align.fit import align_towers
from mcl.modalities.image_text.align.names import ALIGNED, CACHE_ENV
from mcl.modalities.image_text.align.settings import AlignSettings, load_align_settings
from mcl.modalities.image_text.align.zeroshot import trifeature_zeroshot
from mcl.models.two_tower import PretrainedTowers

METADATA_KEY = "mcl_align"


def cache_dir() -> Path:
    """Where :data:`ALIGNED` models are cached: ``$MCL_CACHE_DIR``, else ``~/.cache/mcl``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mcl")


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
def file_lock(path: Path) -> Iterator[None]:
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
        with file_lock(path):
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
