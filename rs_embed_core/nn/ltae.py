"""Lightweight Temporal Attention Encoder (L-TAE, Garnot & Landrieu 2020) as U-TAE, OmniSat and AnySat run it.

Each pixel's time series (T, C) becomes one vector: an input MLP (`inconv`: Linear, GroupNorm(4),
ReLU per layer), a GroupNorm over groups of channels *and all dates* (`in_norm`, optional), plus a
sin-cos code of each date (day of year; period T_p, the same d_model / heads channels repeated for
every head), then per head one learned query (`attention_heads.Q`) attends over the dates with keys
`attention_heads.fc1_k(x)` and the head's slice of x as values; the heads' outputs are concatenated,
passed through `mlp` (Linear, GroupNorm(4), ReLU) and `out_norm` (GroupNorm, heads groups).
Parameter names and Sequential indices are the authors' (`ltae.py` LTAE2d), so their checkpoints
load strictly; dropout slots (index 3 of each input layer) hold nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import SpecError


def date_code(days: torch.Tensor, dim: int, period: float, repeat: int) -> torch.Tensor:
    """(..., T) days -> (..., T, dim * repeat): channel c = sin/cos(day / period^(2 (c // 2) / dim)),
    even channels sine, odd cosine (float32, as the reference computes it), repeated `repeat` times."""
    denom = torch.pow(torch.tensor(float(period)), 2 * (torch.arange(dim).float() // 2) / dim).to(days.device)
    angles = days.float()[..., None] / denom
    code = torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)
    return code.repeat(*([1] * (code.ndim - 1)), repeat)


class _Heads(nn.Module):
    """One learned query per head (`Q`, (heads, d_k)) over keys `fc1_k(x)`; values are x split by head."""

    def __init__(self, heads: int, d_k: int, d_in: int) -> None:
        super().__init__()
        self.heads, self.d_k = heads, d_k
        self.Q = nn.Parameter(torch.zeros(heads, d_k))
        self.fc1_k = nn.Linear(d_in, heads * d_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, d_in) -> (N, d_in): the heads' attended values, concatenated head after head."""
        n, t, d = x.shape
        k = self.fc1_k(x).reshape(n, t, self.heads, self.d_k).permute(0, 2, 1, 3)  # (N, H, T, d_k)
        logits = (k @ self.Q[None, :, :, None]).squeeze(-1) / self.d_k ** 0.5  # (N, H, T)
        v = x.reshape(n, t, self.heads, d // self.heads).permute(0, 2, 1, 3)  # (N, H, T, d/H)
        return (logits.softmax(dim=-1)[..., None, :] @ v).reshape(n, d)


def _layers(widths: Sequence[int], with_dropout_slot: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.GroupNorm(4, b), nn.ReLU()]
        if with_dropout_slot:
            layers.append(nn.Identity())  # the authors' Dropout (eval: identity); keeps their indices
    return nn.Sequential(*layers)


class LTAE(nn.Module):
    """Per-pixel L-TAE: `forward(x (N, T, C), days (N, T))` -> (N, mlp[-1])."""

    def __init__(self, in_channels: int, heads: int, d_k: int, mlp_in: Sequence[int], mlp: Sequence[int],
                 period: float, in_norm: bool = True) -> None:
        super().__init__()
        if not mlp_in or mlp_in[-1] % heads:
            raise SpecError(f"L-TAE needs an input MLP whose width is divisible by {heads} heads, got {list(mlp_in)}")
        d_model = int(mlp_in[-1])
        self.heads, self.period, self.code_dim = heads, float(period), d_model // heads
        self.inconv = _layers([in_channels, *mlp_in], with_dropout_slot=True)
        self.in_norm = nn.GroupNorm(heads, d_model) if in_norm else nn.Identity()
        self.attention_heads = _Heads(heads, d_k, d_model)
        self.mlp = _layers([d_model, *mlp], with_dropout_slot=False)
        self.out_norm = nn.GroupNorm(heads, int(mlp[-1]))

    def forward(self, x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        if days.shape != (n, t):
            raise SpecError(f"L-TAE needs one day per date and series: x {tuple(x.shape)}, days {tuple(days.shape)}")
        h = self.inconv(x.reshape(n * t, c)).reshape(n, t, -1)
        h = self.in_norm(h.transpose(1, 2)).transpose(1, 2)  # groups of channels over all dates
        h = h + date_code(days, self.code_dim, self.period, self.heads)
        return self.out_norm(self.mlp(self.attention_heads(h)))
