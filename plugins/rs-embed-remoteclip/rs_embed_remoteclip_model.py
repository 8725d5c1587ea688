"""RemoteCLIP's network in torch: open_clip's CLIP layout and parameter names, so the published
checkpoints load strictly. Imported only when a model is loaded (keeps `rs-embed models` torch-free).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import PatchEmbed, Transformer, prepend_tokens, split_prefix, tokens_to_grid
from rs_embed_core.weights import load_state_dict, strict_load

# Checkpoint keys of the text side of an open_clip CLIP (the image side is everything under "visual").
TEXT_KEYS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection", "logit_scale")


class VisionTower(nn.Module):
    """open_clip's VisionTransformer with class-token pooling; keys equal the checkpoint's `visual.*`."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        width, n = int(cfg["width"]), int(cfg["image_size"]) // int(cfg["patch_size"])
        self.grid_hw = (n, n)
        scale = width ** -0.5
        self.conv1 = PatchEmbed(3, width, int(cfg["patch_size"]), bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(n * n + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, int(cfg["layers"]), int(cfg["heads"]), act=cfg["act"])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, int(cfg["embed_dim"])))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) normalised RGB -> pooled (B, embed_dim), grid (B, width, h, w)."""
        if self.conv1.grid_size(x.shape[-2], x.shape[-1]) != self.grid_hw:  # before any compute
            size = self.grid_hw[0] * self.conv1.patch_size
            raise SpecError(f"RemoteCLIP needs {size}x{size} inputs (a {self.grid_hw} token grid), got {tuple(x.shape[-2:])}")
        tokens, hw = self.conv1(x)
        h = prepend_tokens(tokens, self.class_embedding) + self.positional_embedding.to(tokens.dtype)
        h = self.ln_post(self.transformer(self.ln_pre(h)))
        cls, patches = split_prefix(h, 1)
        return cls[:, 0] @ self.proj, tokens_to_grid(patches, hw)


class CLIP(nn.Module):
    """open_clip's CLIP layout: image tower under `visual`, text tower at the root.

    Build only the towers you need (`vision`, `text`); `drop_keys` lists the checkpoint keys the
    missing tower owns, so `strict_load` still checks every key of the built ones.
    """

    def __init__(self, cfg: dict[str, Any], *, vision: bool = True, text: bool = True) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        self.has_vision, self.has_text = vision, text
        if vision:
            self.visual = VisionTower(cfg)
        if text:
            width, n = int(cfg["text_width"]), int(cfg["context_length"])
            self.token_embedding = nn.Embedding(int(cfg["vocab_size"]), width)
            self.positional_embedding = nn.Parameter(0.01 * torch.randn(n, width))
            self.transformer = Transformer(width, int(cfg["text_layers"]), int(cfg["text_heads"]), act=cfg["act"])
            self.ln_final = nn.LayerNorm(width)
            self.text_projection = nn.Parameter(width ** -0.5 * torch.randn(width, int(cfg["embed_dim"])))
            self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    @property
    def drop_keys(self) -> tuple[str, ...]:
        return (() if self.has_vision else ("visual",)) + (() if self.has_text else TEXT_KEYS)

    def encode_image(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.visual(x)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, context_length) token ids -> (B, embed_dim), read at each sequence's end token."""
        h = self.token_embedding(ids) + self.positional_embedding
        n = h.shape[1]
        causal = torch.full((n, n), float("-inf"), device=h.device, dtype=h.dtype).triu(1)  # i sees 0..i
        h = self.ln_final(self.transformer(h, causal))
        eot = h[torch.arange(h.shape[0], device=h.device), ids.argmax(dim=-1)]  # end token has the largest id
        return eot @ self.text_projection


def build(variant: Variant, device: str = "cpu", *, vision: bool = True, text: bool = True) -> CLIP:
    """The towers of `variant`, weights loaded strictly from its pinned checkpoint, in eval mode."""
    if variant.weights is None:
        raise WeightsError(f"RemoteCLIP variant {variant.name!r} has no weights spec")
    sd = load_state_dict(variant.weights)  # errors about missing files come before any model work
    with torch.device("meta"):  # no random init: the (memory-mapped) file tensors become the parameters
        model = CLIP(variant.params, vision=vision, text=text)
    strict_load(model, sd, drop=model.drop_keys, assign=True)
    return model.to(device).eval()
