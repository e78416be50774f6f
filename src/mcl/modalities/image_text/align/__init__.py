"""The aligned stage 0: LiT-style alignment of the shipped pretrained towers, built offline and cached.

The paper fine-tunes an *already aligned* CLIP. Offline, mcl has two separately pretrained towers
(:class:`~mcl.models.two_tower.PretrainedTowers`: EfficientNet-Lite0 ImageNet, all-MiniLM-L6-v2) and
no image-text model; this package aligns them once on a broad captioned corpus generated here, with
**complete** captions (every attribute named), and caches the result.

Modules (importing this package loads only :mod:`.names`, the names other layers need):

* :mod:`.settings`: :class:`~.settings.AlignSettings`, what ``configs/align.yaml`` holds;
* :mod:`.corpus`: the captioned corpus (Trifeature, MNIST digits, Fashion-MNIST);
* :mod:`.fit`: the alignment itself (LiT, Zhai et al. 2022: only the projections, the temperature
  and the last ``unlocked_image_groups`` image groups train, on the locked parts' outputs computed once);
* :mod:`.zeroshot`: the Trifeature zero-shot accuracies stored with the model;
* :mod:`.checkpoint`: the checkpoint file, its cache (``$MCL_CACHE_DIR``) and file lock, build and load.

``mcl align`` is :mod:`mcl.cli.align`.

Example:
    >>> from mcl.modalities.image_text.align.checkpoint import aligned_stage0
    >>> model = aligned_stage0(ALIGNED)                   # built on first use (a few minutes), then cached
"""

from __future__ import annotations

from mcl.modalities.image_text.align.names import ALIGNED, CACHE_ENV

__all__ = ["ALIGNED", "CACHE_ENV"]
