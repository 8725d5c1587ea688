"""Patch embedding: a strided convolution that turns an image into a row-major token sequence."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SpecError


class PatchEmbed(nn.Conv2d):
    """Non-overlapping `patch_size` patches projected to `dim` channels.

    A Conv2d subclass, so its parameters are just `weight` (and `bias`): the owning module picks
    the attribute name its checkpoint uses (open_clip: `conv1`, bias-free). `forward` returns the
    tokens (B, h*w, dim), row-major, and the token grid size (h, w).
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int, bias: bool = True) -> None:
        super().__init__(in_chans, dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.patch_size = int(patch_size)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Token grid (h, w) for an input of height x width; the input must tile exactly."""
        p = self.patch_size
        if height % p or width % p:
            raise SpecError(f"input {height}x{width} is not a multiple of the patch size {p}")
        return height // p, width // p

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:  # type: ignore[override]
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise SpecError(f"expected (B, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}")
        hw = self.grid_size(x.shape[-2], x.shape[-1])
        y = super().forward(x)  # (B, dim, h, w)
        return y.flatten(2).transpose(1, 2), hw
