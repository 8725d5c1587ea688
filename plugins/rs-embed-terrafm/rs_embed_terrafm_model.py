"""TerraFM's encoder in torch, with the parameter names of the authors' checkpoints (`terrafm.py` `TerraFM`).

Imported only when a model is loaded (keeps `rs-embed models` torch-free). Layout, as the authors' file
builds `terrafm_base` / `terrafm_large` (read there, written here):

- `patch_embed.conv2d_s2_l2a`, `patch_embed.conv2d_s2_l1c` (Conv2d(12, 3D, 16, 16)) and
  `patch_embed.conv2d_s1` (Conv2d(2, 3D, 16, 16)), each followed by adding its modality code
  `patch_embed.<modality>_embed` (1, 3D); then the shared `patch_embed.projection`: `proj1` (3D -> 3D, no
  bias), `norm_input` (LayerNorm, eps 1e-5), `proj2` (3D -> 3D), `proj3` (3D -> D).
- `cls_token` prepended, `pos_embed` (1, 1 + 14 * 14, D) added (224 px only: no interpolation here).
- timm-named pre-norm blocks (rs_embed_core.nn.TimmBlock, qkv bias, LayerNorm eps 1e-6), final `norm`.

Checkpoint: a plain state dict of exactly these keys (the authors' README loads TerraFM-B.pth straight into
their module; a public segmentation benchmark does so with strict=True); nothing is stripped or ignored.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import PatchEmbed, TimmBlock, prepend_tokens, split_prefix, tokens_to_grid
from rs_embed_core.weights import load_state_dict, strict_load

from rs_embed_terrafm import MODALITY, S1_BANDS, S2_BANDS

WIDEN = 3  # the patch convolutions' width is 3 x D (the authors: "from Panopticon design")
CHANNELS = {"s2_l2a": len(S2_BANDS), "s2_l1c": len(S2_BANDS), "s1": len(S1_BANDS)}


class TokenProjection(nn.Module):
    """proj1 (no bias) -> LayerNorm -> proj2 -> proj3: the modality-shared path from 3D to D."""

    def __init__(self, dim: int, wide: int) -> None:
        super().__init__()
        self.proj1 = nn.Linear(wide, wide, bias=False)
        self.norm_input = nn.LayerNorm(wide)
        self.proj2 = nn.Linear(wide, wide)
        self.proj3 = nn.Linear(wide, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj3(self.proj2(self.norm_input(self.proj1(x))))


class ModalityPatchEmbed(nn.Module):
    """One patch convolution and one learned code per modality, then the shared projection."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        wide = WIDEN * dim
        for modality, chans in CHANNELS.items():
            setattr(self, f"conv2d_{modality}", PatchEmbed(chans, wide, patch))
            setattr(self, f"{modality}_embed", nn.Parameter(torch.zeros(1, wide)))
        self.projection = TokenProjection(dim, wide)

    def forward(self, x: torch.Tensor, modality: str) -> tuple[torch.Tensor, tuple[int, int]]:
        if modality not in CHANNELS:
            raise SpecError(f"TerraFM has no modality {modality!r}; it has {sorted(CHANNELS)}")
        tokens, hw = getattr(self, f"conv2d_{modality}")(x)  # SpecError on a wrong channel count
        return self.projection(tokens + getattr(self, f"{modality}_embed")), hw


class TerraFMEncoder(nn.Module):
    """`TerraFM` (no head): modality patch embed -> [cls] + pos -> blocks -> norm."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        dim, patch, size = int(cfg["embed_dim"]), int(cfg["patch_size"]), int(cfg["image_size"])
        self.image_size, n = size, size // patch
        self.patch_embed = ModalityPatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n * n, dim))
        self.blocks = nn.ModuleList(
            TimmBlock(dim, int(cfg["heads"]), float(cfg["mlp_ratio"]), norm_eps=1e-6) for _ in range(int(cfg["depth"])))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def tokens(self, x: torch.Tensor, modality: str) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, 224, 224) -> the final-normed tokens (B, 1 + h * w, D), class token first, and (h, w)."""
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise SpecError(f"TerraFM takes (B, C, {self.image_size}, {self.image_size}); got {tuple(x.shape)}")
        tokens, hw = self.patch_embed(x, modality)
        tokens = prepend_tokens(tokens, self.cls_token[0]) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens), hw

    def embed(self, x: torch.Tensor, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """-> pooled (B, D): the class token; grid (B, D, 14, 14): the patch tokens, row-major."""
        tokens, hw = self.tokens(x, modality)
        cls, patches = split_prefix(tokens, 1)
        return cls[:, 0], tokens_to_grid(patches, hw)


def build(variant: Variant, device: str = "cpu") -> TerraFMEncoder:
    """The encoder of `variant`, weights loaded strictly from its file, in eval mode."""
    if variant.weights is None:
        raise WeightsError(f"TerraFM variant {variant.name!r} has no weights spec")
    sd = load_state_dict(variant.weights)  # a missing or mismatched file is reported first
    with torch.device("meta"):
        model = TerraFMEncoder(variant.params)
    strict_load(model, sd, assign=True)
    return model.to(device).eval()


assert set(CHANNELS) == set(MODALITY.values())  # one convolution per modality the card routes to
