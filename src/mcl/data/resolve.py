"""From a config's ``data`` section to an image table on disk: generate, import or point at it.

:func:`resolve_data` fixes ``data.path`` (generating a synthetic set into ``RUN_DIR/data`` once, or
importing img2dataset / WebDataset pairs there once); :func:`load_table_for` opens the table it points
to; :func:`data_fingerprint` identifies the training data for resume checks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mcl import distributed
from mcl.config import WEB_SOURCES, Config
from mcl.errors import ConfigError
from mcl.run import DATA_DIR

logger = logging.getLogger("mcl")


def resolve_data(config: Config, run_dir: Path, data_dir: str | Path | None = None, progress: bool = True) -> Config:
    """Fix ``data.path`` (generating the data set if needed) and return the updated config.

    ``data_dir`` overrides the config's data set with an image-table directory.
    """
    from mcl.data.generators import GENERATORS

    data = config.data
    if data_dir is not None:
        data = replace(data, source="table", path=str(Path(data_dir).resolve()))
    if data.source == "table":
        if data.path is None:
            raise ConfigError("config key 'data.path': required when data.source is 'table' (or pass --data DIR)")
        return replace(config, data=data)
    if data.source in WEB_SOURCES:
        return _import_image_text(config, run_dir, progress)
    target = Path(data.path) if data.path else run_dir / DATA_DIR
    # Only captioned Trifeature (marked or not) takes caption options; the other generators have none.
    options = ({"drop_prob": config.multimodal.caption_drop_prob}
               if data.source in ("captioned-trifeature", "captioned-trifeature-marked") else {})
    _write_table_once(target, f"generating the {data.source} data set in {target}", lambda: GENERATORS[data.source](
        target, n_train=data.n_train, n_test=data.n_test, image_size=data.image_size, seed=data.seed,
        progress=progress, **options))
    return replace(config, data=replace(data, path=str(target.resolve())))


def _write_table_once(target: Path, message: str, write: Callable[[], object]) -> None:
    """Run ``write`` (which creates the image table ``target``) on rank 0 unless the table exists; all wait."""
    if not (target / "labels.csv").exists() and distributed.is_main_process():
        logger.info("%s", message)
        write()
    distributed.barrier()


def _import_image_text(config: Config, run_dir: Path, progress: bool) -> Config:
    """img2dataset/WebDataset pairs, imported once into ``RUN_DIR/data``; the config then points at that table."""
    from mcl.data.captions import import_image_text

    data = config.data
    target = run_dir / DATA_DIR
    _write_table_once(target, f"importing {data.source} pairs from {data.path} into {target}",
                      lambda: import_image_text(data.source, data.path, target, data.n_train, data.n_test,
                                                data.image_size, data.on_bad_image, progress,
                                                max_text_bytes=data.max_text_bytes))
    return replace(config, data=replace(data, source="table", path=str(target.resolve())))


def load_table_for(config: Config, progress: bool = True, device: torch.device | None = None):
    """The images a (resolved) config points to: an image table, or an ImageFolder layout (no labels.csv).

    ``data.residency`` (``auto``: by the decoded size against the memory budget of ``device``) decides
    whether the images are decoded now (memory) or when read (stream, :class:`~mcl.data.images.DiskImages`).
    Data without a test split gets one (``data.test_fraction``, :func:`mcl.data.split.hold_out`).
    """
    from mcl.data.images import choose_residency
    from mcl.data.sources import count_rows, open_source
    from mcl.data.split import hold_out

    data = config.data
    residency = data.residency
    if residency == "auto" or residency == "stream":
        count = count_rows(data.path) if residency == "auto" else 0
        residency = choose_residency(residency, count, data.image_size, data.memory_budget_gb,
                                     device or torch.device("cpu"))
    table = open_source(data.path, data.image_size, data.on_bad_image, data.cache, data.allow_outside_paths, progress,
                        stream=residency == "stream", max_text_bytes=data.max_text_bytes)
    return hold_out(table, data.test_fraction, str(data.path))


def data_fingerprint(config: Config, train_rows: int) -> dict[str, Any]:
    """Identity of the training data for resume checks: row count, the labels.csv (or folder listing) digest
    and the digest of every file's size and mtime (:mod:`mcl.data.data_files`)."""
    return data_identity(config, train_rows)[0]


def data_identity(config: Config, train_rows: int) -> tuple[dict[str, Any], Any]:
    """:func:`data_fingerprint` and the :class:`~mcl.data.data_files.DataFiles` listing it was made from
    (which :meth:`mcl.run.RunDirectory.start` keeps beside the manifest to name a changed file)."""
    from mcl.data.data_files import source_files
    from mcl.data.sources import source_digest

    files = source_files(config.data.path, config.data.fingerprint)
    fingerprint = {"train_rows": train_rows, "labels_sha256": source_digest(config.data.path)[:16],
                   **files.fingerprint()}
    return fingerprint, files
