"""Galileo's encoder in torch, with the parameter names of the authors' `encoder.pt` files.

Imported only when a model is loaded (keeps `rs-embed models` torch-free). Layout, as the authors'
`single_file_galileo.Encoder` builds it (read there, written here):

- one FlexiViT patch embedding per space-time channel group (`space_time_embed.<group>.proj`,
  8 x 8 kernels run at any patch size) and per space group (`space_embed.*`), one Linear per time
  group (`time_embed.*`) and per static group (`static_embed.*`);
- every token gets a quarter-width code each of: its channel group (`*_channel_embed`, learned),
  its frame index (`pos_embed`, a fixed sin-cos table of 24 rows), its frame's month (`month_embed`,
  a fixed cyclic table) and its position in space (a 2D sin-cos table whose positions are scaled
  by the token's ground size over 10 m, computed per call); parts a token has no axis for are 0;
- pre-norm blocks with separate `q`, `k`, `v` projections; masked tokens take no part in
  attention; a final LayerNorm (`norm`, eps 1e-5) on every token.

Only the groups a request can fill are built into the sequence (space-time: Sentinel-1,
Sentinel-2's five groups, NDVI; static: location); the authors' masking removes every other token
before the first block, so leaving them out is the same computation. Outputs, as the authors'
`average_tokens` and `apply_mask_and_average_tokens_per_patch`: pooled = mean of the visible
tokens; grid = per patch, the mean of its visible space-time tokens (all frames and groups) and
the static tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import TimmMlp, tokens_to_grid
from rs_embed_core.nn.flexi import FlexiPatchEmbed
from rs_embed_core.nn.geo_time import month_table
from rs_embed_core.nn.pos_embed import sincos_1d, sincos_2d
from rs_embed_core.weights import load_state_dict, strict_load

from rs_embed_galileo import SPACE_GROUPS, SPACE_TIME_GROUPS, STATIC_GROUPS, TIME_GROUPS

BASE_GSD_M = 10.0  # the spatial table's unit: a token's ground size over 10 m
EXPONENT_SCALE = 0.25  # Galileo's sin-cos frequencies: 10000^(-i / (2 dim)) (see rs_embed_core.nn.pos_embed)
NORM_EPS = 1e-5  # torch's LayerNorm default, as the authors build theirs



class _GroupPatchEmbed(nn.Module):
    """One channel group's flexible patch embedding under the checkpoint's `<group>.proj.*` keys, as a map."""

    def __init__(self, in_chans: int, dim: int, kernel: int) -> None:
        super().__init__()
        self.proj = FlexiPatchEmbed(in_chans, dim, kernel)

    def forward(self, x: torch.Tensor, patch_size: int) -> torch.Tensor:
        """(N, C, H, W) -> (N, D, H/p, W/p)."""
        tokens, (h, w) = self.proj(x, patch_size)
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)

class GalileoAttention(nn.Module):
    """Self-attention with separate `q`, `k`, `v` Linear layers (biases on) and `proj`; a key mask."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise SpecError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """x (B, N, D); visible (B, N) bool: only visible tokens are attended to."""
        b, n, d = x.shape
        q, k, v = (f(x).reshape(b, n, self.heads, d // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible[:, None, None, :])
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class GalileoBlock(nn.Module):
    """x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = GalileoAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = TimmMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), visible)
        return x + self.mlp(self.norm2(x))


