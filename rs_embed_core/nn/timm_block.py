"""Pre-norm ViT blocks with timm's parameter names (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`).

Most remote-sensing ViTs (MAE descendants such as Prithvi, 4M descendants such as TerraMind) save
their encoders with these names, so a model built from these parts loads their checkpoints
strictly. Variations those families use are options: biases on/off per projection, LayerNorm
without bias, and a gated MLP (SwiGLU-style, with `fc3` as the gate's second branch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from .transformer import activation


def _activation(name: str) -> nn.Module:
    """The shared activations, plus SiLU (SwiGLU-gated MLPs use it)."""
    return nn.SiLU() if name == "silu" else activation(name)


class TimmAttention(nn.Module):
    """Multi-head self-attention: packed `qkv` Linear, `proj` Linear, scale head_dim**-0.5."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise SpecError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """`attn_bias` (broadcastable to (B, heads, N, N)) is added to the scaled logits (ALiBi)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if attn_bias is None else attn_bias.to(q.dtype))
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class TimmMlp(nn.Module):
    """fc1 -> act -> fc2; with `gated`, fc2(act(fc1(x)) * fc3(x)) and hidden = int(2 * hidden / 3)."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu", bias: bool = True, gated: bool = False) -> None:
        super().__init__()
        self.gated = gated
        if gated:  # the extra branch costs a matmul; SwiGLU papers shrink the hidden width to compensate
            hidden = int(2 * hidden / 3)
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = _activation(act)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        if gated:
            self.fc3 = nn.Linear(dim, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))
        return self.fc2(h * self.fc3(x) if self.gated else h)


class TimmBlock(nn.Module):
    """x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        *,
        act: str = "gelu",
        norm_eps: float = 1e-6,
        norm_bias: bool = True,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        mlp_bias: bool = True,
        gated_mlp: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, bias=norm_bias)
        self.attn = TimmAttention(dim, heads, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, bias=norm_bias)
        self.mlp = TimmMlp(dim, int(dim * mlp_ratio), act, bias=mlp_bias, gated=gated_mlp)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_bias)
        return x + self.mlp(self.norm2(x))
