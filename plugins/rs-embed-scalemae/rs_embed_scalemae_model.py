"""Scale-MAE's encoder in torch: a timm-named ViT-L/16 whose position table depends on the input's GSD.

Imported only when a model is loaded (keeps `rs-embed models` torch-free). Scale-MAE (Reed et al.,
ICCV 2023) replaces the fixed sin-cos table of MAE by one computed per image from its ground
sampling distance: token (row i, column j) gets the 2D sin-cos code of the *scaled* position
(j * res, i * res), column block first, with a zero row for the class token. torchgeo 0.8.1
(`ScaleMAE._pos_embed`, `get_2d_sincos_pos_embed_with_resolution`; read there, written here)
computes it in float32, as the authors' code (`util/pos_embed.py`) and the checkpoint's training
did; `gsd_pos_embed` does the same operations in the same order. The rest is
`rs_embed_core.nn.vit.TimmViT` (patch embed -> [cls] + table -> blocks -> LayerNorm eps 1e-6).
"""

from __future__ import annotations

from typing import Any

import torch

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import split_prefix, tokens_to_grid
from rs_embed_core.nn.vit import TimmViT
from rs_embed_core.weights import load_state_dict, strict_load

# The file holds timm's fixed 224-px table as `pos_embed` (torchgeo keeps the parameter, unused);
# Scale-MAE computes its table per call, so that entry is dropped by name.
DROP = ("pos_embed",)


def _axis(pos: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    angles = pos[..., None] * omega
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def gsd_pos_embed(dim: int, grid_size: int, res: torch.Tensor) -> torch.Tensor:
    """(B, 1 + n*n, dim) float32 position tables for a n x n token grid, one per entry of `res` (B,).

    `res` scales the integer positions (Scale-MAE's GSD ratio). Row-major tokens; channels: the
    column code (dim/2) then the row code (dim/2), each [sin..., cos...] with 10000^(-k/(dim/4)).
    """
    if dim % 4:
        raise SpecError(f"Scale-MAE position table needs a width divisible by 4, got {dim}")
    res = res.to(torch.float32).reshape(-1)
    if not torch.isfinite(res).all() or (res <= 0).any():
        raise SpecError(f"Scale-MAE needs positive finite GSD ratios, got {res.tolist()}")
    half = dim // 2
    omega = torch.arange(half // 2, dtype=torch.float32, device=res.device)
    omega /= half / 2.0
    omega = 1.0 / 10000**omega
    g = torch.arange(grid_size, dtype=torch.float32, device=res.device)
    rows, cols = torch.meshgrid(g, g, indexing="ij")
    x = cols.reshape(1, -1) * res[:, None]  # (B, n*n): scaled column positions
    y = rows.reshape(1, -1) * res[:, None]
    table = torch.cat([_axis(x, omega), _axis(y, omega)], dim=-1)
    return torch.cat([table.new_zeros(table.shape[0], 1, dim), table], dim=1)


def build_net(params: dict[str, Any]) -> TimmViT:
    """The encoder of a variant's `params` (randomly initialised, no stored position table)."""
    return TimmViT(
        int(params["embed_dim"]), int(params["depth"]), int(params["heads"]),
        in_chans=3, patch_size=int(params["patch_size"]), image_size=int(params["image_size"]),
        mlp_ratio=float(params["mlp_ratio"]), norm_eps=float(params["norm_eps"]), pos_embed=False,
    )


def build(variant: Variant, device: str = "cpu") -> TimmViT:
    """The encoder of `variant`, weights loaded strictly from its pinned file, eval mode."""
    if variant.weights is None:
        raise WeightsError(f"Scale-MAE variant {variant.name!r} has no weights spec")
    sd = load_state_dict(variant.weights)  # a missing or mismatched file is reported before any model work
    with torch.device("meta"):
        net = build_net(variant.params)
    strict_load(net, sd, drop=DROP, assign=True)
    return net.to(device).eval()


def embed(net: TimmViT, x: torch.Tensor, res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, 224, 224) normalised RGB, (B,) GSD ratios -> pooled (B, D) = class token after the final
    LayerNorm (Scale-MAE's kNN feature), grid (B, D, 14, 14) = the patch tokens after it."""
    n = net.grid_hw[0]
    table = gsd_pos_embed(net.dim, n, res.to(x.device)).to(x.dtype)
    tokens, hw = net(x, table)
    cls, patches = split_prefix(tokens, net.num_prefix_tokens)
    return cls[:, 0], tokens_to_grid(patches, hw)
