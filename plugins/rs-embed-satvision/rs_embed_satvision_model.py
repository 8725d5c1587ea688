"""SatVision-TOA's encoder in torch: a SwinV2 with the parameter names of the published checkpoint.

The published file is a DeepSpeed checkpoint (`mp_rank_00_model_states.pt`) whose "module" entry is
the authors' masked-image-modelling model: `encoder.*` (this network, plus its `mask_token`) and
`decoder.*` (a 1x1 conv + pixel shuffle). The authors' own example loads that entry strictly into
their model; here `build` strips `encoder.`, drops the decoder and the mask token, drops the fixed
buffers the authors' module stores (recomputed here) and loads the rest strictly.

Architecture facts (the authors' swinv2.py and pre-training config): post-norm SwinV2 blocks with
cosine attention, a continuous position bias MLP (2 -> 512 -> heads) and a learned per-head logit
scale; patch embedding with LayerNorm; patch merging = reduction then LayerNorm; an extra LayerNorm
(`norm3`) after every `norm_period`-th block of a stage (SwinV2-G's stabiliser); a final LayerNorm.
Imported only when a model is loaded (keeps `rs-embed models` torch-free).
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant, WeightsSpec
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import TimmMlp, relative_position_index, shifted_window_mask, window_partition, window_reverse
from rs_embed_core.weights import load_state_dict, strict_load, weights_file

STRIP = "encoder."
# Checkpoint entries the encoder does not use: the MIM decoder and the mask token of pre-training.
DROP = ("decoder", "mask_token")
# Fixed buffers the authors' modules register (persistent, so stored in the file): recomputed here.
RECOMPUTED = ("relative_coords_table", "relative_position_index", "attn_mask")
CPB_HIDDEN = 512  # width of the continuous position bias MLP (fixed in SwinV2)


def _log_coords_table(window: int) -> torch.Tensor:
    """(1, 2w-1, 2w-1, 2) relative offsets scaled to [-8, 8] then log-spaced, as SwinV2 feeds its bias MLP
    (no pre-training window: offsets are divided by w - 1)."""
    r = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(r, r, indexing="ij")).permute(1, 2, 0).unsqueeze(0)
    table = table / max(window - 1, 1) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


class WindowAttention(nn.Module):
    """Cosine attention in one window with SwinV2's log-spaced continuous relative position bias."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.window, self.heads = window, heads
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((heads, 1, 1))))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, CPB_HIDDEN), nn.ReLU(inplace=True),
                                     nn.Linear(CPB_HIDDEN, heads, bias=False))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("relative_coords_table", _log_coords_table(window), persistent=False)
        self.register_buffer("relative_position_index", relative_position_index((window, window)), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.heads)
        rel = table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = attn + 16 * torch.sigmoid(rel).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b // nw, nw, self.heads, n, n) + mask[None, :, None].to(attn.dtype)
            attn = attn.view(-1, self.heads, n, n)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class SwinV2Block(nn.Module):
    """Post-norm block: x + norm1(W-MSA(x)), then + norm2(MLP); `extra_norm` adds norm3 after both.

    A window at least as large as the map becomes the whole map, unshifted (SwinV2's rule)."""

    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, window: int, shift: int,
                 mlp_ratio: float, extra_norm: bool) -> None:
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= window:
            window, shift = min(resolution), 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TimmMlp(dim, int(dim * mlp_ratio))
        self.norm3 = nn.LayerNorm(dim) if extra_norm else nn.Identity()
        mask = shifted_window_mask(resolution, (window,) * 2, (shift,) * 2) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, _, c = x.shape
        y = x.view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        win = (self.window, self.window)
        y = window_reverse(self.attn(window_partition(y, win), self.attn_mask), win, (h, w))
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.norm1(y.reshape(b, h * w, c))
        x = x + self.norm2(self.mlp(x))
        return self.norm3(x)


class PatchMerging(nn.Module):
    """2 x 2 neighbours concatenated (order (0,0), (1,0), (0,1), (1,1) in (row, col)), reduced to 2C, normed."""

    def __init__(self, resolution: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.norm(self.reduction(x.view(b, -1, 4 * c)))


class Stage(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, heads: int, window: int,
                 mlp_ratio: float, norm_period: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinV2Block(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio,
                        extra_norm=bool(norm_period) and (i + 1) % norm_period == 0)
            for i in range(depth)
        )
        self.downsample = PatchMerging(resolution, dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SatVisionSwinV2(nn.Module):
    """forward(x (B, C, S, S)) -> last-stage tokens after the final LayerNorm (B, D, S/32, S/32).

    Fixed input size `img_size` (the attention masks and position tables are built for it)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.img_size, self.patch = int(cfg["img_size"]), int(cfg["patch_size"])
        self.in_chans = int(cfg["in_chans"])
        dim, depths, heads = int(cfg["embed_dim"]), list(cfg["depths"]), list(cfg["heads"])
        self.patch_embed = PatchEmbed(self.in_chans, dim, self.patch)
        side = self.img_size // self.patch
        self.layers = nn.ModuleList(
            Stage(dim * 2**i, (side >> i, side >> i), depths[i], heads[i], int(cfg["window"]),
                  float(cfg["mlp_ratio"]), int(cfg["norm_period"]), downsample=i < len(depths) - 1)
            for i in range(len(depths))
        )
        self.num_features = dim * 2 ** (len(depths) - 1)
        self.out_side = side >> (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != (self.img_size,) * 2:
            raise SpecError(f"SatVision-TOA takes (B, {self.in_chans}, {self.img_size}, {self.img_size}); "
                            f"got {tuple(x.shape)}")
        z = self.patch_embed(x)
        for layer in self.layers:
            z = layer(z)
        z = self.norm(z)
        return z.transpose(1, 2).reshape(x.shape[0], self.num_features, self.out_side, self.out_side)


def checkpoint_tensors(spec: WeightsSpec) -> dict[str, torch.Tensor]:
    """The file's tensors: the "module" entry of a DeepSpeed checkpoint (the published layout), else
    whatever `load_state_dict` unwraps. Read with weights_only=True (no arbitrary code) and memory-mapped."""
    if spec.filename.lower().endswith(".safetensors"):
        return load_state_dict(spec)
    path = weights_file(spec)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"refused to unpickle {path}: it holds objects other than tensors and plain "
                           f"containers ({str(exc).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError):
        return load_state_dict(spec)  # e.g. safetensors or a legacy format: the core's reader
    if isinstance(obj, dict) and isinstance(obj.get("module"), dict):
        obj = obj["module"]
    if isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return obj
    return load_state_dict(spec)


def build(variant: Variant, device: str) -> SatVisionSwinV2:
    """The encoder of `variant`, its weights loaded strictly (see the module docstring), eval mode on `device`."""
    net = SatVisionSwinV2(variant.params).eval()
    if variant.weights is not None:
        sd = {k: v for k, v in checkpoint_tensors(variant.weights).items() if k.rsplit(".", 1)[-1] not in RECOMPUTED}
        strict_load(net, sd, drop=DROP, strip_prefix=STRIP)
    return net.to(device)


def parameter_count(variant: Variant) -> int:
    """Parameters of the encoder of `variant`, counted on the meta device (no memory)."""
    with torch.device("meta"):
        net = SatVisionSwinV2(variant.params)
    return int(sum(np.prod(p.shape) for p in net.parameters()))
