"""A plain ViT encoder with timm's parameter names, for MAE-family checkpoints.

timm's `VisionTransformer` (and the MAE code bases built on it: SatMAE, SatMAE++, Scale-MAE, DOFA,
SSL4EO...) saves an encoder as `patch_embed.proj.*`, `cls_token`, `pos_embed`, `blocks.{i}.*`
(`rs_embed_core.nn.TimmBlock` names) and `norm.*`. A model built from `TimmViT` loads such a state
dict strictly, key for key, and computes what timm computes with `global_pool=""` and no head:
patch tokens + position table (class token prepended), the blocks, the final LayerNorm. No MAE
masking: tokens stay in row-major spatial order.

The position table is a parameter when the checkpoint stores it (MAE saves its fixed sin-cos table)
and can be replaced per call, e.g. by a table computed from the input's ground sampling distance
(Scale-MAE).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SpecError
from .patch_embed import PatchEmbed
from .timm_block import TimmBlock


class ViTPatchEmbed(nn.Module):
    """Holds the patch convolution as `proj`, so its keys read `patch_embed.proj.weight/bias` as in timm."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, bias: bool = True) -> None:
        super().__init__()
        self.proj = PatchEmbed(in_chans, dim, patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        return self.proj(x)


class TimmViT(nn.Module):
    """Pre-norm ViT encoder: patch embed -> [cls] + pos -> blocks -> norm.

    `image_size` fixes the token grid the stored position table covers; inputs of another size are
    refused (rather than silently interpolating the table). `pos_embed=False` builds no table: the
    caller passes one to `forward` on every call.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        *,
        in_chans: int = 3,
        patch_size: int = 16,
        image_size: int = 224,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        class_token: bool = True,
        pos_embed: bool = True,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise SpecError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
        n = image_size // patch_size
        self.dim, self.image_size, self.grid_hw = int(dim), int(image_size), (n, n)
        self.num_prefix_tokens = 1 if class_token else 0
        self.patch_embed = ViTPatchEmbed(in_chans, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, self.num_prefix_tokens + n * n, dim)) if pos_embed else None
        )
        self.blocks = nn.ModuleList(
            TimmBlock(dim, heads, mlp_ratio, norm_eps=norm_eps, qkv_bias=qkv_bias) for _ in range(depth)
        )
        self.norm: nn.Module = nn.LayerNorm(dim, eps=norm_eps) if final_norm else nn.Identity()

    def _check_input(self, x: torch.Tensor) -> None:
        s = self.image_size
        if x.ndim != 4 or tuple(x.shape[-2:]) != (s, s):
            raise SpecError(f"this ViT takes (B, C, {s}, {s}) inputs, got shape {tuple(x.shape)}")

    def forward(
        self, x: torch.Tensor, pos_embed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, H, W) -> all tokens (B, prefix + h*w, D) after the final norm, and the grid (h, w).

        `pos_embed` ((1 or B), prefix + h*w, D) replaces the stored table for this call.
        """
        self._check_input(x)
        tokens, hw = self.patch_embed(x)
        pos = self.pos_embed if pos_embed is None else pos_embed
        want = (self.num_prefix_tokens + tokens.shape[1], self.dim)
        if pos is None or pos.ndim != 3 or tuple(pos.shape[1:]) != want or pos.shape[0] not in (1, x.shape[0]):
            got = None if pos is None else tuple(pos.shape)
            raise SpecError(f"position table must be (1 or {x.shape[0]}, {want[0]}, {want[1]}), got {got}")
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.to(tokens.dtype).expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + pos.to(tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens), hw
