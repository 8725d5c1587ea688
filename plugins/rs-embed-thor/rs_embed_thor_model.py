"""THOR's encoder in torch, with the parameter names of the authors' checkpoints (`ThorViTEncoder`).

Imported only when a model is loaded (keeps `rs-embed models` torch-free). Layout, as FM4CS/THOR
thor/models/thor_vit.py builds the `*_alibi_patch_size_embed_v1` encoders (read there, written here):

- `ind_patch_embed.patch_embed.<kernel>`: one Conv2d(1, D, 16, 16) per kernel (46: S2 12, S1 4 shared
  by IW/EW, S3 30), PI-resized to the patch size in use (rs_embed_core.nn.BandGroupPatchEmbed).
- a group's tokens = mean of its present bands' tokens, plus
  [sin-cos code (D - G wide) of patch x GSD / 40 m | `band_embed.group<i>` (G wide, fixed sin-cos of i)].
- groups concatenated in the channel table's order, each row-major; no class token.
- 2D ALiBi: each token's patch centre on the ground, ((i * p + p / 2) * GSD, (j * p + p / 2) * GSD),
  divided by the largest patch footprint p * GSD of the groups present; bias -m_h * distance with the
  stored slopes `encoder_slopes`.
- timm-named pre-norm blocks (rs_embed_core.nn.TimmBlock) taking that bias, final `norm` (eps 1e-6).

Checkpoint: keys carry an `encoder.` prefix (the authors load `state_dict["encoder.*"]`); their ignore
list (decoder_*, decode_*, pos_embed*, ref_pos_embed*) is `IGNORED`, everything else loads strictly.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import BandGroupPatchEmbed, TimmBlock, alibi_bias_2d, alibi_slopes, sincos_1d
from rs_embed_core.weights import load_state_dict, strict_load

from rs_embed_thor import GROUPS, GSD_M, INPUT_GSD_M, KERNEL, KERNEL_NAMES, KERNEL_PATCH, MIN_GSD, REF_PATCH

PREFIX = "encoder."
IGNORED_STARTS = ("decoder_", "decode_")  # the authors' ckpt_ignore regexes decoder_.* and decode_.*
IGNORED_MODULES = ("pos_embed", "ref_pos_embed")  # ... and pos_embed.*, ref_pos_embed.* (absolute tables)

Layout = list[tuple[int, tuple[int, int]]]  # (group index, token grid (h, w)) in token order


def encoder_keys(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file's encoder tensors under the module's names: `encoder.` stripped, the ignore list removed."""
    out = {}
    for key, value in sd.items():
        key = key[len(PREFIX):] if key.startswith(PREFIX) else key
        head = key.split(".", 1)[0]
        if head.startswith(IGNORED_STARTS) or head in IGNORED_MODULES:
            continue
        out[key] = value
    return out


