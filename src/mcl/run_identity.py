"""A run's identity: the config values that change what training computes, their fingerprint, and what changed.

A run records :func:`training_values` of its config in the manifest; resuming compares them with
:func:`changed_keys` (``train.epochs (3 -> 5)``), so a changed config is refused naming the keys.
Left out, because they cannot change the result's meaning: the device and CPU thread count (threads may
move the last bits of float reductions; refusing a resume on another machine would strand runs, and two
concurrent writers are refused by the run directory's lock, :mod:`mcl.run_lock`), where images live
(``data.residency``, ``workers``, ``memory_budget_gb``: the same run bit for bit), limits that can only
refuse data (``data.max_text_bytes``), how data files are fingerprinted (``data.fingerprint``), the
augmentation backend (the fused code computes kornia's bits), the evaluation settings, and how many stages
to train (:data:`GROWABLE_KEYS`: no stage depends on them, so the same command with more stages grows a
finished run and with fewer scores the first k).

Example::

    config_fingerprint(config)            # '3f2a...' (16 hex digits)
    changed_keys(manifest["config"], config)   # ['train.epochs (3 -> 5)']
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mcl.config import Config

# How many stages to train, and whether a collapsed stage may train, do not change what any one stage computes.
GROWABLE_KEYS = ("stages", "max_stages", "allow_single_group")
# Which finished members mcl-k combines: decided at evaluation (``mcl eval --set``), no stage depends on it.
EVALUATION_KEYS = ("multimodal.integrate_stage0",)


def training_values(config: Config) -> dict[str, Any]:
    """The config keys that change what training computes, as a nested dict."""
    values = config.to_dict()
    for key in GROWABLE_KEYS:
        values["mcl"].pop(key, None)
    # Parallelism does not change the result's meaning: CPU thread counts may move the last bits of float
    # reductions, and refusing a resume on a machine with another core count would strand runs. Two writers
    # with different thread counts are refused by the run directory's lock (mcl.run_lock), not by this.
    values["train"].pop("threads", None)
    values["train"].pop("device", None)
    # Where images live (the same run, bit for bit) and a size limit that can only refuse data, never change it.
    for key in ("residency", "workers", "memory_budget_gb", "max_text_bytes", "fingerprint"):
        values["data"].pop(key, None)
    values["augment"].pop("backend", None)  # the fused code computes kornia's bits (tests/test_augment.py)
    values.pop("eval", None)
    for key in EVALUATION_KEYS:
        section, name = key.split(".")
        values[section].pop(name, None)
    return values


def config_fingerprint(config: Config) -> str:
    """Hash of everything in the config that changes what training computes."""
    return hashlib.sha256(json.dumps(training_values(config), sort_keys=True).encode()).hexdigest()[:16]


def _flatten(values: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": inner for name, inner in value.items()})
        else:
            flat[key] = value
    return flat


def changed_keys(started: dict[str, Any], config: Config) -> list[str]:
    """``key (old -> new)`` for every training key that differs from the values a run started with.

    A key that did not exist when the run started (added to mcl since) counts as unchanged if it
    has its default value, so upgrading mcl does not strand runs in progress.
    """
    old, new = _flatten(started), _flatten(training_values(config))
    for key in GROWABLE_KEYS:  # recorded by runs started before these keys left the identity
        old.pop(f"mcl.{key}", None)
    for key in EVALUATION_KEYS:
        old.pop(key, None)
    default = _flatten(training_values(Config()))
    missing = object()
    changed = []
    for key in dict.fromkeys([*old, *new]):
        before, after = old.get(key, default.get(key, missing)), new.get(key, missing)
        if before != after:
            changed.append(f"{key} ({'absent' if before is missing else repr(before)} -> "
                           f"{'absent' if after is missing else repr(after)})")
    return changed
