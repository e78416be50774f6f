"""``mcl eval RUN --set eval.key=value``: evaluation settings changed for one evaluation, nothing else.

A run's training keys are fixed by what it trained; only ``eval.*`` keys (probes, their sizes, which
baselines to score) and :data:`mcl.run_identity.EVALUATION_KEYS` (which finished members ``mcl-k``
combines) can differ at evaluation. Any other key is a one-line :class:`ConfigError`.

Example: ``with_eval_overrides(config, ["eval.clip_blind_pairs=0"])`` -> the config with CLIP-blind off.
"""

from __future__ import annotations

from mcl.config import Config, apply_overrides, config_from_dict
from mcl.errors import ConfigError
from mcl.run_identity import EVALUATION_KEYS


def with_eval_overrides(config: Config, overrides: list[str]) -> Config:
    """``config`` with ``eval.KEY=VALUE`` overrides applied and validated (other keys are refused)."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("eval.") and key not in EVALUATION_KEYS:
            allowed = ", ".join(["eval.*", *EVALUATION_KEYS])
            raise ConfigError(f"mcl eval --set {item!r}: only {allowed} can change at evaluation (the run's other "
                              "keys are what it trained with); retrain with 'mcl train --set' to change them")
    return config_from_dict(apply_overrides(config.to_dict(), overrides))
