"""TerraMind 1.0's Sentinel-2 L2A encoder path in torch, with the checkpoints' parameter names.

The published checkpoints hold the whole any-to-any model: one patch embedding per input
modality under `encoder_embeddings.<modality>`, the shared encoder (`encoder.<i>`,
`encoder_norm`), and the decoder side. `build` keeps the S2 L2A pixel embedding and the shared
encoder and loads them strictly; the other modalities' embeddings and the decoder are dropped by
name (`drop_names`), and anything else left over is an error. Imported only when a model is
loaded (keeps `rs-embed models` torch-free).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import TimmBlock, sincos_2d
from rs_embed_core.weights import load_state_dict, strict_load

MODALITY = "untok_sen2l2a@224"  # TerraMind's key for raw (untokenised) Sentinel-2 L2A, 12 bands
# Top-level checkpoint entries of the decoder side (terratorch's TerraMind encoder-decoder layout).
DECODER = ("decoder_embeddings", "decoder", "decoder_norm", "decoder_proj_context", "mask_token")


class PixelEmbedding(nn.Module):
    """Raw image -> tokens: a bias-free Linear over each patch's pixels (pixel-major, band-minor,
    the layout TerraMind's checkpoints use), plus a learned modality embedding `mod_emb` and the
    fixed 2D sin-cos positions (row block then column block, D/4 frequencies each)."""

    def __init__(self, channels: int, dim: int, patch: int, img_size: int) -> None:
        super().__init__()
        self.patch, self.dim, self.base = patch, dim, img_size // patch
        self.proj = nn.Linear(channels * patch * patch, dim, bias=False)
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        self._pos: dict[tuple[int, int], torch.Tensor] = {}

    def pos_emb(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(h*w, D); for a grid other than the pretraining one, that table resized bicubically
        (align_corners=False) as the reference does."""
        if (h, w) not in self._pos:
            n = self.base
            emb = sincos_2d(self.dim, n, n, concat="hw")
            if (h, w) != (n, n):
                grid = emb.reshape(1, n, n, self.dim).permute(0, 3, 1, 2)
                grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
                emb = grid.permute(0, 2, 3, 1).reshape(h * w, self.dim)
            self._pos[(h, w)] = emb
        return self._pos[(h, w)].to(device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        b, c, hh, ww = x.shape
        p = self.patch
        if hh % p or ww % p:
            raise SpecError(f"input {hh}x{ww} is not a multiple of the patch size {p}")
        h, w = hh // p, ww // p
        patches = x.reshape(b, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, p * p * c)
        tokens = self.proj(patches) + (self.pos_emb(h, w, x.device) + self.mod_emb).to(x.dtype)
        return tokens, (h, w)


class TerraMindS2(nn.Module):
    """forward(x (B, 12, H, W) standardised S2 L2A) -> tokens (B, h*w, D) after `encoder_norm`, (h, w)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        d = int(cfg["dim"])
        self.encoder_embeddings = nn.ModuleDict(
            {MODALITY: PixelEmbedding(int(cfg["in_chans"]), d, int(cfg["patch_size"]), int(cfg["img_size"]))}
        )
        bias = bool(cfg["bias"])
        self.encoder = nn.ModuleList(
            TimmBlock(d, int(cfg["heads"]), float(cfg["mlp_ratio"]), act=cfg["act"], norm_eps=1e-6, norm_bias=False,
                      qkv_bias=bias, proj_bias=bias, mlp_bias=bias, gated_mlp=bool(cfg["gated_mlp"]))
            for _ in range(int(cfg["depth"]))
        )
        self.encoder_norm = nn.LayerNorm(d, eps=1e-6, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        z, hw = self.encoder_embeddings[MODALITY](x)
        for block in self.encoder:
            z = block(z)
        return self.encoder_norm(z), hw


def drop_names(keys: Iterable[str], depth: int) -> list[str]:
    """What the S2 L2A encoder does not use, named: the decoder side, the other modalities'
    embeddings, the fixed sin-cos table `pos_emb`, and the all-zero `bias` buffers of the
    bias-free LayerNorms (TerraMind's LayerNorm class registers them; none is a parameter)."""
    names = set(DECODER)
    names.add(f"encoder_embeddings.{MODALITY}.pos_emb")
    names.update(f"encoder.{i}.{n}.bias" for i in range(depth) for n in ("norm1", "norm2"))
    names.add("encoder_norm.bias")
    for k in keys:
        if k.startswith("encoder_embeddings.") and not k.startswith(f"encoder_embeddings.{MODALITY}."):
            names.add(".".join(k.split(".")[:2]))  # the whole embedding of another modality
    return sorted(names)


def build(variant: Variant, device: str) -> TerraMindS2:
    """The S2 L2A encoder of `variant`, its pinned weights loaded strictly, in eval mode on `device`."""
    net = TerraMindS2(variant.params).eval()
    if variant.weights is not None:
        sd = load_state_dict(variant.weights)
        drop = drop_names(sd, int(variant.params["depth"]))
        nonzero = [k for k in drop if k.endswith("norm1.bias") or k.endswith("norm2.bias") or k == "encoder_norm.bias"
                   if k in sd and bool(sd[k].any())]
        if nonzero:  # a trained LayerNorm bias would change the outputs: never drop one silently
            raise WeightsError(f"{variant.weights.filename}: LayerNorm biases {nonzero[:3]} are not zero, but "
                               "TerraMind's encoder norms are bias-free; this is not a TerraMind 1.0 checkpoint")
        strict_load(net, sd, drop=drop)
    return net.to(device)
