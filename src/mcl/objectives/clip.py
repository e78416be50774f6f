"""CLIP's symmetric image-text InfoNCE with MCL's feature-aware negatives."""

from __future__ import annotations

import math

import torch
from torch import nn

from mcl import distributed
from mcl.objectives.core import as_labels, info_nce, l2_normalize, same_group_mask, upcast

MAX_LOGIT_SCALE = 100.0
"""Upper bound of the multiplier ``exp(logit_scale)`` (CLIP, Radford et al. 2021, Sec. 2.5)."""


def new_logit_scale(init_temperature: float = 0.07) -> nn.Parameter:
    """Learnable log inverse temperature, initialised to ``log(1 / init_temperature)`` (CLIP's 1/0.07)."""
    if not 0 < init_temperature <= 1:
        raise ValueError(f"init_temperature must be in (0, 1], got {init_temperature}")
    return nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))


@torch.no_grad()
def clamp_logit_scale_(logit_scale: torch.Tensor) -> None:
    """Clamp the log-scale parameter in place to ``[0, log 100]``; call after every optimiser step.

    Clamping the *parameter* (as open_clip does) keeps it where its gradient is alive; the loss also
    clamps ``exp(logit_scale)`` at 100, so an unclamped parameter can never blow up the logits.
    """
    logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))


def logit_multiplier(logit_scale: torch.Tensor) -> torch.Tensor:
    """The multiplier ``min(exp(logit_scale), 100)`` applied to cosine similarities (float32 at least)."""
    return upcast(logit_scale).exp().clamp(max=MAX_LOGIT_SCALE)


class CLIPLoss(nn.Module):
    r"""Symmetric image->text and text->image InfoNCE (CLIP), negatives restricted to a pseudo-label.

    With L2-normalised image embeddings :math:`u_i`, text embeddings :math:`v_j` and multiplier
    :math:`s=\min(e^{t}, 100)` (:math:`t` = learnable ``logit_scale``, the log inverse temperature):

    .. math::
        \ell^{I\to T}_i = -s\,u_i^\top v_i + \log\Big(e^{s\,u_i^\top v_i}
                          + \sum_{j\in N(i)} e^{s\,u_i^\top v_j}\Big),\qquad
        \mathcal L = \tfrac12\big(\operatorname{mean}_i \ell^{I\to T}_i
                     + \operatorname{mean}_j \ell^{T\to I}_j\big)

    and :math:`\ell^{T\to I}` the same with the roles of images and texts swapped. The positive of
    every anchor is its own pair (the diagonal). Plain CLIP uses all other pairs of the batch as
    negatives; with MCL pseudo-labels :math:`g`, :math:`N(i)=\{j\ne i : g_j=g_i\}`, so later stages
    only contrast samples that earlier stages' features could not tell apart. With ``caption_ids``
    :math:`c` (equal id = identical caption text), a sample whose caption is the anchor's own is no
    negative either, :math:`N(i)=\{j\ne i : g_j=g_i,\ c_j\ne c_i\}`, in both directions: two
    images captioned "a dog" must not be pushed away from each other's (identical) caption. Anchors
    with no negative are left out of the mean (see :func:`~mcl.objectives.core.info_nce`).

    The multiplier is clamped at 100 as in CLIP: beyond that the softmax is nearly one-hot and
    training becomes unstable. Under ``torch.distributed`` each rank's local anchors are contrasted
    with the embeddings of all ranks (gathered with gradient).

    Example:
        >>> loss_fn = CLIPLoss()
        >>> image_emb = model.encode_image(images)        # (B, D)
        >>> text_emb = model.encode_text(tokens)          # (B, D)
        >>> loss = loss_fn(image_emb, text_emb, model.logit_scale, pseudo_labels)  # None: plain CLIP
        >>> loss = loss_fn(image_emb, text_emb, model.logit_scale, caption_ids=torch.tensor([0, 0, 1, 2]))
        >>> loss.backward(); optimizer.step(); clamp_logit_scale_(model.logit_scale)
    """

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                pseudo_labels: torch.Tensor | None = None, caption_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the two directional losses of the local pairs against the (global) batch.

        ``pseudo_labels`` and ``caption_ids`` are optional ``(B,)`` integer tensors of the local pairs.
        """
        if image_emb.shape[0] != text_emb.shape[0]:
            raise ValueError(f"got {image_emb.shape[0]} image and {text_emb.shape[0]} text embeddings")
        local_rows, device = image_emb.shape[0], image_emb.device
        pseudo_labels, caption_ids = as_labels(pseudo_labels, device), as_labels(caption_ids, device)
        if caption_ids is not None and caption_ids.shape != (local_rows,):
            raise ValueError(f"caption_ids must have shape ({local_rows},), got {tuple(caption_ids.shape)}")
        # Normalised once (the gathered rows are unit too), in float32 at least and float64 when given.
        images, texts = l2_normalize(upcast(image_emb)), l2_normalize(upcast(text_emb))
        # One all-gather for both towers: (B, 2D) rows, split back into images and texts.
        gathered = distributed.gather_with_grad(torch.cat([images, texts], dim=1))
        all_images, all_texts = gathered.split([images.shape[1], texts.shape[1]], dim=1)
        offset = distributed.local_offset(local_rows, device)
        positive_index = torch.arange(local_rows, device=device) + offset

        global_labels = distributed.gather_no_grad(pseudo_labels) if pseudo_labels is not None else None
        mask = same_group_mask(pseudo_labels, global_labels, local_rows, all_texts.shape[0], device)
        if caption_ids is not None:
            # Caption equality is symmetric, so one mask serves both directions: text j is no negative
            # of image i, nor image j of text i, when caption j is caption i. The positive is restored
            # by info_nce; an anchor left with no candidate at all drops out of the mean.
            global_ids = distributed.gather_no_grad(caption_ids)
            mask &= caption_ids[:, None] != global_ids[None, :]
        mask[torch.arange(local_rows, device=device), positive_index] = False

        scale = logit_multiplier(logit_scale)
        image_to_text = scale * images @ all_texts.T
        text_to_image = scale * texts @ all_images.T
        return 0.5 * (info_nce(image_to_text, positive_index, mask)
                      + info_nce(text_to_image, positive_index, mask))
