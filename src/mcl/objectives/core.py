"""The one masked InfoNCE kernel every objective is built from.

Feature-aware negative sampling (MCL) only changes *which* candidates count as an anchor's
negatives; this module takes that as a boolean mask, so every base objective (NT-Xent, DCL, CLIP,
MoCo) honours it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def info_nce(
    logits: torch.Tensor,
    positive_index: torch.Tensor,
    negative_mask: torch.Tensor,
    decoupled: bool = False,
) -> torch.Tensor:
    r"""Mean InfoNCE over anchors, with an explicit set of negatives per anchor.

    For anchor :math:`i` with positive :math:`p(i)` and negatives :math:`N(i)`:

    .. math::
        \ell_i = -s_{i,p(i)} + \log\Big(e^{s_{i,p(i)}} + \sum_{k \in N(i)} e^{s_{ik}}\Big)
        \quad\text{(decoupled: the } e^{s_{i,p(i)}} \text{ term is dropped, DCL)}

    Computed with ``logsumexp`` (never ``exp`` then ``log``). Anchors with an empty :math:`N(i)`
    (e.g. alone in their pseudo-label group) carry no contrastive signal and are left out of the
    mean; if no anchor has a negative the loss is 0 with a graph, so ``backward`` still works.

    Args:
        logits: ``(M, C)`` similarities already divided by the temperature.
        positive_index: ``(M,)`` column of each anchor's positive.
        negative_mask: ``(M, C)`` bool, True where the candidate is a valid negative. Must be False
            at the positive and at the anchor itself.
        decoupled: drop the positive from the denominator (DCL, Yeh et al. 2022).
    """
    positives = logits.gather(1, positive_index[:, None]).squeeze(1)
    keep = negative_mask.clone()
    if not decoupled:
        keep.scatter_(1, positive_index[:, None], True)
    masked = logits.masked_fill(~keep, float("-inf"))
    has_negative = negative_mask.any(dim=1)
    if not bool(has_negative.any()):
        return logits.sum() * 0.0
    losses = torch.logsumexp(masked[has_negative], dim=1) - positives[has_negative]
    return losses.mean()


def as_labels(labels: torch.Tensor | np.ndarray | Sequence[int] | None, device: torch.device) -> torch.Tensor | None:
    """Pseudo-labels (or caption ids) as an int64 tensor on ``device``: numpy arrays and lists are accepted too."""
    if labels is None:
        return None
    return torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels, device=device).long()


def same_group_mask(anchor_groups: torch.Tensor | None, candidate_groups: torch.Tensor | None,
                    rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """``(rows, cols)`` bool: True where anchor and candidate share a pseudo-label (all True without labels)."""
    if anchor_groups is None or candidate_groups is None:
        return torch.ones(rows, cols, dtype=torch.bool, device=device)
    return anchor_groups[:, None] == candidate_groups[None, :]


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is half/bfloat16, else unchanged (float32 and float64 keep their precision).

    The losses compute their logits in at least float32: a logit of 1/0.07 exponentiated inside
    ``logsumexp`` loses most of fp16's 10 mantissa bits, and fp16 overflows at 65504.
    """
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows, returning ``x``'s dtype (float64 stays float64, for exact parity checks).

    Half/bfloat16 rows are normalised in float32 and cast back: squaring in fp16 overflows for
    entries above ~256 and underflows below ~1e-4, and an eps of 1e-8 is 0 in fp16, which would
    turn an all-zero row into 0/0 = NaN. Call ``l2_normalize(upcast(x))`` to keep the float32 result.
    """
    return F.normalize(upcast(x), dim=-1, eps=1e-8).to(x.dtype)
