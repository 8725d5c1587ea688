"""Fourier features over a log-spaced range of periods, as Aurora and Copernicus-FM encode scalars.

A scalar x becomes [sin(2 pi x / p_0) .. sin(2 pi x / p_{k-1}), cos(..same..)] with k = dim/2 periods
p_i spaced evenly in log10 between `lower` and `upper`: the shortest period resolves fine detail,
the longest keeps values up to `upper` unambiguous. Copernicus-FM encodes band wavelengths and
bandwidths (nm), longitude/latitude (degrees), acquisition day and patch area (km^2) this way.

Computed in float64 and returned as float32, like the reference implementations: at x ~ 1e9 and a
period of 100 the phase needs the extra precision.
"""

from __future__ import annotations

import math

import torch

from ..errors import SpecError


def fourier_features(x: torch.Tensor, lower: float, upper: float, dim: int) -> torch.Tensor:
    """(...,) values -> (..., dim) float32 features; `dim` must be even, 0 < lower < upper."""
    if dim <= 0 or dim % 2:
        raise SpecError(f"Fourier feature dim must be a positive even number, got {dim}")
    if not 0 < lower < upper:
        raise SpecError(f"Fourier period range must satisfy 0 < lower < upper, got [{lower}, {upper}]")
    x = x.to(torch.float64)
    periods = torch.logspace(math.log10(lower), math.log10(upper), dim // 2, base=10.0,
                             dtype=torch.float64, device=x.device)
    phase = x[..., None] * (2.0 * math.pi / periods)
    return torch.cat([phase.sin(), phase.cos()], dim=-1).to(torch.float32)


def in_fourier_range(x: torch.Tensor, lower: float, upper: float) -> bool:
    """True when every |x| lies in [lower, upper] or is exactly 0: the range the encoder was built for
    (outside it the code is ambiguous; the reference implementations assert on it)."""
    a = x.abs()
    return bool((((a >= lower) & (a <= upper)) | (x == 0)).all())
