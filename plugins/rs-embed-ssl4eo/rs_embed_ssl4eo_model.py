"""SSL4EO-S12's ViT encoders in torch: timm-named ViTs with 13 input channels.

Imported only when a model is loaded (keeps `rs-embed models` torch-free). The released encoders
(MoCo v3, DINO and MAE pre-trainings of SSL4EO-S12) are timm `VisionTransformer`s without head, so
they are `rs_embed_core.nn.vit.TimmViT` (patch embed -> [cls] + stored position table -> blocks ->
LayerNorm eps 1e-6) with 13 input channels; only the head count differs between pre-trainings (MoCo
v3's ViT-S has 12 heads, DINO's and MAE's 6: the variant's `heads`).
"""

from __future__ import annotations

from typing import Any

import torch

from rs_embed_core.card import Variant
from rs_embed_core.errors import WeightsError
from rs_embed_core.nn import split_prefix, tokens_to_grid
from rs_embed_core.nn.vit import TimmViT
from rs_embed_core.weights import load_state_dict, strict_load

# A classification head, if a file carries one, is not part of the encoder (torchgeo tolerates it too).
DROP = ("head",)


def build_net(params: dict[str, Any]) -> TimmViT:
    """The encoder of a variant's `params` (randomly initialised)."""
    return TimmViT(
        int(params["embed_dim"]), int(params["depth"]), int(params["heads"]),
        in_chans=int(params["in_chans"]), patch_size=int(params["patch_size"]),
        image_size=int(params["image_size"]), mlp_ratio=float(params["mlp_ratio"]),
        norm_eps=float(params["norm_eps"]),
    )


def build(variant: Variant, device: str = "cpu") -> TimmViT:
    """The encoder of `variant`, weights loaded strictly from its pinned file, eval mode."""
    if variant.weights is None:
        raise WeightsError(f"SSL4EO variant {variant.name!r} has no weights spec")
    sd = load_state_dict(variant.weights)  # a missing or mismatched file is reported before any model work
    with torch.device("meta"):
        net = build_net(variant.params)
    strict_load(net, sd, drop=DROP, assign=True)
    return net.to(device).eval()


def embed(net: TimmViT, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 13, 224, 224) -> pooled (B, D) = class token after the final LayerNorm (timm's pooled output
    for these encoders), grid (B, D, 14, 14) = the patch tokens after it."""
    tokens, hw = net(x)
    cls, patches = split_prefix(tokens, net.num_prefix_tokens)
    return cls[:, 0], tokens_to_grid(patches, hw)
