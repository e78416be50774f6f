"""Faster drop-ins for kornia's ColorJitter, flip, grayscale and blur that give kornia's output bit for bit.

``augment.backend: fused`` builds the same ``K.AugmentationSequential`` as ``kornia`` with these subclasses
in place of kornia's classes. They keep kornia's parameter generators, so the global torch RNG is drawn
exactly as before, and they recompute kornia's float operations in kornia's order, so a seeded call returns
the same tensor bit for bit (``tests/test_augment.py`` checks this against kornia itself). Only the way the
work is done changes (the CPU profile behind each change: ``benchmarks/README.md``, section 3):

* **Probability gate.** kornia transforms the whole batch and keeps the gated rows with ``torch.where``.
  Here only the selected rows are transformed and copied into a clone of the input; every row is
  independent, so the values are the same.
* **Colour jitter.** kornia's hue step (an RGB -> HSV -> RGB round trip) spends most of its time in
  ``torch.where`` (per element, many times the cost of a multiply into a preallocated tensor on CPU),
  ``masked_fill``, ``remainder`` and ``stack``. Each is replaced by an exact equivalent on 0/1
  float masks: a selection ``where(c, a, b)`` becomes ``a * c + b * (1 - c)`` summed term by term (a
  product with 0 or 1 is exact, adding 0 leaves a finite value unchanged), ``x % 1`` for ``x`` in (-1, 1)
  becomes ``x + (x < 0)``, and so on (each line below names kornia's expression it replaces). All planes
  are written into one preallocated workspace, on CPU in chunks of rows small enough (about 64k pixels)
  to stay in cache; on a GPU in chunks of up to 8M pixels (fewer launches, bounded memory).

Anything outside that fast path (gradients, autocast, keyword overrides, not 3 channels, integer or half
input) falls back to kornia's own code. Example::

    augment = build_augmentation(AugmentConfig(), 32, backend="fused")  # mcl.augment
    torch.manual_seed(0); a = augment(images)
    # == kornia's output under torch.manual_seed(0), every bit
"""

from __future__ import annotations

import math
from typing import Any

import kornia.augmentation as K
import torch
from kornia.core.utils import is_autocast_enabled  # the check kornia's own transform_inputs makes

TWO_PI = 2.0 * math.pi  # kornia's ``2 * pi``; as a float32 operand it rounds to 6.2831855
_NEUTRAL = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation, hue: the value that skips a step
_FACTORS = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
_GRAY = (0.299, 0.587, 0.114)  # kornia.color.rgb_to_grayscale's weights
_FAST_DTYPES = (torch.float32, torch.float64)


