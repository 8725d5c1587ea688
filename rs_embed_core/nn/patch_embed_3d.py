"""3D patch embedding: a strided Conv3d that turns a frame stack into a (t, h, w)-ordered token sequence."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SpecError


class PatchEmbed3D(nn.Conv3d):
    """Non-overlapping `tubelet` x `patch_size` x `patch_size` cubes projected to `dim` channels.

    A Conv3d subclass (parameters `weight`, `bias`), so the owning module chooses the key its
    checkpoint uses. Input (B, C, T, H, W), channels before time as video models lay it out;
    `forward` returns tokens (B, t*h*w, dim) with w fastest, then h, then t, and the token grid
    size (t, h, w).
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int, tubelet: int = 1, bias: bool = True) -> None:
        k = (int(tubelet), int(patch_size), int(patch_size))
        super().__init__(in_chans, dim, kernel_size=k, stride=k, bias=bias)
        self.patch_size = int(patch_size)
        self.tubelet = int(tubelet)

    def grid_size(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Token grid (t, h, w); the input must tile exactly in time and space."""
        p, s = self.patch_size, self.tubelet
        if height % p or width % p:
            raise SpecError(f"input {height}x{width} is not a multiple of the patch size {p}")
        if frames % s:
            raise SpecError(f"{frames} frame(s) is not a multiple of the tubelet size {s}")
        return frames // s, height // p, width // p

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:  # type: ignore[override]
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise SpecError(f"expected (B, {self.in_channels}, T, H, W) input, got shape {tuple(x.shape)}")
        grid = self.grid_size(*x.shape[2:])
        y = super().forward(x)  # (B, dim, t, h, w)
        return y.flatten(2).transpose(1, 2), grid
