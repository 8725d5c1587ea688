"""TerraFM encoder == the authors' `TerraFM` module on one shared random state dict (fp32, max |Δ| <= 1e-5).

The authors' code is a single file, `terrafm.py` (github.com/mbzuai-oryx/TerraFM, also on the Hub repository
MBZUAI/TerraFM); it is no package, so it is not a test dependency and is not copied here. Point
RS_EMBED_TERRAFM_REFERENCE at a copy of that file to run this module; without it the module is skipped.
The reference loads the same state dict strictly (so its key set is this encoder's). Its patch embedding
picks the L2A convolution only when called with `is_l2a=True` (its `forward` never passes it), so the
reference side runs its blocks by hand from `patch_embed(x, is_l2a=...)`, exactly as its `prepare_tokens`.
"""

from __future__ import annotations

import importlib.util
import os
from functools import partial

import pytest
import torch

from rs_embed_core.testing import random_state

import rs_embed_terrafm as rt
import rs_embed_terrafm_model as rtm

TOL = 1e-5
_PATH = os.environ.get("RS_EMBED_TERRAFM_REFERENCE")
if not _PATH or not os.path.isfile(_PATH):
    pytest.skip("RS_EMBED_TERRAFM_REFERENCE does not name a copy of the authors' terrafm.py", allow_module_level=True)


def _authors():
    spec = importlib.util.spec_from_file_location("terrafm_reference", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


REF = _authors()
SMALL = {"embed_dim": 64, "depth": 2, "heads": 4, "mlp_ratio": 4.0, "patch_size": 16, "image_size": 224}


def _reference(params) -> torch.nn.Module:
    if params.get("size") == "base":
        return REF.terrafm_base().eval()
    return REF.TerraFM(embed_dim=params["embed_dim"], depth=params["depth"], num_heads=params["heads"],
                       mlp_ratio=4, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)).eval()


def _reference_embed(ref, x, modality):
    """The authors' prepare_tokens / blocks / norm, with the patch embedding told the modality."""
    tokens = ref.patch_embed(x, is_l2a=modality == "s2_l2a")
    tokens = torch.cat([ref.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
    tokens = tokens + ref.interpolate_pos_encoding(tokens, x.shape[-1], x.shape[-2])
    for block in ref.blocks:
        tokens = block(tokens)
    normed = ref.norm(tokens)
    h, w = x.shape[-2] // 16, x.shape[-1] // 16
    return normed[:, 0], normed[:, 1:].reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("params", [SMALL, rt.TerraFM.card.variant("base").params], ids=["small", "base"])
def test_encoder_equals_the_authors(params):
    ours = rtm.TerraFMEncoder(params).eval()
    sd = random_state({k: v.shape for k, v in ours.state_dict().items()}, seed=3)
    ours.load_state_dict(sd, strict=True)
    ref = _reference(params)
    ref.load_state_dict(sd, strict=True)
    for modality, chans in (("s2_l1c", 12), ("s2_l2a", 12), ("s1", 2)):
        x = torch.rand(2, chans, 224, 224, generator=torch.Generator().manual_seed(7))
        with torch.inference_mode():
            pooled, grid = ours.embed(x, modality)
            want_pooled, want_grid = _reference_embed(ref, x, modality)
            if modality != "s2_l2a":  # the authors' own entry points (they route 12 channels to L1C)
                assert torch.equal(ref(x), want_pooled)
                assert torch.equal(ref.extract_feature(x, out_indices=[params["depth"] - 1])[-1], want_grid)
        d_pooled = (pooled - want_pooled).abs().max().item()
        d_grid = (grid - want_grid).abs().max().item()
        print(f"{params.get('size', 'small')} {modality}: max|d| pooled {d_pooled:.2e}, grid {d_grid:.2e}")
        assert d_pooled <= TOL and d_grid <= TOL, (modality, d_pooled, d_grid)
