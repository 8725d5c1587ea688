"""Clay v1.5's encoder in torch, with the parameter names of the authors' checkpoint.

Imported only when a model is loaded (keeps `rs-embed models` torch-free). Layout, as claymodel
1.5.0 `model.Encoder` builds it (read there, written here):

- `patch_embedding` (DOFA-style dynamic embedding): each band's centre wavelength (micrometres,
  as the authors' metadata.yaml lists them) -> 128-d sin-cos code (frequencies 1 .. 1e-4
  inclusive, float32) -> residual MLP with GELU (`fclayer.l1`, `l2`) -> the kernel generator
  (`weight_generator`: one post-norm transformer layer under `encoder.layers.0` over 128 weight
  tokens, the band codes and a bias token) -> per band a (D, 8, 8) slice; kernel x 0.02, bias
  unscaled; convolution with stride 8, no padding.
- added to every patch token: a GSD-scaled 2D sin-cos table (D - 8 channels) and the 8 metadata
  values [sin/cos ISO week, sin/cos hour, sin/cos lat, sin/cos lon]; the class token gets neither.
- a class token, then vit-pytorch pre-norm blocks (rs_embed_core.nn.VitPytorchTransformer) with a
  final LayerNorm. Masking is off (mask ratio 0, no shuffle): every patch token, in grid order.

pooled = the class token after the final norm (the authors' embedding); grid = the patch tokens.
The checkpoint (a Lightning file) holds the whole MAE: `model.encoder.*` is stripped to this
module's names; the decoder, the SAM teacher and the projection to it are dropped by name (`DROP`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import KernelGenerator, ResidualMlp, VitPytorchTransformer, tokens_to_grid
from rs_embed_core.nn.hypernet import generated_kernel
from rs_embed_core.nn.pos_embed import sincos_1d, sincos_2d_gsd
from rs_embed_core.weights import load_state_dict, strict_load

PREFIX = "model.encoder."  # the Lightning module's `model` (ClayMAE), its `encoder`
DROP = ("model.decoder", "model.teacher", "model.proj")  # MAE decoder, distillation teacher + projection

WAVE_DIM = 128  # width of the wavelength codes and of the kernel generator
LATENT_TOKENS = 128
KERNEL_SCALE = 0.02  # generated kernels (not biases) are scaled by this
META_DIM = 8  # [week sin/cos, hour sin/cos, lat sin/cos, lon sin/cos] take the last 8 channels


class WavelengthPatchEmbed(nn.Module):
    """Wavelength-conditioned patch embedding (`patch_embedding`), Clay's DynamicEmbedding."""

    def __init__(self, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.embed_dim, self.patch_size = embed_dim, patch_size
        self.weight_generator = KernelGenerator(WAVE_DIM, patch_size * patch_size * embed_dim, embed_dim,
                                                weight_tokens=LATENT_TOKENS, encoder_name="encoder")
        self.fclayer = ResidualMlp(WAVE_DIM, activation="gelu", names=("l1", "l2"))

    def kernel(self, wavelengths_um: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (D, C, k, k) kernel and (D,) bias for bands with these centre wavelengths."""
        codes = sincos_1d(WAVE_DIM, wavelengths_um.float(), endpoint=True, dtype=torch.float32)
        weights, bias = self.weight_generator(self.fclayer(codes.to(self.weight_generator.bias_token.dtype)))
        return generated_kernel(weights, bias, self.patch_size, self.embed_dim, KERNEL_SCALE, layout="dkk",
                                bias_scale=1.0)

    def forward(self, x: torch.Tensor, wavelengths_um: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        kernel, bias = self.kernel(wavelengths_um)
        y = F.conv2d(x, kernel.to(x.dtype), bias.to(x.dtype), stride=self.patch_size)
        return y.flatten(2).transpose(1, 2), (y.shape[-2], y.shape[-1])


class ClayEncoder(nn.Module):
    """Keys equal the checkpoint's `model.encoder.*` with that prefix removed."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        dim, self.patch_size = int(cfg["embed_dim"]), int(cfg["patch_size"])
        self.dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.patch_embedding = WavelengthPatchEmbed(dim, self.patch_size)
        self.transformer = VitPytorchTransformer(dim, int(cfg["depth"]), int(cfg["heads"]), int(cfg["dim_head"]),
                                                 int(dim * float(cfg["mlp_ratio"])))

    def tokens(self, x: torch.Tensor, wavelengths_um: torch.Tensor, gsd_m: torch.Tensor,
               meta: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, H, W) normalised bands, (C,) wavelengths in um, (B,) GSD in m, (B, 8) metadata codes
        -> all tokens after the final norm (B, 1 + h*w, D), class token first, and (h, w)."""
        if x.ndim != 4 or x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise SpecError(f"Clay takes (B, C, H, W) inputs with H, W multiples of {self.patch_size}, "
                            f"got {tuple(x.shape)}")
        b, c = x.shape[:2]
        if wavelengths_um.shape != (c,):
            raise SpecError(f"Clay needs one wavelength per band: {c} bands, {tuple(wavelengths_um.shape)} wavelengths")
        if gsd_m.shape != (b,) or meta.shape != (b, META_DIM):
            raise SpecError(f"Clay needs a GSD (B,) and metadata (B, {META_DIM}) per item, got "
                            f"{tuple(gsd_m.shape)} and {tuple(meta.shape)}")
        patches, (h, w) = self.patch_embedding(x, wavelengths_um)
        pos = sincos_2d_gsd(self.dim - META_DIM, h, w, gsd_m.to(torch.float32))
        codes = meta.to(torch.float32)[:, None, :].expand(b, h * w, META_DIM)
        patches = patches + torch.cat([pos, codes], dim=-1).to(patches.dtype)
        tokens = torch.cat([self.cls_token.to(patches.dtype).expand(b, -1, -1), patches], dim=1)
        return self.transformer(tokens), (h, w)

    def forward(self, x: torch.Tensor, wavelengths_um: torch.Tensor, gsd_m: torch.Tensor,
                meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> pooled (B, D) class token; grid (B, D, h, w) patch tokens, row-major from the top-left."""
        tokens, hw = self.tokens(x, wavelengths_um, gsd_m, meta)
        return tokens[:, 0], tokens_to_grid(tokens[:, 1:], hw)


def build(variant: Variant, device: str = "cpu") -> ClayEncoder:
    """The encoder of `variant`, weights loaded strictly from its pinned checkpoint, in eval mode."""
    if variant.weights is None:
        raise WeightsError(f"Clay variant {variant.name!r} has no weights spec")
    sd = load_state_dict(variant.weights)  # a missing or mismatched file is reported before any model work
    with torch.device("meta"):
        model = ClayEncoder(variant.params)
    strict_load(model, sd, drop=DROP, strip_prefix=PREFIX, assign=True)
    return model.to(device).eval()