class Galileo(nn.Module):
    """The encoder; state-dict keys equal the authors' `encoder.pt`."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        dim, kernel = int(cfg["embedding_size"]), int(cfg["max_patch_size"])
        q = dim // 4
        if dim % 16:
            raise SpecError(f"Galileo's width must be a multiple of 16 (four codes, 2D sin-cos), got {dim}")
        self.dim, self.quarter = dim, q
        self.max_frames = int(cfg["max_sequence_length"])
        self.pos_embed = nn.Parameter(sincos_1d(q, self.max_frames, EXPONENT_SCALE), requires_grad=False)
        self.month_embed = nn.Embedding.from_pretrained(month_table(q), freeze=True)
        self.s_t_channel_embed = nn.Parameter(torch.zeros(len(SPACE_TIME_GROUPS), q))
        self.sp_channel_embed = nn.Parameter(torch.zeros(len(SPACE_GROUPS), q))
        self.t_channel_embed = nn.Parameter(torch.zeros(len(TIME_GROUPS), q))
        self.st_channel_embed = nn.Parameter(torch.zeros(len(STATIC_GROUPS), q))
        self.blocks = nn.ModuleList(GalileoBlock(dim, int(cfg["num_heads"]), float(cfg["mlp_ratio"]))
                                    for _ in range(int(cfg["depth"])))
        self.space_time_embed = nn.ModuleDict({g: _GroupPatchEmbed(len(b), dim, kernel) for g, b in SPACE_TIME_GROUPS})
        self.space_embed = nn.ModuleDict({g: _GroupPatchEmbed(n, dim, kernel) for g, n in SPACE_GROUPS})
        self.time_embed = nn.ModuleDict({g: nn.Linear(n, dim) for g, n in TIME_GROUPS})
        self.static_embed = nn.ModuleDict({g: nn.Linear(n, dim) for g, n in STATIC_GROUPS})
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)
        self._st_index = {g: i for i, (g, _) in enumerate(SPACE_TIME_GROUPS)}
        self._static_index = {g: i for i, (g, _) in enumerate(STATIC_GROUPS)}

    def spatial_code(self, h: int, w: int, token_gsd_ratio: torch.Tensor) -> torch.Tensor:
        """(B,) token ground size / 10 m -> (B, h*w, D/4): x block then y block, row-major tokens."""
        if h != w:
            raise SpecError(f"Galileo's spatial table needs a square token grid, got {h}x{w}")
        return torch.stack([sincos_2d(self.quarter, h, w, concat="wh", step=float(r), exponent_scale=EXPONENT_SCALE)
                            for r in token_gsd_ratio.tolist()]).to(token_gsd_ratio.device)

    def tokens(self, groups: dict[str, torch.Tensor], visible: torch.Tensor, months: torch.Tensor,
               location: torch.Tensor | None, patch_size: int, input_res_m: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], int]:
        """Encoded tokens (B, N, D) after the final norm and their visibility (B, N).

        groups: space-time group name -> normalised pixels (B, T, C, H, W); visible: (B, T, h, w)
        bool per token (shared by the groups); months (B, T) in 0..11; location (B, 3) unit
        vectors or None (then no static token); input_res_m (B,) pixel size in metres.
        Order: space-time tokens (h, w, t, group), then the static location token.
        """
        if not groups:
            raise SpecError("Galileo needs at least one space-time channel group (Sentinel-1 or Sentinel-2 bands)")
        names = list(groups)
        b, t, _, hh, ww = groups[names[0]].shape
        if t > self.max_frames:
            raise SpecError(f"Galileo's frame table has {self.max_frames} rows; got {t} frames")
        if bool(((months < 0) | (months > 11)).any()):
            raise SpecError(f"Galileo month indices are 0..11, got {months.tolist()}")
        h, w = hh // patch_size, ww // patch_size
        q = self.quarter
        per_group = []
        for g in names:
            x = groups[g]
            y = self.space_time_embed[g](x.reshape(b * t, x.shape[2], hh, ww), patch_size)  # (B*T, D, h, w)
            per_group.append(y.reshape(b, t, self.dim, h, w).permute(0, 3, 4, 1, 2))  # (B, h, w, T, D)
        s_t = torch.stack(per_group, dim=4)  # (B, h, w, T, G, D)
        g_n = len(names)
        chan = self.s_t_channel_embed[[self._st_index[g] for g in names]]  # (G, q)
        frame = self.pos_embed[:t]  # (T, q)
        month = self.month_embed(months)  # (B, T, q)
        space = self.spatial_code(h, w, input_res_m * patch_size / BASE_GSD_M).reshape(b, h, w, q)
        code = torch.cat([
            chan[None, None, None, None].expand(b, h, w, t, g_n, q),
            frame[None, None, None, :, None].expand(b, h, w, t, g_n, q),
            month[:, None, None, :, None].expand(b, h, w, t, g_n, q),
            space[:, :, :, None, None].expand(b, h, w, t, g_n, q),
        ], dim=-1)
        x = (s_t + code.to(s_t.dtype)).reshape(b, h * w * t * g_n, self.dim)
        vis = visible.permute(0, 2, 3, 1)[..., None].expand(b, h, w, t, g_n).reshape(b, -1)
        if location is not None:
            st = self.static_embed["location"](location.to(x.dtype))  # (B, D)
            st_code = torch.cat([self.st_channel_embed[self._static_index["location"]],
                                 st.new_zeros(3 * q)])
            x = torch.cat([x, (st + st_code)[:, None]], dim=1)
            vis = torch.cat([vis, vis.new_ones(b, 1)], dim=1)
        for block in self.blocks:
            x = block(x, vis)
        return self.norm(x), vis, (h, w), t * g_n

    def forward(self, groups: dict[str, torch.Tensor], visible: torch.Tensor, months: torch.Tensor,
                location: torch.Tensor | None, patch_size: int, input_res_m: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> pooled (B, D): mean of the visible tokens; grid (B, D, h, w): per patch, mean of its visible
        space-time tokens and the static tokens (the authors' two aggregations)."""
        x, vis, (h, w), per_patch = self.tokens(groups, visible, months, location, patch_size, input_res_m)
        wgt = vis.to(x.dtype)[..., None]
        pooled = (x * wgt).sum(1) / wgt.sum(1).clamp_min(1.0)
        n_st = h * w * per_patch
        cells = (x[:, :n_st] * wgt[:, :n_st]).reshape(x.shape[0], h * w, per_patch, self.dim).sum(2)
        counts = wgt[:, :n_st].reshape(x.shape[0], h * w, per_patch).sum(2)
        static = x[:, n_st:]
        if static.shape[1]:
            cells = cells + (static * wgt[:, n_st:]).sum(1, keepdim=True)
            counts = counts + wgt[:, n_st:, 0].sum(1, keepdim=True)
        grid = cells / counts.clamp_min(1.0)[..., None]
        return pooled, tokens_to_grid(grid, (h, w))


def build(variant: Variant, device: str = "cpu") -> Galileo:
    """The encoder of `variant`, weights loaded strictly from its pinned checkpoint, in eval mode."""
    if variant.weights is None:
        raise WeightsError(f"Galileo variant {variant.name!r} has no weights spec; pass weights=<path to encoder.pt>")
    sd = load_state_dict(variant.weights)  # a missing or mismatched file is reported before any model work
    sd = {k.replace(".backbone", ""): v for k, v in sd.items()}  # some of the authors' files carry ".backbone"
    with torch.device("meta"):
        model = Galileo(variant.params)
    strict_load(model, sd, assign=True)
    return model.to(device).eval()