def chunk_rows(image_shape: torch.Size, device: torch.device) -> int:
    """Rows transformed together: about 64k pixels per plane on CPU (fits in L2), 8M elsewhere."""
    budget = 1 << 16 if device.type == "cpu" else 1 << 23
    return max(1, budget // (image_shape[-2] * image_shape[-1]))


def _selected_rows(module: K.AugmentationBase2D, params: dict[str, torch.Tensor], batch: int) -> torch.Tensor | None:
    """Indices (on the CPU) of the rows the probability gate transforms; ``None`` for all of them."""
    if module.p == 1.0 and module.p_batch == 1.0:
        return None
    to_apply = torch.atleast_1d(params["batch_prob"] > 0.5).cpu()
    return None if to_apply.numel() == batch and bool(to_apply.all()) else to_apply.nonzero()[:, 0]


class _FastGate:
    """Mixin: kornia's ``transform_inputs`` for images, transforming only the rows the gate selects.

    ``_transform_rows(rows, params, index)`` transforms the gathered rows (``index``: their positions in
    the batch, ``None`` for the whole batch); ``_apply_fast`` may replace the gather-transform-scatter.
    """

    fast_devices: frozenset[str] | None = None  # device types that take the fast path (None: all); else kornia's

    def _fast(self, input: torch.Tensor, kwargs: dict[str, Any]) -> bool:
        devices = self.fast_devices
        return ((devices is None or input.device.type in devices) and not kwargs and not self.keepdim
                and input.dim() == 4 and input.shape[1] == 3 and input.dtype in _FAST_DTYPES
                and not (torch.is_grad_enabled() and input.requires_grad) and not is_autocast_enabled())

    def transform_inputs(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                         transform: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if not self._fast(input, kwargs):
            return super().transform_inputs(input, params, flags, transform, **kwargs)
        params, flags = self._process_kwargs_to_params_and_flags(self._params if params is None else params, flags)
        input = self.transform_tensor(input)
        self.validate_tensor(input)
        return self._apply_fast(input, params, _selected_rows(self, params, input.shape[0]))

    def _apply_fast(self, input: torch.Tensor, params: dict[str, torch.Tensor],
                    rows: torch.Tensor | None) -> torch.Tensor:
        if rows is None:
            return self._transform_rows(input, params, None)
        out = input.clone()
        if rows.numel():  # in one piece: faster than in cache-sized chunks for these few passes (measured)
            on_device = rows.to(input.device)
            out.index_copy_(0, on_device, self._transform_rows(input.index_select(0, on_device), params, rows))
        return out


class RandomHorizontalFlip(_FastGate, K.RandomHorizontalFlip):
    """kornia's ``RandomHorizontalFlip``, flipping only the rows it selects."""

    def _transform_rows(self, rows: torch.Tensor, params: dict[str, torch.Tensor], index: Any) -> torch.Tensor:
        return rows.flip(-1)


class RandomGrayscale(_FastGate, K.RandomGrayscale):
    """kornia's ``RandomGrayscale``, converting only the rows it selects."""

    def _transform_rows(self, rows: torch.Tensor, params: dict[str, torch.Tensor], index: Any) -> torch.Tensor:
        return self.apply_transform(rows, params, self.flags)


class RandomGaussianBlur(_FastGate, K.RandomGaussianBlur):
    """kornia's ``RandomGaussianBlur``, blurring only the rows it selects (each row has its own kernel)."""

    def _transform_rows(self, rows: torch.Tensor, params: dict[str, torch.Tensor], index: Any) -> torch.Tensor:
        sigma = params["sigma"] if index is None else params["sigma"][index.to(params["sigma"].device)]
        return self.apply_transform(rows, {**params, "sigma": sigma}, self.flags)


class ColorJitter(_FastGate, K.ColorJitter):
    """kornia's ``ColorJitter`` (torchvision's formulas, one random order per call), recomputed exactly but fast."""

    def _fast(self, input: torch.Tensor, kwargs: dict[str, Any]) -> bool:
        return self._fixed_order is None and super()._fast(input, kwargs)

    def _apply_fast(self, input: torch.Tensor, params: dict[str, torch.Tensor],
                    rows: torch.Tensor | None) -> torch.Tensor:
        # A step runs when any factor of the whole batch (skipped rows included) differs from neutral, as in kornia.
        steps = [i for i in params["order"].tolist() if bool((params[_FACTORS[i]] != _NEUTRAL[i]).any())]
        factors = [params[key] if rows is None else params[key][rows] for key in _FACTORS]
        factors[3] = factors[3] * 2 * math.pi  # ColorJitter._adjust_hue_turns, before the cast as there
        factors = [f.to(input.device, input.dtype, non_blocking=True) for f in factors]
        # The output is the one image-sized allocation: chunks are gathered into, and computed in, a small buffer.
        out = torch.empty_like(input, memory_format=torch.contiguous_format) if rows is None else input.clone()
        count = input.shape[0] if rows is None else rows.numel()
        step = min(chunk_rows(input.shape, input.device), max(count, 1))
        workspace = torch.empty((16, step, *input.shape[2:]), dtype=input.dtype, device=input.device)
        gathered = torch.empty((step, *input.shape[1:]), dtype=input.dtype, device=input.device)
        weights = torch.tensor(_GRAY, dtype=input.dtype, device=input.device).unbind()
        on_device = None if rows is None else rows.to(input.device)
        for start in range(0, count, step):
            n = min(step, count - start)
            if on_device is None:
                chunk = torch.clamp(input[start:start + n], 0.0, 1.0, out=out[start:start + n])  # _clamp_unit_range
            else:
                chunk = torch.index_select(input, 0, on_device[start:start + n], out=gathered[:n]).clamp_(0.0, 1.0)
            planes = workspace[:, :n].unbind(0)
            for i in steps:
                _STEPS[i](chunk, factors[i][start:start + n], planes, weights)
            chunk.clamp_(0.0, 1.0)
            if on_device is not None:
                out.index_copy_(0, on_device[start:start + n], chunk)
        return out


def _brightness(x: torch.Tensor, factor: torch.Tensor, planes: tuple[torch.Tensor, ...],
                weights: tuple[torch.Tensor, ...]) -> None:
    """adjust_brightness_accumulative: ``clamp(x * f, 0, 1)``."""
    x.mul_(factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _gray(x: torch.Tensor, out: torch.Tensor, weights: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """rgb_to_grayscale: ``r * w_r``, then ``addcmul`` g and b (the same kernels, so the same rounding)."""
    r, g, b = x.unbind(1)
    torch.mul(r, weights[0], out=out)
    out.addcmul_(g, weights[1])
    return out.addcmul_(b, weights[2])


def _contrast(x: torch.Tensor, factor: torch.Tensor, planes: tuple[torch.Tensor, ...],
              weights: tuple[torch.Tensor, ...]) -> None:
    """adjust_contrast_with_mean_subtraction: ``clamp(x * f + mean(gray) * (1 - f), 0, 1)``."""
    factor = factor.view(-1, 1, 1, 1)
    mean = _gray(x, planes[0], weights).unsqueeze(1).mean((-2, -1), True)
    x.mul_(factor).add_(mean * (1 - factor)).clamp_(0.0, 1.0)


def _saturation(x: torch.Tensor, factor: torch.Tensor, planes: tuple[torch.Tensor, ...],
                weights: tuple[torch.Tensor, ...]) -> None:
    """adjust_saturation_with_gray_subtraction: ``clamp((1 - f) * gray + f * x, 0, 1)`` (``+`` commutes exactly)."""
    factor = factor.view(-1, 1, 1, 1)
    gray = _gray(x, planes[0], weights).unsqueeze(1)
    gray.mul_(1 - factor)
    x.mul_(factor).add_(gray).clamp_(0.0, 1.0)


def _hue(x: torch.Tensor, factor: torch.Tensor, planes: tuple[torch.Tensor, ...],
         weights: tuple[torch.Tensor, ...]) -> None:
    """adjust_hue (``factor`` in radians): kornia's rgb_to_hsv, adjust_hue_raw and hsv_to_rgb on masks, in place.

    ``x`` is in [0, 1] (every step clamps), so every value below is finite and non-negative where kornia's
    code relies on it.
    """
    r, g, b = x.unbind(1)
    v, d, s, h, t0, t1, t2, t3, t4, e0, e1, e2, e3, e4, e5, pair = planes
    # rgb_to_hsv
    torch.maximum(torch.maximum(r, g, out=v), b, out=v)  # amax(-3)
    torch.minimum(torch.minimum(r, g, out=t0), b, out=t0)  # amin(-3)
    torch.sub(v, t0, out=d)  # deltac
    torch.div(d, torch.add(v, 1e-8, out=t0), out=s)  # deltac / where(v == 0, 1, v + eps): v == 0 has deltac 0
    d.add_(torch.eq(d, 0, out=t0))  # where(deltac == 0, 1, deltac)
    torch.sub(v, r, out=t1)  # rc
    torch.sub(v, g, out=t2)  # gc
    torch.sub(v, b, out=t3)  # bc
    torch.sub(t3, t2, out=h)  # h1 = bc - gc
    torch.sub(t1, t3, out=t4).add_(torch.mul(d, 2.0, out=t0))  # h2 = (rc - bc) + 2 deltac
    torch.sub(t2, t1, out=t3).add_(torch.mul(d, 4.0, out=t0))  # h3 = (gc - rc) + 4 deltac
    red, green = torch.eq(r, v, out=t1), torch.eq(g, v, out=t2)  # r >= g & r >= b  <=>  r == max
    green.sub_(torch.mul(red, green, out=t0))  # else g >= b  <=>  g == max
    blue = torch.add(red, green, out=t0).mul_(-1.0).add_(1.0)
    h.mul_(red).addcmul_(t4, green).addcmul_(t3, blue)  # where(red, h1, where(green, h2, h3)): exact products
    h.div_(d).div_(6.0)
    h.add_(torch.lt(h, 0, out=t0))  # % 1.0 for h / 6 in [-1/6, 5/6]
    h.mul_(TWO_PI)
    h.mul_(torch.lt(h, TWO_PI, out=t0))  # masked_fill(h >= 2 pi, 0)
    # adjust_hue_raw: remainder(h + factor, 2 pi) for h + factor in (-pi, 3 pi), then fold 2 pi to 0
    h.add_(factor.view(-1, 1, 1))
    below, above = torch.lt(h, 0, out=t0), torch.ge(h, TWO_PI, out=t1)
    h.add_(below.mul_(TWO_PI)).sub_(above.mul_(TWO_PI))
    h.mul_(torch.lt(h, TWO_PI, out=t0))
    # hsv_to_rgb
    h.div_(TWO_PI).mul_(6)  # h * 6
    h.sub_(torch.ge(h, 6, out=t0).mul_(6))  # (h * 6) % 6 for h * 6 in [0, 6]
    hi = torch.floor(h, out=t4)  # floor(h * 6) % 6
    f = h.sub_(hi)
    p = torch.mul(s, -1.0, out=t1).add_(1.0).mul_(v)  # v * (1 - s)
    q = torch.mul(f, s, out=t2).mul_(-1.0).add_(1.0).mul_(v)  # v * (1 - f s)
    t = torch.mul(f, -1.0, out=t3).add_(1.0).mul_(s).mul_(-1.0).add_(1.0).mul_(v)  # v * (1 - (1 - f) s)
    for k, mask in enumerate((e0, e1, e2, e3, e4, e5)):
        torch.eq(hi, k, out=mask)
    # the sextant tables [v,q,p,p,t,v], [t,v,v,q,p,p], [p,p,t,v,v,q], one exact product per term
    torch.add(e0, e5, out=pair)
    torch.mul(v, pair, out=r).addcmul_(q, e1).addcmul_(p, torch.add(e2, e3, out=pair)).addcmul_(t, e4)
    torch.add(e1, e2, out=pair)
    torch.mul(v, pair, out=g).addcmul_(t, e0).addcmul_(q, e3).addcmul_(p, torch.add(e4, e5, out=pair))
    torch.add(e3, e4, out=pair)
    torch.mul(v, pair, out=b).addcmul_(t, e2).addcmul_(q, e5).addcmul_(p, torch.add(e0, e1, out=pair))


_STEPS = (_brightness, _contrast, _saturation, _hue)
