"""Base contrastive objectives, each honouring MCL's pseudo-label negative restriction.

``build_objective(name, **kwargs)`` looks an objective up in :data:`OBJECTIVES`; each objective
registers itself beside its definition with ``@register_objective(name)`` (see
:mod:`mcl.objectives.registry`), and ``check_objective(name, kwargs)`` validates a config first.
"""

from __future__ import annotations

from mcl.objectives.core import info_nce, l2_normalize, same_group_mask, upcast
from mcl.objectives.moco import MoCoLoss, MoCoState, MomentumEncoder
from mcl.objectives.ntxent import DCLLoss, NTXentLoss
from mcl.objectives.registry import OBJECTIVES, build_objective, check_objective, register_objective

__all__ = ["OBJECTIVES", "DCLLoss", "MoCoLoss", "MoCoState", "MomentumEncoder", "NTXentLoss", "build_objective",
           "check_objective", "info_nce", "l2_normalize", "register_objective", "same_group_mask", "upcast"]
