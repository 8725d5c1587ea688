"""Copernicus-FM's encoder in torch (spectral mode), with the parameter names of torchgeo's checkpoint.

Imported only when a model is loaded (keeps `rs-embed models` torch-free). Layout, as torchgeo 0.8.1
`CopernicusFM` and the authors' `model_vit.CopernicusFMViT` build it (read there, written here):

- `patch_embed_spectral`: each band's (centre wavelength, bandwidth) in nm -> Fourier codes over
  periods 100 nm..1e9 nm and 1 nm..1e9 nm (128-d each, summed) -> residual MLP (`fclayer`) ->
  DOFA's kernel generator -> a (D, C, 16, 16) kernel and a (D,) bias, both x 0.01. The convolution
  has stride 16 and padding 1 (DOFA's choice: 224 px still give 14 x 14 tokens, each window one
  pixel up-left of its cell).
- a class token and the fixed sin-cos table `pos_embed`, plus three metadata codes added to every
  token: location (Fourier codes of lon + 180 and lat + 90, periods 1e-4..720 degrees, D/2 each),
  patch area (km^2, periods 1e-3..5.1e8) and time (days since 1970-01-01, periods 1..365.25), each
  through its own Linear (`coord_fc`, `scale_fc`, `time_fc`); an unknown value takes the learned
  `coord_token` / `scale_token` / `time_token` through the same Linear instead.
- timm-named pre-norm ViT blocks (rs_embed_core.nn.TimmBlock).
- no trained final norm in the checkpoint: pooled = LayerNorm without affine of the mean patch
  token (the authors' `fc_norm` at its initial identity affine, as their benchmark and torchgeo
  use it); grid = the patch tokens after the last block.

The checkpoint's variable-mode hypernetwork (`patch_embed_variable.*`: language-embedding input for
non-spectral variables) is not built; `DROP` removes it by name.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import TimmBlock, tokens_to_grid
from rs_embed_core.nn.fourier import fourier_features, in_fourier_range
from rs_embed_core.nn.hypernet import KernelGenerator, ResidualMlp, generated_kernel
from rs_embed_core.weights import load_state_dict, strict_load

DROP = ("patch_embed_variable",)  # spectral mode only: the language-input hypernetwork is unused

CODE_DIM = 128  # width of the band codes and of the kernel generator (`hyper_dim`)
KERNEL_SCALE = 0.01  # generated kernels and biases are scaled by this (`scaler`)
# Fourier period ranges (torchgeo 0.8.1 copernicusfm.py == the authors' model_vit.py / dynamic_hypernetwork.py)
WAVELENGTH_RANGE_NM = (100.0, 1e9)
BANDWIDTH_RANGE_NM = (1.0, 1e9)
COORD_RANGE_DEG = (1e-4, 720.0)
AREA_RANGE_KM2 = (1e-3, 5.1e8)
TIME_RANGE_DAYS = (1.0, 365.25)  # no range check in the original: more than a year of days is intended


class SpectralPatchEmbed(nn.Module):
    """(wavelength, bandwidth)-conditioned patch embedding (`patch_embed_spectral`)."""

    def __init__(self, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.embed_dim, self.patch_size = embed_dim, patch_size
        self.weight_generator = KernelGenerator(CODE_DIM, patch_size * patch_size * embed_dim, embed_dim)
        self.fclayer = ResidualMlp(CODE_DIM)

    def kernel(self, wavelengths_nm: torch.Tensor, bandwidths_nm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (D, C, k, k) kernel and (D,) bias for bands with these centre wavelengths and bandwidths."""
        codes = (fourier_features(wavelengths_nm, *WAVELENGTH_RANGE_NM, CODE_DIM)
                 + fourier_features(bandwidths_nm, *BANDWIDTH_RANGE_NM, CODE_DIM))
        weights, bias = self.weight_generator(self.fclayer(codes))
        return generated_kernel(weights, bias, self.patch_size, self.embed_dim, KERNEL_SCALE)

    def forward(self, x: torch.Tensor, wavelengths_nm: torch.Tensor,
                bandwidths_nm: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        kernel, bias = self.kernel(wavelengths_nm, bandwidths_nm)
        y = F.conv2d(x, kernel.to(x.dtype), bias.to(x.dtype), stride=self.patch_size, padding=1)
        return y.flatten(2).transpose(1, 2), (y.shape[-2], y.shape[-1])


def check_spectral(wavelengths_nm: torch.Tensor, bandwidths_nm: torch.Tensor) -> None:
    """Refuse band descriptions outside the ranges the Fourier codes were built for (before any compute)."""
    for name, v, rng in (("wavelength", wavelengths_nm, WAVELENGTH_RANGE_NM),
                         ("bandwidth", bandwidths_nm, BANDWIDTH_RANGE_NM)):
        if v.ndim != 1 or not torch.isfinite(v).all() or not in_fourier_range(v, *rng):
            raise SpecError(f"Copernicus-FM needs one finite band {name} per band in [{rng[0]:g}, {rng[1]:g}] nm, "
                            f"got {v.tolist()}")


class CopernicusFM(nn.Module):
    """Spectral-mode encoder; keys equal torchgeo's checkpoint's minus `patch_embed_variable.*`."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        dim, patch = int(cfg["embed_dim"]), int(cfg["patch_size"])
        n = int(cfg["image_size"]) // patch
        self.dim, self.image_size, self.grid_hw = dim, int(cfg["image_size"]), (n, n)
        self.eps = float(cfg["norm_eps"])
        self.patch_embed_spectral = SpectralPatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n * n + 1, dim), requires_grad=False)
        self.coord_fc = nn.Linear(dim, dim)
        self.scale_fc = nn.Linear(dim, dim)
        self.time_fc = nn.Linear(dim, dim)
        self.coord_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.scale_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.time_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            TimmBlock(dim, int(cfg["heads"]), float(cfg["mlp_ratio"]), norm_eps=self.eps)
            for _ in range(int(cfg["depth"]))
        )

    @staticmethod
    def _meta_code(code: torch.Tensor, known: torch.Tensor, token: torch.Tensor, fc: nn.Linear) -> torch.Tensor:
        """(B, D) codes -> (B, 1, D): fc(code) where the value is known, fc(learned token) where not."""
        return torch.where(known[:, None, None], fc(code[:, None]), fc(token))

    def metadata_embedding(self, meta: torch.Tensor) -> torch.Tensor:
        """(B, 4) [lon deg, lat deg, days since 1970-01-01, patch area km^2], NaN = unknown -> (B, 1, D).

        Per item: the original decides known/unknown for the whole batch (one NaN anywhere switches
        every item to the learned token); here each item uses its own values, so a batch equals its
        items embedded alone.
        """
        meta = meta.to(torch.float32)
        lon, lat, days, area = meta.unbind(dim=1)
        has_loc = ~(lon.isnan() | lat.isnan())
        half = self.dim // 2
        loc = torch.cat([fourier_features(torch.nan_to_num(lon) + 180.0, *COORD_RANGE_DEG, half),
                         fourier_features(torch.nan_to_num(lat) + 90.0, *COORD_RANGE_DEG, half)], dim=-1)
        if loc.shape[-1] < self.dim:  # odd half-widths: the original pads with zeros
            loc = F.pad(loc, (0, self.dim - loc.shape[-1]))
        loc = loc.to(self.cls_token.dtype)
        out = self._meta_code(loc, has_loc, self.coord_token, self.coord_fc)
        area_code = fourier_features(torch.nan_to_num(area), *AREA_RANGE_KM2, self.dim).to(self.cls_token.dtype)
        out = out + self._meta_code(area_code, ~area.isnan(), self.scale_token, self.scale_fc)
        time_code = fourier_features(torch.nan_to_num(days), *TIME_RANGE_DAYS, self.dim).to(self.cls_token.dtype)
        return out + self._meta_code(time_code, ~days.isnan(), self.time_token, self.time_fc)

    def tokens(self, x: torch.Tensor, wavelengths_nm: torch.Tensor, bandwidths_nm: torch.Tensor,
               meta: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, 224, 224) normalised bands, (C,) wavelengths and bandwidths in nm, (B, 4) metadata
        -> patch tokens (B, h*w, D) after the last block, and (h, w)."""
        s = self.image_size
        if x.ndim != 4 or tuple(x.shape[-2:]) != (s, s):
            raise SpecError(f"Copernicus-FM takes (B, C, {s}, {s}) inputs, got {tuple(x.shape)}")
        if wavelengths_nm.shape != (x.shape[1],) or bandwidths_nm.shape != (x.shape[1],):
            raise SpecError(f"Copernicus-FM needs one wavelength and one bandwidth per band: {x.shape[1]} bands, "
                            f"{tuple(wavelengths_nm.shape)} wavelengths, {tuple(bandwidths_nm.shape)} bandwidths")
        if meta.shape != (x.shape[0], 4):
            raise SpecError(f"Copernicus-FM metadata must be (B, 4) [lon, lat, days, area], got {tuple(meta.shape)}")
        check_spectral(wavelengths_nm, bandwidths_nm)
        h, hw = self.patch_embed_spectral(x, wavelengths_nm, bandwidths_nm)
        if hw != self.grid_hw:
            raise SpecError(f"Copernicus-FM position table covers {self.grid_hw} tokens, the input gave {hw}")
        pos = self.pos_embed.to(h.dtype) + self.metadata_embedding(meta).to(h.dtype)  # (B, 1 + h*w, D)
        h = torch.cat([self.cls_token.to(h.dtype) + pos[:, :1], h + pos[:, 1:]], dim=1)
        for block in self.blocks:
            h = block(h)
        return h[:, 1:], hw

    def forward(self, x: torch.Tensor, wavelengths_nm: torch.Tensor, bandwidths_nm: torch.Tensor,
                meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> pooled (B, D) = LayerNorm (no affine) of the mean patch token; grid (B, D, 14, 14) patch tokens."""
        patches, hw = self.tokens(x, wavelengths_nm, bandwidths_nm, meta)
        pooled = F.layer_norm(patches.mean(dim=1), (self.dim,), eps=self.eps)
        return pooled, tokens_to_grid(patches, hw)


def build(variant: Variant, device: str = "cpu") -> CopernicusFM:
    """The encoder of `variant`, weights loaded strictly from its pinned checkpoint, in eval mode."""
    if variant.weights is None:
        raise WeightsError(f"Copernicus-FM variant {variant.name!r} has no weights spec")
    sd = load_state_dict(variant.weights)  # a missing or mismatched file is reported before any model work
    with torch.device("meta"):
        model = CopernicusFM(variant.params)
    strict_load(model, sd, drop=DROP, assign=True)
    return model.to(device).eval()
