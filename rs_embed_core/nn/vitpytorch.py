"""Pre-norm transformer with the parameter names of lucidrains' vit-pytorch (`simple_vit`).

Keys relative to the transformer: `layers.{i}.0.norm`, `layers.{i}.0.to_qkv` (no bias),
`layers.{i}.0.to_out` (no bias), `layers.{i}.1.net.0` (LayerNorm), `layers.{i}.1.net.1` /
`net.3` (the MLP's Linears, GELU between), and a final `norm` applied after the last block.
Clay's encoder is built this way; checkpoints of that lineage load strictly, key for key.
`vit_layout=True` gives the names of vit-pytorch's `vit.Transformer` (FoMo-Net is built this way):
`to_out.0` with a bias, and the MLP's second Linear at `net.4` (Dropout modules between take indices).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError


class VitPytorchAttention(nn.Module):
    """norm -> packed q/k/v (no bias) -> softmax(q k^T / sqrt(dim_head)) v -> to_out (no bias)."""

    def __init__(self, dim: int, heads: int, dim_head: int, vit_layout: bool = False) -> None:
        super().__init__()
        self.heads, inner = heads, heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out: nn.Module = nn.Sequential(nn.Linear(inner, dim)) if vit_layout else nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(self.norm(x)).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class VitPytorchFeedForward(nn.Module):
    """`net` = [LayerNorm, Linear, GELU, Linear] ([..., GELU, Dropout, Linear] with `vit_layout`)."""

    def __init__(self, dim: int, hidden: int, vit_layout: bool = False) -> None:
        super().__init__()
        gap = (nn.Dropout(0.0),) if vit_layout else ()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), *gap, nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VitPytorchTransformer(nn.Module):
    """depth x (x + attn(x), x + ff(x)), then `norm`."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, vit_layout: bool = False) -> None:
        super().__init__()
        if min(dim, depth, heads, dim_head, mlp_dim) <= 0:
            raise SpecError(f"transformer sizes must be positive: dim {dim}, depth {depth}, heads {heads}, "
                            f"dim_head {dim_head}, mlp_dim {mlp_dim}")
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([VitPytorchAttention(dim, heads, dim_head, vit_layout),
                           VitPytorchFeedForward(dim, mlp_dim, vit_layout)])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:  # type: ignore[misc]
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)