class ThorEncoder(nn.Module):
    """`ThorViTEncoder` (alibi, patch-size code, pooled cls) for the channels of the pre-training table."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        dim, heads, group_dim = int(cfg["embed_dim"]), int(cfg["heads"]), int(cfg["group_embed_dim"])
        self.dim, self.eps = dim, float(cfg["norm_eps"])
        self.footprint_dim = dim - group_dim
        self.ind_patch_embed = BandGroupPatchEmbed(KERNEL_NAMES, dim, KERNEL_PATCH)
        self.register_buffer("encoder_slopes", torch.tensor(alibi_slopes(heads), dtype=torch.float32))
        codes = sincos_1d(group_dim, len(GROUPS))
        self.band_embed = nn.ParameterDict(
            {f"group{i}": nn.Parameter(codes[i].clone(), requires_grad=False) for i in range(len(GROUPS))})
        self.blocks = nn.ModuleList(
            TimmBlock(dim, heads, float(cfg["mlp_ratio"]), norm_eps=self.eps) for _ in range(int(cfg["depth"])))
        self.norm = nn.LayerNorm(dim, eps=self.eps)

    def tokens(self, bands: Mapping[str, torch.Tensor], patch: int) -> tuple[torch.Tensor, Layout]:
        """{channel: (B, 1, H_c, W_c) at its native GSD} -> last-block tokens (B, T, D), unnormalised, and
        the layout of T: the groups present, in table order, each (h, w) row-major."""
        unknown = sorted(set(bands) - set(GSD_M))
        if unknown:
            raise SpecError(f"THOR has no channels {unknown}")
        seq, layout = [], []
        for g, members in enumerate(GROUPS):
            present = [(KERNEL[c], bands[c]) for c in members if c in bands]
            if not present:
                continue
            x, hw = self.ind_patch_embed(present, patch)
            size_code = sincos_1d(self.footprint_dim, [footprint_code(GSD_M[members[0]], patch)])
            aux = torch.cat([size_code.to(x), self.band_embed[f"group{g}"].to(x)[None]], dim=-1)
            seq.append(x + aux)
            layout.append((g, hw))
        if not seq:
            raise SpecError("THOR got no bands")
        x = torch.cat(seq, dim=1)
        where = token_positions(layout, patch).to(device=x.device, dtype=torch.float32)
        bias = alibi_bias_2d(where, self.encoder_slopes.float()).to(x.dtype)
        for block in self.blocks:
            x = block(x, bias)
        return x, layout

    def resample(self, x: torch.Tensor, channels: Sequence[str]) -> dict[str, torch.Tensor]:
        """(B, C, H, W) on the 10 m grid -> {channel: (B, 1, H * 10 / GSD, W * 10 / GSD)} (bilinear, as the
        authors' wrapper resamples each band to its native GSD)."""
        if x.ndim != 4 or x.shape[1] != len(channels):
            raise SpecError(f"THOR takes (B, C, H, W) with one channel name per band, got {tuple(x.shape)} "
                            f"and {len(channels)} names")
        out = {}
        for i, c in enumerate(channels):
            size = (int(x.shape[-2] * INPUT_GSD_M / GSD_M[c]), int(x.shape[-1] * INPUT_GSD_M / GSD_M[c]))
            out[c] = F.interpolate(x[:, i:i + 1], size=size, mode="bilinear", align_corners=False)
        return out

    def embed(self, x: torch.Tensor, channels: Sequence[str],
              patch: int) -> tuple[torch.Tensor, torch.Tensor, Layout]:
        """-> pooled (B, D) = LN(mean(LN(tokens))); grid (B, D, h, w) = group grids upsampled to the finest, mean."""
        tokens, layout = self.tokens(self.resample(x, channels), patch)
        normed = self.norm(tokens)
        pooled = self.norm(normed.mean(dim=1))
        return pooled, merge_group_grids(tokens, layout), layout


def footprint_code(gsd: float, patch: int) -> float:
    """The value THOR's patch-size code encodes: patch x GSD / (reference patch 4 x finest GSD 10 m)."""
    return patch * gsd / (REF_PATCH * MIN_GSD)


def token_positions(layout: Layout, patch: int) -> torch.Tensor:
    """(T, 2) ground positions of the tokens in `layout` order: each patch centre (row, column) in metres,
    ((i * p + p / 2) * GSD, (j * p + p / 2) * GSD), over the largest patch footprint p * GSD present."""
    points, footprints = [], []
    for g, (h, w) in layout:
        gsd = GSD_M[GROUPS[g][0]]
        rows = (torch.arange(h, dtype=torch.float64) * patch + patch / 2) * gsd
        cols = (torch.arange(w, dtype=torch.float64) * patch + patch / 2) * gsd
        points.append(torch.cartesian_prod(rows, cols).reshape(h * w, 2))
        footprints.append(patch * gsd)
    return torch.cat(points) / max(footprints)


def merge_group_grids(tokens: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(B, T, D) tokens in `layout` order -> (B, D, h, w): each group's grid, the coarser ones upsampled
    (bilinear, align_corners=False) to the finest group's (h, w), then the mean over groups."""
    target = max((hw for _, hw in layout), key=lambda hw: hw[0] * hw[1])
    grids, start = [], 0
    for _, (h, w) in layout:
        part = tokens[:, start:start + h * w].transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
        grids.append(part if (h, w) == target else F.interpolate(part, size=target, mode="bilinear",
                                                                 align_corners=False))
        start += h * w
    if start != tokens.shape[1]:
        raise SpecError(f"THOR layout covers {start} tokens, the sequence has {tokens.shape[1]}")
    return torch.stack(grids).mean(dim=0)


def build(variant: Variant, device: str = "cpu") -> ThorEncoder:
    """The encoder of `variant`, weights loaded strictly from its file, in eval mode."""
    if variant.weights is None:
        raise WeightsError(f"THOR variant {variant.name!r} has no weights spec")
    sd = encoder_keys(load_state_dict(variant.weights))  # a missing or mismatched file is reported first
    with torch.device("meta"):
        model = ThorEncoder(variant.params)
    strict_load(model, sd, assign=True)
    return model.to(device).eval()
