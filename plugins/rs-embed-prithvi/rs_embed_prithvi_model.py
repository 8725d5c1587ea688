"""Prithvi-EO-2.0's encoder in torch, with the parameter names of the published checkpoints.

The checkpoints hold the whole masked autoencoder: `encoder.*` (this network) and `decoder.*`.
`build` strips the `encoder.` prefix, drops the decoder and the stored 3D position table
(`pos_embed`: fixed sin-cos values, recomputed here for the frames actually given) and loads the
rest strictly. Imported only when a model is loaded (keeps `rs-embed models` torch-free).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError
from rs_embed_core.nn import PatchEmbed3D, TimmBlock, prepend_tokens, sincos_3d
from rs_embed_core.weights import load_state_dict, strict_load

# Checkpoint keys the encoder does not use: the MAE decoder (with its mask token, position table
# and coordinate scales) and the encoder's stored position table.
DROP = ("decoder", "pos_embed")
STRIP = "encoder."


def sincos_f32(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M, dim) sin-cos code of real-valued positions, computed in float32.

    The coordinate encoders feed raw values (years ~2020, days 1..366, degrees) into the sines;
    at those magnitudes float32 and float64 results differ by ~1e-4, so this follows the
    reference's float32 arithmetic step for step instead of `rs_embed_core.nn.sincos_1d`.
    """
    half = dim // 2
    omega = torch.arange(half, dtype=torch.float32, device=positions.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.float().reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class CoordEncoder(nn.Module):
    """scale * [code(a) | code(b)]: the TL variants' (year, day-of-year) and (lat, lon) encoders.

    `scale` is the learned weight of the sum (a 1-element parameter in the checkpoints).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dims = (dim // 2, dim - dim // 2)
        self.scale = nn.Parameter(torch.full((1,), 0.1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (...,) -> (..., dim)."""
        shape = a.shape
        code = torch.cat([sincos_f32(self.dims[0], a), sincos_f32(self.dims[1], b)], dim=1)
        return self.scale * code.reshape(*shape, -1)


class PrithviViT(nn.Module):
    """The encoder: 3D patch embedding (tubelet 1), fixed 3D sin-cos positions, optional
    time/location codes, class token, pre-norm ViT blocks, final LayerNorm.

    forward(x (B, C, T, H, W), temporal (B, T, 2) year/day-of-year or None, location (B, 2)
    lat/lon or None) -> tokens (B, 1 + T*h*w, D) (class token first), token grid (T, h, w).
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        d = int(cfg["embed_dim"])
        self.dim = d
        self.patch = int(cfg["patch_size"])
        self.base_hw = (int(cfg["img_size"]) // self.patch,) * 2  # the grid the position table was made for
        self.patch_embed = nn.ModuleDict({"proj": PatchEmbed3D(int(cfg["in_chans"]), d, self.patch, tubelet=1)})
        self.coords = bool(cfg["coords"])
        if self.coords:
            self.temporal_embed_enc = CoordEncoder(d)
            self.location_embed_enc = CoordEncoder(d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(
            TimmBlock(d, int(cfg["heads"]), float(cfg["mlp_ratio"]), norm_eps=float(cfg["norm_eps"]))
            for _ in range(int(cfg["depth"]))
        )
        self.norm = nn.LayerNorm(d, eps=float(cfg["norm_eps"]))
        self._pos: dict[tuple[int, int, int], torch.Tensor] = {}

    def pos_embed(self, t: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(t*h*w, D) fixed positions: 3D sin-cos on the pretraining grid, channel blocks (w, h, t)
        with D/16 * (6, 6, 4) channels; for another h x w, that table resized bicubically
        (align_corners=True) frame by frame, as the reference does."""
        key = (t, h, w)
        if key not in self._pos:
            d, (bh, bw) = self.dim, self.base_hw
            if d % 16:
                raise SpecError(f"Prithvi's 3D position table needs a width divisible by 16, got {d}")
            emb = sincos_3d(t, bh, bw, dims=(d // 16 * 4, d // 16 * 6, d // 16 * 6), concat="wht")
            if (h, w) != (bh, bw):
                grid = emb.reshape(t, bh, bw, d).permute(0, 3, 1, 2)
                grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)
                emb = grid.permute(0, 2, 3, 1).reshape(t * h * w, d)
            self._pos[key] = emb
        return self._pos[key].to(device)

    def forward(
        self,
        x: torch.Tensor,
        temporal: torch.Tensor | None = None,
        location: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[int, int, int]]:
        # The patch embedding runs in float32 even under autocast: the time and location codes added to its
        # tokens (sines of years and degrees) are nearly the same for every token, and in bfloat16 the residual
        # stream loses what differs between tokens (cosine to fp32 fell to 0.95). The blocks still autocast.
        with torch.autocast(x.device.type, enabled=False):
            tokens, (t, h, w) = self.patch_embed["proj"](x.float())
        tokens = tokens + self.pos_embed(t, h, w, tokens.device).to(tokens.dtype)
        if self.coords and temporal is not None:
            if temporal.shape != (x.shape[0], t, 2):
                raise SpecError(f"temporal coordinates must be (B, T, 2) = {(x.shape[0], t, 2)}, got {tuple(temporal.shape)}")
            code = self.temporal_embed_enc(temporal[..., 0], temporal[..., 1])  # (B, T, D)
            tokens = tokens + code.repeat_interleave(h * w, dim=1).to(tokens.dtype)
        if self.coords and location is not None:
            if location.shape != (x.shape[0], 2):
                raise SpecError(f"location coordinates must be (B, 2) = {(x.shape[0], 2)}, got {tuple(location.shape)}")
            tokens = tokens + self.location_embed_enc(location[:, 0], location[:, 1])[:, None].to(tokens.dtype)
        z = prepend_tokens(tokens, self.cls_token)  # the class token's position code is zero
        for block in self.blocks:
            z = block(z)
        return self.norm(z), (t, h, w)


def build(variant: Variant, device: str) -> PrithviViT:
    """The encoder of `variant`, its pinned weights loaded strictly, in eval mode on `device`."""
    net = PrithviViT(variant.params).eval()
    if variant.weights is not None:
        strict_load(net, load_state_dict(variant.weights), drop=DROP, strip_prefix=STRIP)
    return net.to(device)
