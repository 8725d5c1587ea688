"""FlexiViT patch-size flexibility: one stored patch kernel, used at other patch sizes.

FlexiViT (Beyer et al., CVPR 2023) resizes a patch-embedding kernel w (k x k) to p x p with the
pseudo-inverse of the image-resize operator B (k x k -> p x p, bicubic with antialiasing):
w' = pinv(B) w, so that <B x, w'> = <x, w> for every patch x when p >= k (the token of an
upsampled patch equals the token of the original one), and the least-squares best kernel when
p < k. Galileo stores one 8 x 8 kernel per channel group and runs patch sizes 1..8.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError


@lru_cache(maxsize=64)
def _pinv_resize(old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """pinv of the (old_h*old_w, new_h*new_w) matrix whose row i is basis image i resized."""
    eye = torch.eye(old[0] * old[1], dtype=torch.float32)
    rows = [F.interpolate(eye[i].reshape(1, 1, *old), new, mode="bicubic", antialias=True)[0, 0].reshape(-1)
            for i in range(old[0] * old[1])]
    return torch.linalg.pinv(torch.stack(rows))


def resize_patch_kernel(weight: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(D, C, k, k) conv kernel -> (D, C, p, p) for patch size p by pseudo-inverse resizing."""
    new = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if weight.ndim != 4 or min(new) < 1:
        raise SpecError(f"resize_patch_kernel needs a (D, C, k, k) kernel and a positive size, got "
                        f"{tuple(weight.shape)} -> {new}")
    old = (int(weight.shape[-2]), int(weight.shape[-1]))
    if new == old:
        return weight
    pinv = _pinv_resize(old, new).to(weight.device, weight.dtype)  # (new_h*new_w, old_h*old_w)
    d, c = weight.shape[:2]
    return (weight.reshape(d * c, old[0] * old[1]) @ pinv.T).reshape(d, c, *new)


class FlexiPatchEmbed(nn.Module):
    """A strided convolution (`proj.weight`, `proj.bias`, the key names of FlexiViT-style
    checkpoints) run at any patch size <= or > its stored one via `resize_patch_kernel`."""

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor, patch_size: int) -> torch.Tensor:
        """(N, C, H, W) -> (N, D, H/p, W/p); H and W must be multiples of p."""
        if x.ndim != 4 or x.shape[1] != self.proj.in_channels:
            raise SpecError(f"expected (N, {self.proj.in_channels}, H, W) input, got {tuple(x.shape)}")
        if x.shape[-2] % patch_size or x.shape[-1] % patch_size:
            raise SpecError(f"input {x.shape[-2]}x{x.shape[-1]} is not a multiple of the patch size {patch_size}")
        weight = resize_patch_kernel(self.proj.weight, patch_size)
        return F.conv2d(x, weight, self.proj.bias, stride=patch_size)
