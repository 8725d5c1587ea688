"""OlmoEarth's encoder from the authors' package, with weights loaded through rs-embed's pinned path.

Imported only when a model is loaded (keeps `rs-embed models` free of torch and of the package).
The network is `olmoearth_pretrain_minimal.OlmoEarthPretrain_v1(model_size, model_version)` — the
class constructor, which needs no Hub access — of which only `.model.encoder` is kept; its weights
come from `rs_embed_core.weights.load_state_dict` (pinned commit, sha256, safe loading) and
`strict_load`, never from the package's `load_model_from_id` (which fetches config.json from the
Hub even without weights and unpickles with a plain `torch.load`).

What this module adds around their encoder (the rest is theirs, called as their README does):
the (B, T, C, H, W) -> (B, H, W, T, C) layout, the token mask (MaskValue.MISSING where a frame has
no valid pixel in a patch; see rs_embed_olmoearth.token_missing), the (day, month - 1, year)
timestamps, the real pixel size as `input_res`, and masked mean pooling of the visible tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import WeightsError
from rs_embed_core.weights import load_state_dict, strict_load

MODALITY = "sentinel2_l2a"
# Checkpoint parts the encoder does not use: the decoder, the EMA target encoder, training-only heads
# (the package's loader filters the last two prefixes too), and a legacy fixed time table some
# checkpoints carry (CompositeEncodings drops it on load with a pre-hook; named here instead).
DROP = ("decoder", "target_encoder", "supervision_head", "location_token_distillation_head",
        "composite_encodings.pos_embed")


def new_encoder(params: dict[str, Any]) -> nn.Module:
    """The encoder of `OlmoEarthPretrain_v1(model_size, model_version)`, random weights, eval mode."""
    from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1

    full = OlmoEarthPretrain_v1(model_size=params["model_size"], model_version=params["model_version"])
    encoder = full.model.encoder
    del full  # decoder and target encoder are freed here
    return encoder.eval()


class OlmoEarthEncoder(nn.Module):
    """Their encoder plus what rs-embed adds: layout, masks, timestamps, GSD and pooling."""

    def __init__(self, encoder: nn.Module, patch_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.patch_size = int(patch_size)
        self.band_sets = int(encoder.patch_embeddings.tokenization_config.get_num_bandsets(MODALITY))

    def tokens(self, x: torch.Tensor, missing: torch.Tensor, timestamps: torch.Tensor, input_res: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C, H, W) normalised, missing (B, T, h, w) bool, timestamps (B, T, 3) long
        -> tokens (B, h, w, T, band_sets, D) after the encoder's final norm, visible (B, h, w, T, band_sets)."""
        from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import MaskedOlmoEarthSample, MaskValue

        p = self.patch_size
        pixel = missing.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)  # (B, T, H, W)
        mask = torch.where(pixel, MaskValue.MISSING.value, MaskValue.ONLINE_ENCODER.value).to(torch.long)
        mask = mask.permute(0, 2, 3, 1)[..., None].expand(-1, -1, -1, -1, self.band_sets)
        sample = MaskedOlmoEarthSample(
            timestamps=timestamps,
            sentinel2_l2a=x.permute(0, 3, 4, 1, 2),  # (B, H, W, T, C), channels in the modality's band order
            sentinel2_l2a_mask=mask,
        )
        # fast_pass only when nothing is masked: the package then skips masking altogether
        out = self.encoder(sample, patch_size=p, input_res=input_res, fast_pass=not bool(missing.any()))
        tm = out["tokens_and_masks"]
        return getattr(tm, MODALITY), getattr(tm, f"{MODALITY}_mask") == MaskValue.ONLINE_ENCODER.value

    def forward(self, x: torch.Tensor, missing: torch.Tensor, timestamps: torch.Tensor, input_res: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> pooled (B, D): mean of all visible tokens; grid (B, D, h, w): per cell, mean over visible
        frames and band sets.

        Items with masked tokens are encoded one per call: in eval mode the package drops masked
        tokens and pads shorter sequences with zero tokens *without* an attention mask, so batching
        items with different numbers of visible tokens would change their results.
        """
        masked = missing.flatten(1).any(dim=1)
        pooled: list[torch.Tensor | None] = [None] * x.shape[0]
        grid: list[torch.Tensor | None] = [None] * x.shape[0]
        groups = [[i] for i in torch.nonzero(masked).flatten().tolist()]
        clear = torch.nonzero(~masked).flatten().tolist()
        if clear:
            groups.append(clear)
        for idx in groups:
            tok, vis = self.tokens(x[idx], missing[idx], timestamps[idx], input_res)
            w = vis.to(tok.dtype)[..., None]
            cell = (tok * w).sum(dim=(3, 4)) / w.sum(dim=(3, 4)).clamp_min(1.0)
            whole = (tok * w).sum(dim=(1, 2, 3, 4)) / w.sum(dim=(1, 2, 3, 4)).clamp_min(1.0)
            for k, i in enumerate(idx):
                pooled[i], grid[i] = whole[k], cell[k].permute(2, 0, 1)
        return torch.stack(pooled), torch.stack(grid)  # type: ignore[arg-type]


def build(variant: Variant, device: str = "cpu") -> OlmoEarthEncoder:
    """The encoder of `variant`, weights loaded strictly from its pinned checkpoint, in eval mode."""
    if variant.weights is None:
        raise WeightsError(f"OlmoEarth variant {variant.name!r} has no weights spec")
    sd = load_state_dict(variant.weights)  # a missing file is reported before any model work
    encoder = new_encoder(variant.params)
    strict_load(encoder, sd, strip_prefix="encoder.", drop=DROP)
    del sd
    return OlmoEarthEncoder(encoder, variant.params["patch_size"]).to(device).eval()

