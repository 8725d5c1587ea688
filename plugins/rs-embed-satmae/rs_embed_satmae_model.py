"""The SatMAE / SatMAE++ encoder in torch: a plain ViT with timm's parameter names, no MAE masking.

Imported only when a model is loaded (keeps `rs-embed models` torch-free). Both papers pre-train
`mae_vit_large_patch16_dec512d8b` (SatMAE `models_mae.py`, SatMAE++ `models_mae.py`): timm
`PatchEmbed` + `Block`s with `norm_layer=partial(nn.LayerNorm, eps=1e-6)`, a class token and a fixed
sin-cos position table stored in the checkpoint. The encoder is `rs_embed_core.nn.vit.TimmViT`
(patch embed + positions -> blocks -> norm) with those names, so the encoder part of the released
files loads strictly; the MAE decoder (and SatMAE++'s multi-scale upsampling head) is dropped by
name. The MAE `random_masking` step is not run at all: tokens keep their row-major spatial order.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import torch

from rs_embed_core.card import Variant
from rs_embed_core.errors import WeightsError
from rs_embed_core.nn import split_prefix, tokens_to_grid
from rs_embed_core.nn.vit import TimmViT
from rs_embed_core.weights import load_state_dict, strict_load


def build_net(params: dict[str, Any]) -> TimmViT:
    """The encoder of a variant's `params` (randomly initialised)."""
    return TimmViT(
        int(params["embed_dim"]), int(params["depth"]), int(params["heads"]),
        in_chans=3, patch_size=int(params["patch_size"]), image_size=int(params["image_size"]),
        mlp_ratio=float(params["mlp_ratio"]), norm_eps=float(params["norm_eps"]),
    )


def load_checkpoint(variant: Variant) -> dict[str, torch.Tensor]:
    """The variant's pinned file, verified and read with `weights_only=True`.

    The authors' training checkpoints (SatMAE++ on the Hub, SatMAE on Zenodo) pickle the run's
    `argparse.Namespace` beside the weights; that one inert attribute container is added to the
    weights-only allow-list for this read (nothing else is), then the `model` entry is kept.
    """
    if variant.weights is None:
        raise WeightsError(f"variant {variant.name!r} has no weights spec")
    with torch.serialization.safe_globals([argparse.Namespace]):
        return load_state_dict(variant.weights)


def build(variant: Variant, drop: Sequence[str], device: str = "cpu") -> TimmViT:
    """The encoder of `variant`, weights loaded strictly (decoder keys in `drop` removed), eval mode."""
    sd = load_checkpoint(variant)  # a missing or mismatched file is reported before any model work
    with torch.device("meta"):
        net = build_net(variant.params)
    strict_load(net, sd, drop=tuple(drop), assign=True)  # memory-mapped tensors become the parameters
    return net.to(device).eval()


def embed(net: TimmViT, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, 224, 224) normalised RGB -> pooled (B, D) = mean of the normed patch tokens, grid (B, D, 14, 14)."""
    tokens, hw = net(x)
    _, patches = split_prefix(tokens, net.num_prefix_tokens)
    return patches.mean(dim=1), tokens_to_grid(patches, hw)
