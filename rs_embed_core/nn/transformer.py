"""Pre-norm transformer blocks with open_clip's parameter names.

Block layout (keys relative to a block): `ln_1`, `attn.in_proj_weight`, `attn.in_proj_bias`,
`attn.out_proj.{weight,bias}`, `ln_2`, `mlp.c_fc`, `mlp.c_proj` -- the names of
`torch.nn.MultiheadAttention` and of OpenAI/open_clip CLIP checkpoints, so those load strictly.
Attention runs through `F.scaled_dot_product_attention`; activations are chosen by name because
checkpoints of one architecture were trained with different ones (CLIP: QuickGELU vs GELU).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "quick_gelu": QuickGELU,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise SpecError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


class Attention(nn.Module):
    """Multi-head self-attention with a packed q/k/v input projection."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise SpecError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim)) if qkv_bias else None
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, D); attn_mask broadcastable to (B, heads, N, N), additive float or boolean keep-mask."""
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Linear -> activation -> linear, named `c_fc` / `c_proj`."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu") -> None:
        super().__init__()
        self.c_fc = nn.Linear(dim, hidden)
        self.act = activation(act)
        self.c_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        act: str = "gelu",
        norm_eps: float = 1e-5,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias)
        self.ln_2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """`layers` blocks under `resblocks.{i}`; batch-first (B, N, D) in and out."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float = 4.0,
        act: str = "gelu",
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(
            Block(width, heads, mlp_ratio, act, norm_eps) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x
