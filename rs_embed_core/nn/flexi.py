"""FlexiViT patch embeddings (Beyer et al., CVPR 2023): one trained kernel, any patch size.

A kernel trained at k x k is brought to n x n by the pseudo-inverse of the resize it stands in for
("PI-resize"): with B the (n*n, k*k) matrix of a bicubic, antialiased resize of a k x k patch to
n x n, the new kernel is pinv(B^T) w. Upsampling (n >= k) it is exact, <B x, w_n> = <x, w> for
every patch x: the token of a resized patch equals the token of the patch. Downsampling (n < k) it
is the least-squares kernel, B (B^T w_n - w) = 0. Computed here in float64 (the pseudo-inverse of
a resize matrix loses digits in float32), then cast to the kernel's dtype.

Channel groups (THOR and other per-band models): each band has its own single-channel kernel, and
the tokens of the bands of one group (bands sharing a ground sampling distance) are averaged.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if int(h) < 1 or int(w) < 1:
        raise SpecError(f"patch size must be positive, got {size!r}")
    return int(h), int(w)


def resize_matrix(old: int | Sequence[int], new: int | Sequence[int]) -> torch.Tensor:
    """B (float64, (new_h*new_w, old_h*old_w)): row-major patch -> its bicubic, antialiased resize."""
    (oh, ow), (nh, nw) = _pair(old), _pair(new)
    basis = torch.eye(oh * ow, dtype=torch.float64).reshape(oh * ow, 1, oh, ow)
    resized = F.interpolate(basis, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    return resized.reshape(oh * ow, nh * nw).T


@lru_cache(maxsize=32)
def _pi_resize_operator(old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    return torch.linalg.pinv(resize_matrix(old, new).T)  # (new_n, old_n)


def pi_resize_kernel(kernel: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """A (D, C, k, k) conv kernel PI-resized to (D, C, n, n); the kernel itself when n == k."""
    new = _pair(size)
    d, c, kh, kw = kernel.shape
    if (kh, kw) == new:
        return kernel
    op = _pi_resize_operator((kh, kw), new)
    flat = kernel.reshape(d * c, kh * kw).to("cpu", torch.float64)
    return (flat @ op.T).reshape(d, c, *new).to(kernel.device, kernel.dtype)


class FlexiPatchEmbed(nn.Conv2d):
    """Non-overlapping patches of any size from one kernel trained at `base_patch` (parameters `weight`, `bias`).

    `forward(x, patch_size)` returns row-major tokens (B, h*w, dim) and the grid (h, w).
    """

    def __init__(self, in_chans: int, dim: int, base_patch: int, bias: bool = True) -> None:
        super().__init__(in_chans, dim, kernel_size=base_patch, stride=base_patch, bias=bias)
        self.base_patch = int(base_patch)

    def forward(self, x: torch.Tensor, patch_size: int | None = None) -> tuple[torch.Tensor, tuple[int, int]]:  # type: ignore[override]
        p = self.base_patch if patch_size is None else int(patch_size)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise SpecError(f"expected (B, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}")
        if p < 1 or x.shape[-2] % p or x.shape[-1] % p:
            raise SpecError(f"input {x.shape[-2]}x{x.shape[-1]} is not a multiple of the patch size {p}")
        y = F.conv2d(x, pi_resize_kernel(self.weight, p), self.bias, stride=p)
        return y.flatten(2).transpose(1, 2), (y.shape[-2], y.shape[-1])


class BandGroupPatchEmbed(nn.Module):
    """Single-band flexible kernels `patch_embed.<name>`; a group's tokens = the mean of its bands' tokens.

    Names may hold any character but "." (e.g. THOR's "S2:Red"): they are the checkpoint's keys.
    """

    def __init__(self, kernel_names: Sequence[str], dim: int, base_patch: int, bias: bool = True) -> None:
        super().__init__()
        self.patch_embed = nn.ModuleDict({name: FlexiPatchEmbed(1, dim, base_patch, bias) for name in kernel_names})

    def forward(self, bands: Sequence[tuple[str, torch.Tensor]],
                patch_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """`bands`: (kernel name, (B, 1, H, W) image) of one group, all the same size -> mean tokens, (h, w)."""
        if not bands:
            raise SpecError("a channel group needs at least one band")
        out = []
        hw = None
        for name, image in bands:
            if name not in self.patch_embed:
                raise SpecError(f"no patch kernel named {name!r}; known: {list(self.patch_embed)}")
            tokens, grid = self.patch_embed[name](image, patch_size)
            if hw is not None and grid != hw:
                raise SpecError(f"the bands of one group must have one size: {name!r} gives {grid}, others {hw}")
            hw = grid
            out.append(tokens)
        assert hw is not None
        return torch.stack(out, dim=-1).mean(dim=-1), hw
