"""AgriFM's Sentinel-2 encoder in torch: a modified Video Swin Transformer with the checkpoint's names.

Facts from the authors' code (flyakon/AgriFM, AgriFM/models/video_swin_transformer.py and
configs/cropland_mapping.py), rebuilt here without mmcv/mmseg:
- a per-source 3D patch embedding (Conv3d, kernel = stride = (4, 2, 2) in (time, y, x), no norm),
  stored as `S2_patch_emd.*` (Landsat `HLSL30_patch_emd.*` and MODIS `Modis_patch_emd.*` beside it;
  the authors' loader renames the source's own to `patch_emd`);
- `backbone.*`: four stages (dims C, 2C, 4C, 8C; C = 128, depths 2, 2, 18, 2), pre-norm 3D
  window attention (window (8, 7, 7), shifted by half on odd blocks, a learned relative position
  bias table), and between stages a patch merging that halves time by *averaging* frame pairs
  (zero-padding an odd frame count) while it concatenates 2 x 2 spatial neighbours (norm, then a
  linear 4C -> 2C); then a final LayerNorm;
- the output (`encoder_features`): the last stage's (8C, t, h, w) map with t folded into channels,
  which is 8C wide when t = 1, i.e. for up to 32 input frames.
Where a window is larger than the map it shrinks to the map and stops shifting along that axis, and
the bias index is the configured window's cut to the smaller window's size (`index[:N, :N]`), exactly
as the authors' code does. Imported only when a model is loaded.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError
from rs_embed_core.nn import TimmMlp, relative_position_index, shifted_window_mask, window_partition, window_reverse
from rs_embed_core.weights import load_state_dict, strict_load

# The authors' loader: "module." stripped, the source's own patch embedding renamed to `patch_emd`.
STRIP = "module."
RENAME = ("S2_patch_emd.", "patch_emd.")
# Checkpoint entries the Sentinel-2 encoder does not use: the other sources' patch embeddings.
DROP = ("HLSL30_patch_emd", "Modis_patch_emd")
RECOMPUTED = ("relative_position_index",)  # a fixed buffer the authors' module stores


def _fitted(sizes: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A window no larger than the map along each axis; no shift along an axis the window covers."""
    w = tuple(s if s <= win else win for s, win in zip(sizes, window))
    sh = tuple(0 if s <= win else h for s, win, h in zip(sizes, window, shift))
    return w, sh


