"""FoMo-Net_1 in torch: a ViT whose tokens are (band, patch) pairs, one shared patch embedding for all bands.

Imported only when a model is loaded. Layout of the authors' MultiSpectralViT with
single_embedding_layer (FoMo-Bench model_zoo/multimodal_mae.py), with its parameter names:
each band is cut into 16 x 16 patches, embedded by `to_patch_embedding` (LayerNorm(256) -> Linear ->
LayerNorm(dim), at indices 1..3 after the patch rearrangement), plus `spectral_embedding[:, band_id]`
and `pos_embedding[:, 1 + patch]`; all bands' tokens are concatenated band after band and run
through vit-pytorch's `vit.Transformer` (rs_embed_core.nn.VitPytorchTransformer, vit_layout). The
authors pool by the mean of every token, then a classifier; `cls_token` is never used in that forward
and `mlp_head` is the classifier: both are dropped by name when loading.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import WeightsError
from rs_embed_core.nn import VitPytorchTransformer
from rs_embed_core.weights import load_state_dict, strict_load

DROP = ("cls_token", "mlp_head")


class FoMoNet(nn.Module):
    def __init__(self, image_size: int, patch_size: int, dim: int, depth: int, heads: int, dim_head: int,
                 mlp_dim: int, spectral_ids: int) -> None:
        super().__init__()
        self.patch = patch_size
        self.side = image_size // patch_size
        pixels = patch_size * patch_size
        self.to_patch_embedding = nn.Sequential(nn.Identity(), nn.LayerNorm(pixels), nn.Linear(pixels, dim),
                                                nn.LayerNorm(dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, self.side * self.side + 1, dim))
        self.spectral_embedding = nn.Parameter(torch.zeros(1, spectral_ids + 1, dim))  # + 1: the authors' cls slot
        self.transformer = VitPytorchTransformer(dim, depth, heads, dim_head, mlp_dim, vit_layout=True)

    def tokens(self, x: torch.Tensor, band_ids: list[int]) -> torch.Tensor:
        """(B, C, H, W) -> (B, C * n, D): per band, row-major patches with the band's and the patch's embeddings."""
        b, c, h, w = x.shape
        p = self.patch
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 1, 2, 4, 3, 5).reshape(b, c, -1, p * p)
        tok = self.to_patch_embedding(patches)  # (B, C, n, D)
        n = tok.shape[2]
        tok = tok + self.spectral_embedding[0, band_ids][None, :, None] + self.pos_embedding[:, None, 1:n + 1]
        return tok.reshape(b, c * n, -1)

    def forward(self, x: torch.Tensor, band_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """pooled (B, D) = mean of all tokens after the final norm; grid (B, D, h, w) = per-patch mean over bands."""
        b, c, h, w = x.shape
        out = self.transformer(self.tokens(x, band_ids))
        hp, wp = h // self.patch, w // self.patch
        grid = out.reshape(b, c, hp, wp, -1).mean(dim=1).permute(0, 3, 1, 2)
        return out.mean(dim=1), grid


def build_net(params: dict[str, Any]) -> FoMoNet:
    return FoMoNet(int(params["image_size"]), int(params["patch_size"]), int(params["dim"]), int(params["depth"]),
                   int(params["heads"]), int(params["dim_head"]), int(params["mlp_dim"]),
                   int(params["spectral_ids"]))


def build(variant: Variant, device: str = "cpu") -> FoMoNet:
    """The variant's network, weights loaded strictly (cls_token and mlp_head dropped by name), eval mode."""
    if variant.weights is None:
        raise WeightsError(f"FoMo variant {variant.name!r} has no weights spec")
    sd = load_state_dict(variant.weights)
    with torch.device("meta"):
        net = build_net(variant.params)
    strict_load(net, sd, drop=DROP, assign=True)
    return net.to(device).eval()
