"""AnySat's release encoder in torch, with the parameter names of the authors' `AnyModule` checkpoint.

Imported only when a model is loaded (keeps `rs-embed models` torch-free). Layout, as gastruc/AnySat
hubconf.py builds the release model (read there, written here):

- `cls_token` (1, 1, D); `projector_<modality>` for every modality in sorted order: time series an
  L-TAE under `patch_embed` (rs_embed_core.nn.LTAE) plus a frozen scalar `pad_parameter`; images a
  `patch_embed` Conv2d (no bias) and an `mlp` [Linear, LayerNorm, ReLU] x 2.
- `spatial_encoder`: `cls_token`, `predictor_blocks.<i>` (pre-norm blocks, LayerNorm eps 1e-5, attention
  `qkv`/`proj` with iRPE on keys `attn.rpe_k.lookup_table_weight`), `predictor_norm`.
- `blocks.0..depth-1`: timm pre-norm blocks (eps 1e-6, rs_embed_core.nn.TimmBlock); `blocks.<depth>`: the
  cross-attention pooling block (`attn.q_learned`, `attn.wk`, `attn.wv`, `attn.rpe_k`, `attn.proj`, `mlp`).

The release file ({"state_dict": ...}) holds exactly these keys; nothing is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import LTAE, ContextualRPE, TimmBlock, TimmMlp, irpe_buckets, sincos_2d
from rs_embed_core.weights import load_state_dict, strict_load

from rs_embed_anysat import IMAGES, IRPE_RATIO, LTAE_DK, LTAE_HEADS, MODALITIES, SUBPATCH_M, TIME_SERIES


class SeriesProjector(nn.Module):
    """`PatchLTAEMulti`: per-pixel L-TAE -> (B, H, W, D) sub-patch features."""

    def __init__(self, modality: str, dim: int) -> None:
        super().__init__()
        channels, in_norm, period, self.reduce_scale = TIME_SERIES[modality]
        self.patch_embed = LTAE(channels, LTAE_HEADS, LTAE_DK, [dim // 8, dim // 2, dim, dim * 2, dim], [dim],
                                period, in_norm=in_norm)
        # the authors fill masked inputs with it; requests here carry no mask (invalid pixels are filled by the chain)
        self.pad_parameter = nn.Parameter(torch.tensor(0.0), requires_grad=False)

    def forward(self, x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        """x (B, T, C, H, W), days (B, T) -> (B, H, W, D)."""
        b, t, c, h, w = x.shape
        pixels = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, c)
        per_pixel_days = days[:, None, None, :].expand(b, h, w, t).reshape(b * h * w, t)
        return self.patch_embed(pixels, per_pixel_days).reshape(b, h, w, -1)


class ImageProjector(nn.Module):
    """`PatchMLPMulti`'s parameters (conv + MLP). Held so that the release file loads strictly; not run:
    no request here can give the 0.2-1.25 m imagery these modalities take."""

    def __init__(self, modality: str, dim: int) -> None:
        super().__init__()
        channels, kernel, _ = IMAGES[modality]
        self.patch_embed = nn.Conv2d(channels, dim, kernel_size=kernel, stride=kernel, bias=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.ReLU(),
                                 nn.Linear(2 * dim, dim), nn.LayerNorm(dim), nn.ReLU())


class RPEAttention(nn.Module):
    """Self-attention with iRPE on keys: logits = (q s) k^T + rpe(q s), s = head_dim^-0.5 (`RPEAttention`)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rpe_k = ContextualRPE(dim // heads, 1, IRPE_RATIO, first_head_only=True)

    def forward(self, x: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q = q * self.scale
        logits = q @ k.transpose(-2, -1) + self.rpe_k(q, buckets)
        return self.proj((logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, d))


class RPEBlock(nn.Module):
    """Pre-norm block around RPEAttention (`BlockTransformer`; LayerNorm eps 1e-5)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = RPEAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TimmMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), buckets)
        return x + self.mlp(self.norm2(x))


class SpatialEncoder(nn.Module):
    """`TransformerMulti`: a patch's sub-patch tokens + class token -> (class token, sub-patch tokens)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.predictor_blocks = nn.ModuleList(RPEBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.predictor_norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, side: int, spacing_m: float) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (N, side*side, D) row-major in the patch -> ((N, D), (N, side*side, D))."""
        n, s2, d = tokens.shape
        pos = sincos_2d(d, side, side, cls_token=True, step=spacing_m).to(tokens)
        x = torch.cat([self.cls_token.expand(n, 1, d), tokens], dim=1) + pos
        buckets = irpe_buckets(side, side, 1, IRPE_RATIO)
        for block in self.predictor_blocks:
            x = block(x, buckets)
        x = self.predictor_norm(x)
        return x[:, 0], x[:, 1:]


class CrossRPEAttention(nn.Module):
    """Pooling attention (`CrossRPEAttentionMulti.forward_release`): queries q_learned + position codes,
    logits = (q k^T) s + rpe(q), s = head_dim^-0.5 (here the RPE sees the unscaled queries)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.wk = nn.Linear(dim, dim)
        self.wv = nn.Linear(dim, dim)
        self.q_learned = nn.Parameter(torch.zeros(1, 1, dim))
        self.rpe_k = ContextualRPE(dim // heads, 1, IRPE_RATIO, first_head_only=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) keys/values; pos (Q, D) query positions; buckets (Q, N) -> (B, Q, D)."""
        b, n, d = x.shape
        hd = d // self.heads
        q = (self.q_learned + pos[None]).expand(b, -1, -1).reshape(b, -1, self.heads, hd).transpose(1, 2)
        k = self.wk(x).reshape(b, n, self.heads, hd).transpose(1, 2)
        v = self.wv(x).reshape(b, n, self.heads, hd).transpose(1, 2)
        logits = (q @ k.transpose(-2, -1)) * self.scale + self.rpe_k(q, buckets)
        return self.proj((logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, -1, d))


class CrossBlock(nn.Module):
    """`CrossBlockMulti`: x = attn(norm1(x)) (no residual), then x + mlp(norm2(x)); LayerNorm eps 1e-6."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = CrossRPEAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = TimmMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, pos: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x), pos, buckets)
        return x + self.mlp(self.norm2(x))


class AnySatEncoder(nn.Module):
    """`AnyModule(release=True)` for one time-series modality at a time (`embed_series`)."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        dim, depth, heads = int(cfg["embed_dim"]), int(cfg["depth"]), int(cfg["heads"])
        ratio = float(cfg["mlp_ratio"])
        self.dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        for m in MODALITIES:
            setattr(self, f"projector_{m}", SeriesProjector(m, dim) if m in TIME_SERIES else ImageProjector(m, dim))
        self.spatial_encoder = SpatialEncoder(dim, depth, heads, ratio)
        self.blocks = nn.ModuleList([*(TimmBlock(dim, heads, ratio, norm_eps=1e-6) for _ in range(depth)),
                                     CrossBlock(dim, heads, ratio)])

    def patch_tokens(self, x: torch.Tensor, days: torch.Tensor, modality: str,
                     px: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The local stage: x (B, T, C, H, W) normalised, days (B, T) day of year, px = patch side in pixels
        -> patch tokens (B, n, n, D) and their sub-patch tokens (B, n, n, px, px, D), n = H / px. Each
        patch is summarised from its own pixels only, at positions relative to the patch."""
        if modality not in TIME_SERIES or TIME_SERIES[modality][3] != 1 or SUBPATCH_M[modality] != 10:
            raise SpecError(f"AnySat runs 10 m time series here (s2, s1, s1-asc, l8), not {modality!r}")
        b, _, _, h, w = x.shape
        if h != w or px < 1 or h % px:
            raise SpecError(f"AnySat needs a square tile of whole {px}-px patches, got {h}x{w}")
        n = h // px
        sub = getattr(self, f"projector_{modality}")(x, days)  # (B, H, W, D)
        sub = sub.reshape(b, n, px, n, px, self.dim).permute(0, 1, 3, 2, 4, 5).reshape(b * n * n, px * px, self.dim)
        patches, subs = self.spatial_encoder(sub, px, SUBPATCH_M[modality])
        return patches.reshape(b, n, n, self.dim), subs.reshape(b, n, n, px, px, self.dim)

    def embed_series(self, x: torch.Tensor, days: torch.Tensor, modality: str, px: int,
                     dense: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """-> tile (B, D), patch grid (B, D, n, n) and, with `dense`, (B, 2D, H, W): [patch token |
        sub-patch token] per pixel (AnySat's outputs 'tile', 'patch', 'dense'); inputs as `patch_tokens`."""
        local, subs = self.patch_tokens(x, days, modality, px)
        b, n = local.shape[:2]
        pos = sincos_2d(self.dim, n, n, cls_token=True, step=float(px)).to(x)  # patch positions x (metres / 10)
        tokens = torch.cat([self.cls_token.expand(b, 1, self.dim), local.reshape(b, n * n, self.dim)], 1) + pos
        for block in self.blocks[:-1]:
            tokens = block(tokens)
        out = self.blocks[-1](tokens, pos, irpe_buckets(n, n, 1, IRPE_RATIO))
        tile, patches = out[:, 0], out[:, 1:].reshape(b, n, n, self.dim)
        grid = patches.permute(0, 3, 1, 2)
        if not dense:
            return tile, grid, None
        both = torch.cat([patches[:, :, :, None, None].expand_as(subs), subs], dim=-1)  # (B, n, n, px, px, 2D)
        return tile, grid, both.permute(0, 5, 1, 3, 2, 4).reshape(b, 2 * self.dim, n * px, n * px)


def build(variant: Variant, device: str = "cpu") -> AnySatEncoder:
    """The encoder of `variant`, weights loaded strictly from its file, in eval mode."""
    if variant.weights is None:
        raise WeightsError(f"AnySat variant {variant.name!r} has no weights spec")
    sd = load_state_dict(variant.weights)  # a missing or mismatched file is reported first
    with torch.device("meta"):
        model = AnySatEncoder(variant.params)
    strict_load(model, sd, assign=True)
    return model.to(device).eval()