class WindowAttention3D(nn.Module):
    def __init__(self, dim: int, window: tuple[int, int, int], heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros(math.prod(2 * w - 1 for w in window), heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        index = self.relative_position_index[:n, :n].reshape(-1)
        attn = attn + self.relative_position_bias_table[index].reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(b // nw, nw, self.heads, n, n) + mask[None, :, None].to(attn.dtype)).view(-1, self.heads, n, n)
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c))


class Block3D(nn.Module):
    """Pre-norm: x + W-MSA(norm1(x)) on (maybe shifted) 3D windows, then x + MLP(norm2(x))."""

    def __init__(self, dim: int, heads: int, window: tuple[int, int, int], shift: tuple[int, int, int],
                 mlp_ratio: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TimmMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, d, h, w, c = x.shape
        window, shift = _fitted((d, h, w), self.window, self.shift)
        y = self.norm1(x)
        pads = [(win - s % win) % win for s, win in zip((d, h, w), window)]
        y = F.pad(y, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        padded = tuple(y.shape[1:4])
        shifted = any(shift)
        if shifted:
            y = torch.roll(y, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        y = self.attn(window_partition(y, window), mask if shifted else None)
        y = window_reverse(y, window, padded)
        if shifted:
            y = torch.roll(y, shifts=shift, dims=(1, 2, 3))
        x = x + y[:, :d, :h, :w]
        return x + self.mlp(self.norm2(x))


class PatchMerging3D(nn.Module):
    """Frame pairs averaged (an odd count zero-padded first), 2 x 2 neighbours concatenated in the order
    (y0 x0, y1 x0, y0 x1, y1 x1) (odd sizes zero-padded), LayerNorm(4C), then a linear 4C -> 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, d, h, w, _ = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x = (x[:, 0::2] + x[:, 1::2]) / 2
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class Stage3D(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: tuple[int, int, int], mlp_ratio: float,
                 downsample: bool) -> None:
        super().__init__()
        self.window = window
        self.shift = tuple(w // 2 for w in window)
        self.blocks = nn.ModuleList(
            Block3D(dim, heads, window, (0, 0, 0) if i % 2 == 0 else self.shift, mlp_ratio)  # type: ignore[arg-type]
            for i in range(depth)
        )
        self.downsample = PatchMerging3D(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W, C) -> the same after the blocks, then merged."""
        sizes = tuple(x.shape[1:4])
        window, shift = _fitted(sizes, self.window, self.shift)
        padded = tuple(math.ceil(s / w) * w for s, w in zip(sizes, window))
        mask = shifted_window_mask(padded, window, shift, device=x.device)
        for block in self.blocks:
            x = block(x, mask)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed3D(nn.Module):
    """Conv3d with kernel = stride = (t, p, p) on (B, C, T, H, W), the input zero-padded at the end to fit."""

    def __init__(self, in_chans: int, dim: int, patch: tuple[int, int, int]) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, h, w = x.shape[2:]
        pt, ph, pw = self.patch
        x = F.pad(x, (0, (pw - w % pw) % pw, 0, (ph - h % ph) % ph, 0, (pt - t % pt) % pt))
        return self.proj(x)


class Backbone(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        dim, depths, heads = int(cfg["embed_dim"]), list(cfg["depths"]), list(cfg["heads"])
        window = tuple(int(w) for w in cfg["window"])
        self.layers = nn.ModuleList(
            Stage3D(dim * 2**i, depths[i], heads[i], window, float(cfg["mlp_ratio"]),  # type: ignore[arg-type]
                    downsample=i < len(depths) - 1)
            for i in range(len(depths))
        )
        self.num_features = dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> (B, C' * D', H', W'): the last stage, normed, time folded into channels."""
        z = x.permute(0, 2, 3, 4, 1)
        for layer in self.layers:
            z = layer(z)
        z = self.norm(z).permute(0, 4, 1, 2, 3)
        b, c, d, h, w = z.shape
        return z.reshape(b, c * d, h, w)


class AgriFMEncoder(nn.Module):
    """forward(x (B, T, C, H, W)) -> (B, 8C, H/16, W/16) for T <= 32 (frames in time order)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.in_chans = int(cfg["in_chans"])
        self.max_frames = int(cfg["max_frames"])
        self.patch_emd = PatchEmbed3D(self.in_chans, int(cfg["embed_dim"]), tuple(cfg["patch_size"]))  # type: ignore[arg-type]
        self.backbone = Backbone(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[2] != self.in_chans or not 1 <= x.shape[1] <= self.max_frames:
            raise SpecError(f"AgriFM takes (B, T, {self.in_chans}, H, W) with 1 <= T <= {self.max_frames}; "
                            f"got {tuple(x.shape)}")
        return self.backbone(self.patch_emd(x.transpose(1, 2)))


def build(variant: Variant, device: str) -> AgriFMEncoder:
    """The encoder of `variant`, its weights loaded strictly (see the module docstring), eval mode on `device`."""
    net = AgriFMEncoder(variant.params).eval()
    if variant.weights is not None:
        sd = {}
        for key, value in load_state_dict(variant.weights).items():
            key = key.removeprefix(STRIP)
            if key.rsplit(".", 1)[-1] in RECOMPUTED:
                continue
            sd[RENAME[1] + key[len(RENAME[0]):] if key.startswith(RENAME[0]) else key] = value
        strict_load(net, sd, drop=DROP)
    return net.to(device)
