"""NT-Xent (SimCLR) and DCL losses with MCL's feature-aware negatives."""

from __future__ import annotations

import torch
from torch import nn

from mcl import distributed
from mcl.objectives.core import as_labels, info_nce, l2_normalize, same_group_mask, upcast
from mcl.objectives.registry import register_objective


def two_view_targets(
    local_rows: int, global_rows: int, offset: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive column and self column of each local anchor among the ``2 * global_rows`` candidates.

    Candidates are ``[view_a of all ranks, view_b of all ranks]``; anchors are
    ``[local view_a, local view_b]``.
    """
    own = torch.arange(local_rows, device=device) + offset
    self_index = torch.cat([own, own + global_rows])
    positive_index = torch.cat([own + global_rows, own])
    return positive_index, self_index


@register_objective("ntxent")
@register_objective("simclr")
class NTXentLoss(nn.Module):
    r"""Normalised temperature-scaled cross entropy (SimCLR), optionally decoupled (DCL).

    For a batch of :math:`n` samples seen in two views, each of the :math:`2n` embeddings
    :math:`z_i` (L2-normalised) is an anchor whose positive :math:`z_{p(i)}` is the other view of the
    same sample:

    .. math::
        \ell_i = -\frac{z_i^\top z_{p(i)}}{\tau}
                 + \log\Big(e^{z_i^\top z_{p(i)}/\tau} + \sum_{k\in N(i)} e^{z_i^\top z_k/\tau}\Big)

    Plain SimCLR uses every other embedding as a negative, :math:`N(i)=\{k\ne i, p(i)\}`. With
    MCL pseudo-labels :math:`g`, negatives are restricted to the anchor's group,
    :math:`N(i)=\{k\ne i,p(i) : g_k=g_i\}`. ``decoupled=True`` drops the positive term from the
    denominator (DCL, Yeh et al. 2022). Under ``torch.distributed`` the embeddings of all ranks are
    gathered with gradient, so negatives come from the global batch.

    Example:
        >>> loss_fn = NTXentLoss(temperature=0.5)
        >>> z_a, z_b = model(view_a), model(view_b)
        >>> loss = loss_fn(z_a, z_b, pseudo_labels)  # pseudo_labels=None: plain SimCLR
    """

    def __init__(self, temperature: float = 0.5, decoupled: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.decoupled = decoupled

    def forward(
        self, z_a: torch.Tensor, z_b: torch.Tensor, pseudo_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Loss of the local anchors against the (global) two-view batch."""
        local_rows, device = z_a.shape[0], z_a.device
        pseudo_labels = as_labels(pseudo_labels, device)  # numpy arrays (e.g. from combine_cluster_labels) too
        z_a, z_b = upcast(z_a), upcast(z_b)  # float32 at least, float64 kept
        # Anchors and candidates are normalised separately (not one shared tensor): the autograd graph,
        # and so every result, stays bit for bit what earlier versions computed.
        anchors = torch.cat([l2_normalize(z_a), l2_normalize(z_b)])
        all_a = distributed.gather_with_grad(l2_normalize(z_a))
        all_b = distributed.gather_with_grad(l2_normalize(z_b))
        candidates = torch.cat([all_a, all_b])
        global_rows = all_a.shape[0]
        offset = distributed.local_offset(local_rows, device)

        logits = anchors @ candidates.T / self.temperature
        positive_index, self_index = two_view_targets(local_rows, global_rows, offset, device)
        if pseudo_labels is not None:
            global_labels = distributed.gather_no_grad(pseudo_labels)
            mask = same_group_mask(pseudo_labels.repeat(2), global_labels.repeat(2), *logits.shape, device)
        else:
            mask = same_group_mask(None, None, *logits.shape, device)
        rows = torch.arange(2 * local_rows, device=device)
        mask[rows, self_index] = False
        mask[rows, positive_index] = False
        return info_nce(logits, positive_index, mask, decoupled=self.decoupled)


@register_objective("dcl")
class DCLLoss(NTXentLoss):
    r"""Decoupled contrastive loss: NT-Xent without the positive in the denominator.

    .. math::
        \ell_i = -\frac{z_i^\top z_{p(i)}}{\tau} + \log\sum_{k\in N(i)} e^{z_i^\top z_k/\tau}

    Negatives :math:`N(i)` follow the same MCL restriction as :class:`NTXentLoss`.

    Example:
        >>> loss = DCLLoss(temperature=0.1)(z_a, z_b, pseudo_labels)
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__(temperature=temperature, decoupled=True)
