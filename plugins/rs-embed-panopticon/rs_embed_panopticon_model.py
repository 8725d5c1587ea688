"""Panopticon's network in torch, with the parameter names of the released teacher checkpoint.

Imported only when a model is loaded (keeps `rs-embed models` torch-free). Layout, as the authors'
code (Panopticon-FM/panopticon `hubconf.py`, `dinov2/models/panopticon.py`) and torchgeo 0.8.1's
`panopticon_vitb14` build it (read there, written here):

- `patch_embed` (any number of channels C): a 1 x 14 x 14 Conv3d turns every channel of every
  patch into its own `attn_dim`-wide token; each channel's token gets its channel embedding added
  (`chnfus.chnemb`: optical = 1-D sin-cos code of the wavelength floored to whole nm; SAR = learned
  transmit / receive / orbit vectors picked by a negative id); one learned `query` per patch then
  cross-attends over the C channel tokens (bias-free key/value projections, no query or output
  projection, 16 heads), and `proj` maps the fused token to the ViT width.
- a DINOv2 ViT-B/14 trunk: class token, learned position table stored for a 37 x 37 grid (518 px)
  and resized to the input's grid, 12 LayerScale blocks (timm names, LayerNorm eps 1e-6), final
  `norm`. pooled = normed class token (the model's output), grid = normed patch tokens.
- The checkpoint also holds DINOv2's `mask_token` (masked-image training only): dropped by name.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import LayerScaleBlock, tokens_to_grid
from rs_embed_core.weights import load_state_dict, strict_load

SAR_IDS = 12  # -1..-12: {both, ascending, descending orbit} x {VV, VH, HH, HV}
POS_RESIZE = ("dinov2", "torchgeo")


def wavelength_code(nm: torch.Tensor, dim: int) -> torch.Tensor:
    """(M,) wavelengths in nm -> (M, dim) sin-cos code of floor(nm), in float32 like the original."""
    pos = torch.floor(nm.to(torch.float32))
    half = dim // 2
    omega = 1.0 / 10000.0 ** (torch.arange(half, dtype=torch.float32, device=nm.device) / float(half))
    angles = pos[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ChannelEmbedding(nn.Module):
    """Channel ids (C,) -> (C, dim): optical ids are wavelengths in nm, SAR ids are -1..-12."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise SpecError(f"channel-embedding width {dim} must be even (sin-cos halves)")
        third = dim // 3
        self.dim = dim
        self.embed_transmit = nn.Parameter(torch.zeros(2, third))  # 0: V, 1: H
        self.embed_receive = nn.Parameter(torch.zeros(2, third))  # 0: V, 1: H
        self.embed_orbit = nn.Parameter(torch.zeros(2, dim - 2 * third))  # 0: ascending, 1: descending

    def sar_table(self) -> torch.Tensor:
        """(12, dim): rows 0-3 VV, VH, HH, HV with the mean of both orbits, 4-7 ascending, 8-11 descending."""
        t, r, o = self.embed_transmit, self.embed_receive, self.embed_orbit
        transmit = torch.stack([t[0], t[0], t[1], t[1]]).repeat(3, 1)
        receive = torch.stack([r[0], r[1], r[1], r[0]]).repeat(3, 1)
        orbit = torch.stack([o.mean(dim=0), o[0], o[1]]).repeat_interleave(4, dim=0)
        return torch.cat([transmit, receive, orbit], dim=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        sar = ids < 0
        out = torch.zeros(ids.shape[0], self.dim, dtype=self.embed_transmit.dtype, device=ids.device)
        if (~sar).any():
            out[~sar] = wavelength_code(ids[~sar], self.dim).to(out.dtype)
        if sar.any():
            idx = (-(ids[sar] + 1)).to(torch.long)
            if bool(((idx < 0) | (idx >= SAR_IDS)).any()):
                raise SpecError(f"Panopticon's SAR channel ids are -1..-{SAR_IDS}, got {ids[sar].tolist()}")
            out[sar] = self.sar_table()[idx]
        return out


class ChannelCrossAttention(nn.Module):
    """A learned query per patch attends over the patch's channel tokens (Panopticon's `xattn`)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise SpecError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.inproj_k = nn.Linear(dim, dim, bias=False)
        self.inproj_v = nn.Linear(dim, dim, bias=False)

    def forward(self, query: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """query (N, 1, D), x (N, C, D) -> (N, D)."""
        n, c, d = x.shape
        split = (n, -1, self.heads, d // self.heads)
        q = query.reshape(split).transpose(1, 2)
        k = self.inproj_k(x).reshape(split).transpose(1, 2)
        v = self.inproj_v(x).reshape(split).transpose(1, 2)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, d)


class ChannelFusion(nn.Module):
    """`chnemb` + `query` + `xattn`: (B, C, L, D) channel tokens -> (B, L, D)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.chnemb = ChannelEmbedding(dim)
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.xattn = ChannelCrossAttention(dim, heads)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        b, c, n, d = x.shape
        x = x + self.chnemb(ids)[None, :, None, :]
        x = x.permute(0, 2, 1, 3).reshape(b * n, c, d)
        return self.xattn(self.query.expand(b * n, -1, -1), x).reshape(b, n, d)


class _Conv3d(nn.Module):
    """Holds `conv3d` so the key reads `patch_embed.conv3d.conv3d.weight` as in the checkpoint."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.conv3d = nn.Conv3d(1, dim, kernel_size=(1, patch, patch), stride=(1, patch, patch))


class SpectralPatchEmbed(nn.Module):
    """(B, C, H, W) images + (C,) channel ids -> (B, h*w, embed_dim) patch tokens, for any C."""

    def __init__(self, attn_dim: int, embed_dim: int, patch: int, heads: int) -> None:
        super().__init__()
        self.patch = patch
        self.conv3d = _Conv3d(attn_dim, patch)
        self.chnfus = ChannelFusion(attn_dim, heads)
        self.proj = nn.Linear(attn_dim, embed_dim)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        y = self.conv3d.conv3d(x.unsqueeze(1))  # (B, D, C, h, w): each channel patchified alone
        hw = (y.shape[-2], y.shape[-1])
        y = y.flatten(3).permute(0, 2, 3, 1)  # (B, C, h*w, D)
        return self.proj(self.chnfus(y, ids)), hw


def resize_pos_table(table: torch.Tensor, hw: tuple[int, int], mode: str) -> torch.Tensor:
    """(1, M*M, D) patch position table -> (1, h*w, D) for a grid of h x w patches.

    "dinov2": the authors' DINOv2 code (`interpolate_pos_encoding`): bicubic by scale factor
    (h + 0.1) / M, (w + 0.1) / M, no antialiasing, the table used as is when the grid is M x M
    and square. "torchgeo": torchgeo 0.8.1's load-time `resize_abs_pos_embed`: bicubic to size
    (h, w) with antialiasing.
    """
    n, d = table.shape[1], table.shape[2]
    m = int(round(n**0.5))
    if m * m != n:
        raise SpecError(f"position table of {n} entries is not square")
    if hw == (m, m):
        return table
    grid = table.float().reshape(1, m, m, d).permute(0, 3, 1, 2)
    if mode == "dinov2":
        out = F.interpolate(grid, scale_factor=((hw[0] + 0.1) / m, (hw[1] + 0.1) / m), mode="bicubic",
                            antialias=False)
    elif mode == "torchgeo":
        out = F.interpolate(grid, size=hw, mode="bicubic", antialias=True)
    else:
        raise SpecError(f"pos_resize must be one of {POS_RESIZE}, got {mode!r}")
    if tuple(out.shape[-2:]) != hw:
        raise SpecError(f"position table resized to {tuple(out.shape[-2:])}, wanted {hw}")
    return out.permute(0, 2, 3, 1).reshape(1, hw[0] * hw[1], d).to(table.dtype)


class Panopticon(nn.Module):
    """Panopticon ViT: keys equal the teacher checkpoint's (less `mask_token`)."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        dim, self.patch = int(cfg["embed_dim"]), int(cfg["patch_size"])
        self.pos_resize = str(cfg.get("pos_resize", "dinov2"))
        if self.pos_resize not in POS_RESIZE:
            raise SpecError(f"pos_resize must be one of {POS_RESIZE}, got {self.pos_resize!r}")
        self.patch_embed = SpectralPatchEmbed(int(cfg["attn_dim"]), dim, self.patch, int(cfg["channel_heads"]))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        g = int(cfg["pos_grid"])
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + g * g, dim))
        self.blocks = nn.ModuleList(
            LayerScaleBlock(dim, int(cfg["heads"]), float(cfg.get("mlp_ratio", 4.0)), norm_eps=1e-6)
            for _ in range(int(cfg["depth"]))
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) standardised bands, (C,) channel ids -> normed class token (B, D), grid (B, D, h, w)."""
        if x.ndim != 4 or x.shape[-1] % self.patch or x.shape[-2] % self.patch or min(x.shape[-2:]) < self.patch:
            raise SpecError(f"Panopticon needs (B, C, H, W) inputs with H and W multiples of {self.patch}, "
                            f"got {tuple(x.shape)}")
        if ids.ndim != 1 or ids.shape[0] != x.shape[1]:
            raise SpecError(f"Panopticon needs one channel id per band: {x.shape[1]} bands, {tuple(ids.shape)} ids")
        tokens, hw = self.patch_embed(x, ids)
        pos = self.pos_embed
        patch_pos = resize_pos_table(pos[:, 1:], hw, self.pos_resize).to(tokens.dtype)
        cls = (self.cls_token + pos[:, :1]).expand(tokens.shape[0], -1, -1)
        h = torch.cat([cls, tokens + patch_pos], dim=1)
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        return h[:, 0], tokens_to_grid(h[:, 1:], hw)


def build(variant: Variant, device: str = "cpu") -> Panopticon:
    """The encoder of `variant`, weights loaded strictly from its pinned checkpoint, in eval mode."""
    if variant.weights is None:
        raise WeightsError(f"Panopticon variant {variant.name!r} has no weights spec")
    sd = load_state_dict(variant.weights)  # a missing file is reported before any model work
    model = Panopticon(variant.params)
    strict_load(model, sd, drop=("mask_token",))  # DINOv2's masked-image token: training only
    return model.to(device).eval()
