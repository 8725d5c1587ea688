"""Token-grid helpers: sequences (B, N, D) <-> grids (B, D, h, w), prefix tokens, pooling.

Token order is row-major (x fastest), which is what `PatchEmbed` produces and what the core
expects when it georeferences a grid (row 0 is the northern edge of the input raster).
"""

from __future__ import annotations

import torch

from ..errors import SpecError


def tokens_to_grid(tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, D) row-major patch tokens -> (B, D, h, w)."""
    h, w = hw
    b, n, d = tokens.shape
    if n != h * w:
        raise SpecError(f"{n} tokens do not form a {h}x{w} grid (remove prefix tokens first)")
    return tokens.transpose(1, 2).reshape(b, d, h, w)


def grid_to_tokens(grid: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, D, h, w) -> ((B, h*w, D) row-major tokens, (h, w))."""
    b, d, h, w = grid.shape
    return grid.reshape(b, d, h * w).transpose(1, 2), (h, w)


def split_prefix(tokens: torch.Tensor, n_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Separate the leading class/register tokens (B, n_prefix, D) from the patch tokens."""
    if not 0 <= n_prefix <= tokens.shape[1]:
        raise SpecError(f"cannot split {n_prefix} prefix tokens from a sequence of {tokens.shape[1]}")
    return tokens[:, :n_prefix], tokens[:, n_prefix:]


def prepend_tokens(tokens: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """Put learned prefix tokens ((D,) or (n, D), shared by the batch) before every sequence."""
    p = prefix.reshape(1, -1, tokens.shape[-1]).to(tokens.dtype).expand(tokens.shape[0], -1, -1)
    return torch.cat([p, tokens], dim=1)


def pool_tokens(tokens: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """(B, N, D) -> (B, D) by mean or max over tokens."""
    if mode == "mean":
        return tokens.mean(dim=1)
    if mode == "max":
        return tokens.amax(dim=1)
    raise SpecError(f"pooling must be 'mean' or 'max', got {mode!r}")


def patch_missing(valid: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, H, W) valid pixels -> (B, T, H/patch, W/patch) bool: True where a (frame, patch) token has no
    valid pixel while the patch has one in some other frame (an empty bin, a fully clouded patch). A patch
    never valid stays unmasked, so every item keeps tokens (they describe the fill value)."""
    b, t, h, w = valid.shape
    if h % patch or w % patch:
        raise SpecError(f"input {h}x{w} is not a multiple of the patch size {patch}")
    seen = valid.reshape(b, t, h // patch, patch, w // patch, patch).any(dim=5).any(dim=3)
    return ~seen & seen.any(dim=1, keepdim=True)
