"""ALiBi (Press et al., ICLR 2022) in two dimensions: attention logits biased by -slope x distance.

Instead of position embeddings, each head h adds -m_h * |p_i - p_j| to the logit of query i and
key j, where p are token positions (here 2D ground coordinates, e.g. patch centres in metres over
a common scale, so tokens of different sizes share one geometry). The slopes are the paper's
geometric sequence; for a head count that is not a power of two, the sequence of the power of two
below it followed by every other slope of the sequence of twice that power.
"""

from __future__ import annotations

import math

import torch

from ..errors import SpecError


def _power_of_two_slopes(n: int) -> list[float]:
    start = 2.0 ** (-8.0 / n)
    return [start ** (i + 1) for i in range(n)]


def alibi_slopes(heads: int) -> list[float]:
    """The per-head slopes m_1..m_heads."""
    if heads < 1:
        raise SpecError(f"ALiBi needs at least one head, got {heads}")
    if math.log2(heads).is_integer():
        return _power_of_two_slopes(heads)
    below = 2 ** math.floor(math.log2(heads))
    return _power_of_two_slopes(below) + alibi_slopes(2 * below)[0::2][: heads - below]


def alibi_bias_2d(points: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    """(N, 2) token positions, (H,) slopes -> (1, H, N, N) additive attention bias -m_h * |p_i - p_j|.

    Distances are exact (no matrix-product shortcut), so coincident tokens get exactly 0.
    """
    if points.ndim != 2 or points.shape[1] != 2 or slopes.ndim != 1:
        raise SpecError(f"ALiBi takes (N, 2) points and (H,) slopes, got {tuple(points.shape)}, {tuple(slopes.shape)}")
    dist = torch.cdist(points[None], points[None], compute_mode="donot_use_mm_for_euclid_dist")  # (1, N, N)
    return -slopes.to(dist.dtype)[None, :, None, None] * dist[:, None]
