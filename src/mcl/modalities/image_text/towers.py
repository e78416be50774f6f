"""The two-tower model of an image-text run: its towers locked as configured, its word tokenizer on disk.

``lock_towers`` freezes each tower except its last ``multimodal.unlocked_*_groups`` layer groups
(locked groups stay in eval mode). ``small`` models use a word vocabulary fitted once on the
training captions and kept in ``RUN_DIR/tokenizer.json`` (:func:`run_tokenizer`), so every stage,
ensemble member and reloaded model (:func:`load_run_two_tower`) tokenizes alike; other models bring
their own tokenizer.

Example:
    >>> tokenizer = run_tokenizer(config, table.captions, run)     # None unless multimodal.model is small
    >>> model = build_two_tower_from_config(config.multimodal, tokenizer)
    >>> lock_towers(model, config.multimodal)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mcl import distributed
from mcl.config import Config, MultimodalConfig
from mcl.errors import ConfigError, RunDirError
from mcl.files import read_json, write_json
from mcl.models.text import WordTokenizer
from mcl.models.two_tower import TwoTowerModel, build_two_tower_from_config
from mcl.run import TOKENIZER_FILE, RunDirectory


def lock_towers(model: TwoTowerModel, config: MultimodalConfig) -> None:
    """Freeze the towers as configured (``lock_image`` / ``lock_text`` with their unlocked groups)."""
    for tower, locked, unlocked in (("image", config.lock_image, config.unlocked_image_groups),
                                    ("text", config.lock_text, config.unlocked_text_groups)):
        if not locked:
            continue
        try:
            getattr(model, f"lock_{tower}")(unlocked)
        except ConfigError as exc:
            raise ConfigError(f"config key 'multimodal.unlocked_{tower}_groups': {exc}") from None
    if config.freeze_bn_stats:
        model.freeze_image_bn_stats()


def run_tokenizer(config: Config, captions: Sequence[str], run: RunDirectory) -> WordTokenizer | None:
    """``small`` models: the word tokenizer of the run, fitted once on the training captions.

    Written to ``RUN_DIR/tokenizer.json`` (recorded in the manifest) and read back on resume, so all
    stages, ensemble members and :func:`load_run_two_tower` share one vocabulary. None for models
    that bring their own tokenizer.
    """
    if config.multimodal.model != "small":
        return None
    saved = _saved_tokenizer(run)
    if saved is not None:
        return saved
    tokenizer = WordTokenizer.fit(captions, context_length=config.multimodal.context_length)
    if distributed.is_main_process():
        path = run.root / TOKENIZER_FILE
        write_json(path, tokenizer.to_dict())
        run.record(path)
    distributed.barrier()
    return tokenizer


def _saved_tokenizer(run: RunDirectory) -> WordTokenizer | None:
    """The run's recorded word tokenizer, or None if there is none (yet)."""
    path = run.root / TOKENIZER_FILE
    return WordTokenizer.from_dict(read_json(path)) if run.is_finished(path) else None


def load_run_two_tower(config: Config, run_dir: str | Path) -> TwoTowerModel:
    """An untrained model of a run's architecture (tokenizer from the run), ready for ``load_state_dict``."""
    tokenizer = None
    if config.multimodal.model == "small":
        run = RunDirectory(run_dir)
        tokenizer = _saved_tokenizer(run)
        if tokenizer is None:
            raise RunDirError(f"{run.root / TOKENIZER_FILE}: missing or unrecorded; it is written when training "
                              "starts")
    return build_two_tower_from_config(config.multimodal, tokenizer, load_pretrained=False)
