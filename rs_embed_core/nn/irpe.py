"""Contextual image relative position encoding on keys (iRPE, Wu et al., ICCV 2021), Euclidean method.

For query token i and key token j the attention logit gains q_i . r_b, with r_b a learned vector of
the distance bucket b = bucket(i, j) (`lookup_table_weight`, (heads or 1, head_dim, buckets), the
parameter name of the authors' code and of the models built on it: OmniSat, AnySat). The bucket of
two grid cells is their Euclidean distance in cells, rounded, through iRPE's piecewise index: exact
up to alpha, logarithmic between alpha and gamma, clipped at beta, then shifted by int(beta) so that
it is non-negative; prefix tokens (a class token) have one extra bucket of their own, for their whole
row and column. With ratio r: alpha = r, beta = 2 r, gamma = 8 r; r = 1.9 gives 2 * 3 + 1 = 7
distance buckets (only 3..6 occur, distances being non-negative) plus the class bucket.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import SpecError


def irpe_bucket_count(ratio: float = 1.9, skip: int = 1) -> int:
    """Buckets of the Euclidean method: 2 int(beta) + 1, plus one for prefix tokens when skip > 0."""
    return 2 * int(2 * ratio) + 1 + (1 if skip > 0 else 0)


def irpe_buckets(h: int, w: int, skip: int = 1, ratio: float = 1.9) -> torch.Tensor:
    """(skip + h*w, skip + h*w) long bucket ids of an h x w token grid (row-major) after `skip` prefix tokens."""
    if h < 1 or w < 1 or skip < 0:
        raise SpecError(f"iRPE needs a non-empty grid and skip >= 0, got {h}x{w}, skip {skip}")
    alpha, beta, gamma = 1.0 * ratio, 2.0 * ratio, 8.0 * ratio
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    diff = torch.stack([rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]], dim=-1)
    dist = diff.square().sum(-1).float().sqrt().round()  # float32, as the reference computes it
    far = dist.abs() > alpha
    logarithmic = torch.sign(dist) * (alpha + torch.log(dist.abs().clamp(min=alpha) / alpha)
                                      / math.log(gamma / alpha) * (beta - alpha)).round().clip(max=beta)
    ids = torch.where(far, logarithmic, dist).long() + int(beta)
    if skip == 0:
        return ids
    out = torch.full((skip + h * w, skip + h * w), 2 * int(beta) + 1, dtype=torch.long)
    out[skip:, skip:] = ids
    return out


class ContextualRPE(nn.Module):
    """iRPE on keys, contextual mode: `forward(q, buckets)` -> (B, H, L, K) logits q_i . r_{buckets[i, j]}.

    `first_head_only`: the term of head 0's query is added to every head's logits, (B, 1, L, K). This
    is what the authors' pure-PyTorch fallback computes (its gather index has one head), the path
    every install without their compiled `rpe_ops` extension runs, so OmniSat/AnySat weights were
    trained and are used with it.
    """

    def __init__(self, head_dim: int, heads: int = 1, ratio: float = 1.9, skip: int = 1,
                 first_head_only: bool = False) -> None:
        super().__init__()
        self.first_head_only = first_head_only
        self.lookup_table_weight = nn.Parameter(torch.zeros(heads, head_dim, irpe_bucket_count(ratio, skip)))

    def forward(self, q: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        """q (B, H, L, head_dim) as the attention uses it (scaled or not: the model decides); buckets (L, K)."""
        if buckets.shape[0] != q.shape[2]:
            raise SpecError(f"iRPE buckets cover {buckets.shape[0]} queries, the attention has {q.shape[2]}")
        if self.first_head_only:
            q = q[:, :1]
        table = q @ self.lookup_table_weight  # (B, H, L, buckets): one dot product per bucket, then a lookup
        index = buckets.to(q.device).expand(q.shape[0], q.shape[1], *buckets.shape)
        return torch.gather(table, 3, index)
