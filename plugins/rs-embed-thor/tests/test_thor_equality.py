"""THOR encoder == the authors' `ThorViTEncoder` on one shared random state dict (fp32, max |Δ| <= 1e-5).

The authors' package `thor` is published on GitHub only (FM4CS/THOR; PyPI's `thor` is an unrelated project),
so it is not a test dependency and this module is skipped unless it is importable, e.g. after
`pip install "thor @ git+https://github.com/FM4CS/THOR@v1.0.2" timm einops`. Where it runs, the reference
is built with the configuration of the authors' TerraTorch extension (every channel and group, ground cover
2880 m, patch 8 or 16, alibi, pooled cls, subsetmean), loads the same state dict strictly (so its key set
is this encoder's), and gets the bands at their native GSD exactly as the extension's wrapper resamples them.
"""

from __future__ import annotations

import pytest
import torch

from rs_embed_core.nn import alibi_slopes, sincos_1d
from rs_embed_core.testing import random_state

import rs_embed_thor as rt
import rs_embed_thor_model as rtm

thor_vit = pytest.importorskip("thor.models.thor_vit", reason="the authors' THOR package is not installed")
from thor.core.model_registry import MODELS  # noqa: E402
from thor.models.patch_timm import enable_alibi_for_timm  # noqa: E402

TOL = 1e-5


def _reference(size: str, patch: int) -> torch.nn.Module:
    channels = {c: {"GSD": rt.GSD_M[c], "patch_size": rt.KERNEL_PATCH,
                    **({"patch_embed_name": rt.KERNEL[c]} if rt.KERNEL[c] != c else {})} for c in rt.GSD_M}
    params = {"ground_covers": [2880], "aggr_type": "subsetmean", "use_superposition_encoding": False,
              "use_fuzzy_encoding": False, "encoder_pos_type": "alibi", "cls_token_type": "pooled",
              "use_flexivit": False, "flexivit_ref_patch_size": rt.REF_PATCH, "flexivit_patch_size_seqs": [patch],
              "flexivit_ref_grid_size": 14, "select_patch_strategy": "min",
              "groups": [list(g) for g in rt.GROUPS], "channels": channels}
    enable_alibi_for_timm()
    return MODELS.get_model(f"thor_vit_{size}_encoder_alibi_patch_size_embed_v1")(params).eval()


@pytest.mark.parametrize("size, bands, patch", [
    ("tiny", rt.DEFAULT_BANDS, 8),
    ("tiny", rt.DEFAULT_BANDS, 16),
    ("tiny", ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"), 8),
    ("tiny", ("B4", "B8", "VV", "VH"), 8),
    ("base", rt.DEFAULT_BANDS, 8),
])
def test_encoder_equals_the_authors(size, bands, patch):
    params = rt.THOR.card.variant(size).params
    ours = rtm.ThorEncoder(params).eval()
    sd = random_state({k: v.shape for k, v in ours.state_dict().items()}, seed=5)
    sd["encoder_slopes"] = torch.tensor(alibi_slopes(params["heads"]))
    sd.update({f"band_embed.group{g}": sincos_1d(params["group_embed_dim"], 10)[g] for g in range(10)})
    ours.load_state_dict(sd, strict=True)
    ref = _reference(size, patch)
    ref.load_state_dict(sd, strict=True)
    optical, sar = tuple(b for b in bands if b.startswith("B")), tuple(b for b in bands if not b.startswith("B"))
    sensors = tuple(rt.SensorSpec(c, bs, 10) for c, bs in ((rt.S2_L2A, optical), (rt.S1_GRD, sar)) if bs)
    chans = rt.channels_for(sensors, bands)
    x = torch.randn(2, len(bands), 288, 288, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        pooled, grid, layout = ours.embed(x, chans, patch)
        native = ours.resample(x, chans)
        ref_tokens = ref.forward_intermediates(native, indices=[-1], intermediates_only=True)[0]
        ref_pooled = ref.norm(ref(native).mean(dim=1))
    ref_grid = rtm.merge_group_grids(ref_tokens, layout)
    dp, dg = (pooled - ref_pooled).abs().max().item(), (grid - ref_grid).abs().max().item()
    assert dp <= TOL and dg <= TOL, (dp, dg)
