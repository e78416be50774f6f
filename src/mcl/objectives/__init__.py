"""Base contrastive objectives, each honouring MCL's pseudo-label negative restriction.

``build_objective(name, **kwargs)`` looks an objective up in :data:`OBJECTIVES`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mcl.objectives.core import info_nce, same_group_mask
from mcl.objectives.moco import MoCoLoss, MoCoState, MomentumEncoder
from mcl.objectives.ntxent import DCLLoss, NTXentLoss

OBJECTIVES: dict[str, Callable[..., nn.Module]] = {
    "ntxent": NTXentLoss,
    "simclr": NTXentLoss,
    "dcl": DCLLoss,
    "moco": MoCoLoss,
}


def register_objective(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add an objective to the registry (e.g. from a plugin or a later module)."""
    OBJECTIVES[name] = factory


def build_objective(name: str, **kwargs: object) -> nn.Module:
    """Instantiate the objective registered as ``name``."""
    if name not in OBJECTIVES:
        raise KeyError(f"unknown objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name](**kwargs)


__all__ = ["OBJECTIVES", "DCLLoss", "MoCoLoss", "MoCoState", "MomentumEncoder", "NTXentLoss", "build_objective",
           "info_nce", "register_objective", "same_group_mask"]
