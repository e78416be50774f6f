"""A Vision Transformer (Dosovitskiy et al. 2021) sized for small images, in plain torch.

Algorithm: non-overlapping ``patch_size`` patches -> linear embedding (a strided conv) -> prepend a
learned [CLS] token -> add learned position embeddings -> ``depth`` pre-norm transformer blocks
(multi-head self-attention, MLP of ``mlp_ratio * dim``) -> LayerNorm -> pool: the [CLS] token
(``pooling="cls"``) or the mean of the patch tokens (``"mean"``).

Shapes: ``(B, 3, H, W)`` -> ``(B, dim)`` (``feature_dim = dim``). The position embeddings are
learned for an ``img_size`` grid (default 32 px); other sizes (``H`` and ``W`` multiples of
``patch_size``) interpolate them bicubically at run time, so the image size is not fixed at build time.

Presets (patch 4, i.e. an 8x8 grid at 32 px): ``vit_tiny`` (dim 192, depth 12, 3 heads, ~5.4 M
parameters) and ``vit_small`` (dim 384, depth 12, 6 heads, ~21 M), as DeiT-Ti/S; ``vit`` takes every
argument.

Example:
    >>> model = build_backbone("vit", patch_size=4, depth=2, dim=64, heads=4, pooling="mean")
    >>> model(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mcl.models.backbones import register_backbone


class Attention(nn.Module):
    """Multi-head self-attention (``scaled_dot_product_attention``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"vit: heads={heads} must divide dim={dim}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, dim)`` -> ``(B, N, dim)``."""
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, dim)`` -> ``(B, N, dim)``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT backbone; see the module docstring. ``feature_dim`` equals ``dim``."""

    def __init__(self, patch_size: int = 4, depth: int = 6, dim: int = 256, heads: int = 4, mlp_ratio: float = 4.0,
                 pooling: str = "cls", img_size: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"vit: pooling must be 'cls' or 'mean', got {pooling!r}")
        if img_size % patch_size:
            raise ValueError(f"vit: img_size={img_size} is not a multiple of patch_size={patch_size}")
        self.patch_size = patch_size
        self.pooling = pooling
        self.grid = img_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.feature_dim = dim
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """``(1, 1 + height * width, dim)`` position embeddings for a ``height x width`` patch grid."""
        if (height, width) == (self.grid, self.grid):
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        dim = grid.shape[-1]
        grid = grid.reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, height * width, dim)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images (H, W multiples of ``patch_size``) -> ``(B, feature_dim)``."""
        if x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise ValueError(f"vit: image size {tuple(x.shape[-2:])} is not a multiple of patch_size="
                             f"{self.patch_size}")
        patches = self.patch_embed(x)  # (B, dim, H/p, W/p)
        height, width = patches.shape[-2:]
        tokens = patches.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = self.norm(self.blocks(tokens + self.position_embedding(height, width)))
        return tokens[:, 0] if self.pooling == "cls" else tokens[:, 1:].mean(1)


def _init_weights(module: nn.Module) -> None:
    # timm/DeiT initialisation: truncated-normal linears, zero biases.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@register_backbone("vit")
def vit(patch_size: int = 4, depth: int = 6, dim: int = 256, heads: int = 4, mlp_ratio: float = 4.0,
        pooling: str = "cls", img_size: int = 32, in_channels: int = 3) -> VisionTransformer:
    """A ViT with every size argument explicit (see :class:`VisionTransformer`)."""
    return VisionTransformer(patch_size, depth, dim, heads, mlp_ratio, pooling, img_size, in_channels)


def _preset(name: str, **sizes: Any) -> Any:
    """A ``vit`` with other defaults; its signature (what the registry checks) is ``vit``'s with them."""

    def factory(**kwargs: Any) -> VisionTransformer:
        return vit(**{**sizes, **kwargs})

    signature = inspect.signature(vit)
    factory.__signature__ = signature.replace(parameters=[  # type: ignore[attr-defined]
        p.replace(kind=p.KEYWORD_ONLY, default=sizes.get(p.name, p.default)) for p in signature.parameters.values()])
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"ViT preset {name}: {sizes}; other arguments as :func:`vit`."
    return register_backbone(name)(factory)


vit_tiny = _preset("vit_tiny", patch_size=4, depth=12, dim=192, heads=3)
vit_small = _preset("vit_small", patch_size=4, depth=12, dim=384, heads=6)
