"""LayerScale ViT blocks with timm / DINOv2 parameter names (`ls1.gamma`, `ls2.gamma`).

DINOv2 and its descendants (and timm ViTs built with `init_values`) scale each residual branch
by a learned per-channel vector before adding it back. The block is `TimmBlock` with those two
vectors, so such checkpoints (`norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2,
ls2.gamma`) load strictly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .timm_block import TimmBlock


class LayerScale(nn.Module):
    """x * gamma, one learned factor per channel."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class LayerScaleBlock(TimmBlock):
    """x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))); TimmBlock's options otherwise."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, *, init_values: float = 1e-5,
                 **block_options: Any) -> None:
        super().__init__(dim, heads, mlp_ratio, **block_options)
        self.ls1 = LayerScale(dim, init_values)
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))
