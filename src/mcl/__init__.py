"""mcl: Multistage Contrastive Learning (ECCV 2024) for PyTorch.

Train in stages; after each stage cluster the training set's embeddings; in the next stage draw
each anchor's negatives only from its own pseudo-label group (the combination of its clusters in
all earlier stages); finally concatenate the features of all stages.

>>> import mcl
>>> run = mcl.train("configs/demo.yaml", out="runs/demo")
>>> encoder = mcl.load("runs/demo")
>>> features = encoder.embed(images)  # uint8 (N, H, W, 3) -> (N, D)

Names are imported on first use, so ``import mcl.sampling`` stays light (no kornia, no matplotlib).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Run": "mcl.api", "load": "mcl.api", "train": "mcl.api", "evaluate": "mcl.api", "load_member": "mcl.api",
    "Config": "mcl.config", "load_config": "mcl.config",
    "MCLError": "mcl.errors",
    "MultistageEncoder": "mcl.integration",
    "MultistageTwoTower": "mcl.modalities.image_text.multistage",
    "ClusterBatchSampler": "mcl.sampling", "combine_cluster_labels": "mcl.sampling",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    try:  # a subpackage, e.g. mcl.data after a plain `import mcl`
        return importlib.import_module(f"mcl.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module 'mcl' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
