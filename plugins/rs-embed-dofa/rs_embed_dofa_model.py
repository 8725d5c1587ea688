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

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import Attention, TimmBlock, tokens_to_grid
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


class ResidualMlp(nn.Module):
    """x + relu(w2(relu(w1(x)))): DOFA's `fclayer`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, dim)
        self.w2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.w2(F.relu(self.w1(x))))


class PostNormLayer(nn.Module):
    """norm1(x + attn(x)), then norm2(x + linear2(gelu(linear1(x)))); torch's TransformerEncoderLayer names."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


class _Layers(nn.Module):
    """Holds `layers.{i}` so the keys read `transformer_encoder.layers.0...` as in the checkpoint."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class WeightGenerator(nn.Module):
    """Band codes (C, W) -> patch kernel weights (C, k*k*D) and bias (D,)."""

    def __init__(self, dim: int, kernel_numel: int, embed_dim: int, heads: int = 4, hidden: int = 2048) -> None:
        super().__init__()
        self.transformer_encoder = _Layers([PostNormLayer(dim, heads, hidden)])
        self.fc_weight = nn.Linear(dim, kernel_numel)
        self.fc_bias = nn.Linear(dim, embed_dim)
        self.weight_tokens = nn.Parameter(torch.zeros(WEIGHT_TOKENS, dim))
        self.bias_token = nn.Parameter(torch.zeros(1, dim))

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq = torch.cat([self.weight_tokens, codes, self.bias_token], dim=0)[None]  # one sequence
        for layer in self.transformer_encoder.layers:
            seq = layer(seq)
        out = seq[0]
        weights = self.fc_weight(out[WEIGHT_TOKENS:-1] + codes)  # per band, residual on its code
        return weights, self.fc_bias(out[-1])


class DynamicPatchEmbed(nn.Module):
    """Wavelength-conditioned patch embedding (DOFA's `patch_embed`)."""

    def __init__(self, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.embed_dim, self.patch_size = embed_dim, patch_size
        self.weight_generator = WeightGenerator(WAVE_DIM, patch_size * patch_size * embed_dim, embed_dim)
        self.fclayer = ResidualMlp(WAVE_DIM)

    def kernel(self, wavelengths_um: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (D, C, k, k) convolution kernel and (D,) bias for these bands."""
        codes = self.fclayer(wavelength_code(wavelengths_um))
        weights, bias = self.weight_generator(codes)
        k, c = self.patch_size, codes.shape[0]
        kernel = weights.reshape(c, k, k, self.embed_dim).permute(3, 0, 1, 2)
        return kernel * KERNEL_SCALE, bias * KERNEL_SCALE

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
