"""DOFA's network in torch, with the parameter names of the torchgeo checkpoints (`torchgeo/dofa`).

Imported only when a model is loaded (keeps `rs-embed models` torch-free). Layout, as torchgeo 0.8.1
`dofa_base_patch16_224` / `dofa_large_patch16_224` build it (read there, written here):

- `patch_embed`: a hypernetwork turns each band's centre wavelength into that band's slice of a
  16x16 patch-embedding kernel. Wavelength (nm) -> 128-d sin-cos code -> residual MLP (`fclayer`)
  -> one post-norm transformer layer over [128 learned weight tokens, the C band codes, a bias token]
  (`weight_generator`) -> linear heads giving a (D, C, 16, 16) kernel and a (D,) bias, both x 0.01.
  The convolution has stride 16 and padding 1 (the original code's choice; a 224 input still gives
  14 x 14 tokens, each offset by one pixel up-left).
- a class token and a fixed sin-cos position table (`pos_embed`, stored in the checkpoint), then
  timm-named pre-norm ViT blocks (rs_embed_core.nn.TimmBlock, LayerNorm eps 1e-6).
- No trained final norm: the released encoder was cut from the MAE checkpoint without its `norm`
  (torchgeo's extract.py deletes it). torchgeo's pooled feature is `fc_norm(mean of patch tokens)`
  with `fc_norm` left at its initial identity affine; here that is a LayerNorm without parameters.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import TimmBlock, tokens_to_grid
from rs_embed_core.nn.hypernet import KernelGenerator, ResidualMlp, generated_kernel
from rs_embed_core.weights import load_state_dict, strict_load

WAVE_DIM = 128  # width of the wavelength code and of the weight generator (fixed in DOFA)
WEIGHT_TOKENS = 128  # learned query tokens of the weight generator
KERNEL_SCALE = 0.01  # generated kernels and biases are scaled by this (DOFA's `scaler`)


def wavelength_code(wavelengths_um: torch.Tensor, dim: int = WAVE_DIM) -> torch.Tensor:
    """(C,) wavelengths in micrometres -> (C, dim) sin-cos code of the wavelength in nanometres.

    Computed in float32 like the original, which is what the checkpoints were trained with
    (rs_embed_core.nn.sincos_1d works in float64; at positions ~2000 the two differ by ~1e-4).
    """
    pos = wavelengths_um.to(torch.float32) * 1000.0
    half = dim // 2
    omega = 1.0 / 10000.0 ** (torch.arange(half, dtype=torch.float32, device=pos.device) / float(half))
    angles = pos[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class DynamicPatchEmbed(nn.Module):
    """Wavelength-conditioned patch embedding (DOFA's `patch_embed`)."""

    def __init__(self, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.embed_dim, self.patch_size = embed_dim, patch_size
        self.weight_generator = KernelGenerator(WAVE_DIM, patch_size * patch_size * embed_dim, embed_dim,
                                                weight_tokens=WEIGHT_TOKENS)
        self.fclayer = ResidualMlp(WAVE_DIM)

    def kernel(self, wavelengths_um: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (D, C, k, k) convolution kernel and (D,) bias for these bands."""
        codes = self.fclayer(wavelength_code(wavelengths_um))
        weights, bias = self.weight_generator(codes)
        return generated_kernel(weights, bias, self.patch_size, self.embed_dim, KERNEL_SCALE)

    def forward(self, x: torch.Tensor, wavelengths_um: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        kernel, bias = self.kernel(wavelengths_um)
        y = F.conv2d(x, kernel, bias, stride=self.patch_size, padding=1)  # (B, D, h, w)
        return y.flatten(2).transpose(1, 2), (y.shape[-2], y.shape[-1])


class DOFA(nn.Module):
    """DOFA encoder: keys equal the torchgeo checkpoint's (patch_embed.*, cls_token, pos_embed, blocks.*)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        dim, patch = int(cfg["embed_dim"]), int(cfg["patch_size"])
        n = int(cfg["image_size"]) // patch
        self.image_size, self.grid_hw, self.eps = int(cfg["image_size"]), (n, n), float(cfg.get("norm_eps", 1e-6))
        self.patch_embed = DynamicPatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n * n + 1, dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            TimmBlock(dim, int(cfg["heads"]), float(cfg.get("mlp_ratio", 4.0)), norm_eps=self.eps)
            for _ in range(int(cfg["depth"]))
        )

    def tokens(self, x: torch.Tensor, wavelengths_um: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, 224, 224) normalised bands, (C,) wavelengths in um -> patch tokens after the last block."""
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise SpecError(f"DOFA needs (B, C, {self.image_size}, {self.image_size}) inputs, got {tuple(x.shape)}")
        if wavelengths_um.ndim != 1 or wavelengths_um.shape[0] != x.shape[1]:
            raise SpecError(f"DOFA needs one wavelength per band: {x.shape[1]} bands, {tuple(wavelengths_um.shape)} wavelengths")
        h, hw = self.patch_embed(x, wavelengths_um)
        pos = self.pos_embed.to(h.dtype)
        h = h + pos[:, 1:]
        cls = (self.cls_token + pos[:, :1]).expand(h.shape[0], -1, -1)
        h = torch.cat([cls, h], dim=1)
        for block in self.blocks:
            h = block(h)
        return h[:, 1:], hw

    def forward(self, x: torch.Tensor, wavelengths_um: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> pooled (B, D) = LayerNorm(mean of patch tokens), no affine; grid (B, D, 14, 14) raw patch tokens."""
        patches, hw = self.tokens(x, wavelengths_um)
        pooled = F.layer_norm(patches.mean(dim=1), (patches.shape[-1],), eps=self.eps)
        return pooled, tokens_to_grid(patches, hw)


def build(variant: Variant, device: str = "cpu") -> DOFA:
    """The encoder of `variant`, weights loaded strictly from its pinned checkpoint, in eval mode."""
    if variant.weights is None:
        raise WeightsError(f"DOFA variant {variant.name!r} has no weights spec")
    sd = load_state_dict(variant.weights)  # a missing file is reported before any model work
    model = DOFA(variant.params)
    strict_load(model, sd, drop=())  # the torchgeo files hold exactly the encoder (no head, no norm)
    return model.to(device).eval()
