"""mcl: Multistage Contrastive Learning (ECCV 2024) for PyTorch.

Train in stages; after each stage cluster the training set's embeddings; in the next stage draw
each anchor's negatives only from its own pseudo-label group (the combination of its clusters in
all earlier stages); finally concatenate the features of all stages.

>>> import mcl
>>> run = mcl.train("configs/demo.yaml", out="runs/demo")
>>> encoder = mcl.load("runs/demo")
>>> features = encoder.embed(images)  # uint8 (N, H, W, 3) -> (N, D)

``mcl.__all__`` is the documented API: a whole run (:func:`train`, :func:`load`, :func:`evaluate`, ...) and
the pieces for MCL inside your own training loop (:class:`PseudoLabeller`, :func:`cluster_stage`,
:class:`ClusterBatchSampler`, :class:`NTXentLoss`, ...). Names are imported on first use, so
``import mcl.sampling`` stays light (no kornia, no matplotlib).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The documented API (README, examples/): name -> the module that defines it, imported on first use.
_EXPORTS = {
    # a whole run: train, reload, evaluate
    "Run": "mcl.api", "train": "mcl.api", "load": "mcl.api", "load_member": "mcl.api", "evaluate": "mcl.api",
    "Config": "mcl.config", "AugmentConfig": "mcl.config", "load_config": "mcl.config",
    "config_from_dict": "mcl.config",
    "MCLError": "mcl.errors",
    "MultistageEncoder": "mcl.integration",
    "MultistageTwoTower": "mcl.modalities.image_text.multistage",
    # MCL inside your own training loop
    "PseudoLabeller": "mcl.pseudolabels", "cluster_stage": "mcl.pseudolabels",
    "ClusterBatchSampler": "mcl.sampling", "RandomBatchSampler": "mcl.sampling",
    "NTXentLoss": "mcl.objectives", "CLIPLoss": "mcl.objectives.clip",
    "build_encoder": "mcl.models", "register_backbone": "mcl.models",
    "build_augmentation": "mcl.augment", "to_float_images": "mcl.augment",
    "encode_images": "mcl.embedding",
    "OpenCLIPAdapter": "mcl.models.two_tower",
    # data and probes the examples use
    "load_table": "mcl.data.sources", "generate_trifeature": "mcl.data.trifeature",
    "generate_captioned_trifeature": "mcl.data.captions",
    "linear_probe": "mcl.evaluation.probes",
}


def __getattr__(name: str) -> Any:
    # Only the names above: a submodule is an attribute once imported (``import mcl.data``), as in any package.
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(f"module 'mcl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
