"""Equality with the authors' `single_file_galileo.Encoder`, where that file is at hand (fp32, <= 1e-5).

No installable reference exists (see docs/models/galileo.md): the authors publish no package
(the index's `galileo` is an unrelated client library), rshf has no Galileo, terratorch's Galileo
backbone imports a `galileo` package installed from a git repository, and torchgeo >= 0.9 needs
Python 3.12. So this test runs only when RS_EMBED_GALILEO_REFERENCE names a checkout of
github.com/nasaharvest/galileo (single_file_galileo.py; needs einops) and is skipped otherwise.
With the checkout it also compares on the authors' real nano weights (data/models/nano/encoder.pt).

Inputs go through the authors' own path: a 13-channel space-time array with per-pixel group masks,
the 16 / 6 / 18-channel space, time and static arrays with everything but location masked, then
`average_tokens` (pooled) and `apply_mask_and_average_tokens_per_patch` (grid).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from rs_embed_core.nn.geo_time import lonlat_to_xyz
from rs_embed_core.testing import perturbed_state_dict

import rs_embed_galileo as rg
import rs_embed_galileo_model as rgm

REF_DIR = os.environ.get("RS_EMBED_GALILEO_REFERENCE")
if not REF_DIR or not (Path(REF_DIR) / "single_file_galileo.py").is_file():
    pytest.skip("RS_EMBED_GALILEO_REFERENCE does not name a nasaharvest/galileo checkout", allow_module_level=True)
pytest.importorskip("einops")

TOL = 1e-5
ALL_GROUPS = tuple(g for g, _ in rg.SPACE_TIME_GROUPS)
S2_GROUPS = ALL_GROUPS[1:]


def _reference_module():
    spec = importlib.util.spec_from_file_location("single_file_galileo", Path(REF_DIR) / "single_file_galileo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["single_file_galileo"] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


sfg = _reference_module()


def _pair(params: dict, sd: dict | None = None, seed: int = 0):
    ref = sfg.Encoder(max_patch_size=params["max_patch_size"], embedding_size=params["embedding_size"],
                      depth=params["depth"], mlp_ratio=params["mlp_ratio"], num_heads=params["num_heads"],
                      max_sequence_length=params["max_sequence_length"]).eval()
    if sd is None:
        sd = perturbed_state_dict(ref, seed, keep=lambda k: k in ("pos_embed", "month_embed.weight"),
                                  override=lambda k, v, g: 0.02 * torch.randn(v.shape, generator=g)
                                  if k.endswith("channel_embed") else None)
    ref.load_state_dict(sd, strict=True)
    net = rgm.Galileo(params).eval()
    net.load_state_dict(sd, strict=True)
    return net, ref


def _compare(net, ref, *, b=2, t=3, hw=32, groups=S2_GROUPS, patch=8, res=10.0, location=True):
    gen = torch.Generator().manual_seed(11)
    s_t_x = torch.randn(b, hw, hw, t, len(rg.SPACE_TIME_BANDS), generator=gen)
    h = hw // patch
    visible = torch.ones(b, t, h, h, dtype=torch.bool)
    visible[0, t // 2, 0, 1] = False
    visible[1, 0, :, 0] = False
    visible[1, t - 1, 1, 1] = False
    pixel_masked = (~visible).repeat_interleave(patch, 2).repeat_interleave(patch, 3).permute(0, 2, 3, 1).float()
    s_t_m = torch.ones(b, hw, hw, t, len(rg.SPACE_TIME_GROUPS))
    for i, (g, _) in enumerate(rg.SPACE_TIME_GROUPS):
        if g in groups:
            s_t_m[..., i] = pixel_masked
    months = torch.tensor([[0, 5, 11], [3, 4, 7]])[:b, :t]
    xyz = lonlat_to_xyz(torch.tensor([11.6, -70.6], dtype=torch.float64),
                        torch.tensor([48.1, -33.4], dtype=torch.float64)).float()[:b]
    st_x, st_m = torch.zeros(b, 18), torch.ones(b, 4)
    if location:
        st_x[:, 1:4], st_m[:, 1] = xyz, 0.0  # STATIC_BANDS: LandScan, x, y, z, ...
    with torch.inference_mode():
        out = ref(s_t_x, torch.zeros(b, hw, hw, 16), torch.zeros(b, t, 6), st_x, s_t_m, torch.ones(b, hw, hw, 3),
                  torch.ones(b, t, 3), st_m, months, patch_size=patch, input_resolution_m=res)
        pooled_ref = ref.average_tokens(*out[:8])
        grid_ref = ref.apply_mask_and_average_tokens_per_patch(*out[:8])  # (B, h*w, D), row-major
        pixels = {g: s_t_x[..., [rg.SPACE_TIME_BANDS.index(x) for x in dict(rg.SPACE_TIME_GROUPS)[g]]]
                  .permute(0, 3, 4, 1, 2) for g in groups}
        pooled, grid = net(pixels, visible, months, xyz if location else None, patch,
                           torch.full((b,), res, dtype=torch.float64))
    grid = grid.flatten(2).transpose(1, 2)
    return (pooled - pooled_ref).abs().max().item(), (grid - grid_ref).abs().max().item()


@pytest.mark.parametrize("size", ["nano", "tiny"])
@pytest.mark.parametrize("case", [
    {},
    {"groups": ALL_GROUPS, "t": 2, "patch": 4, "res": 20.0},  # S1 + S2, FlexiViT patch 4
    {"groups": ("S2_RGB",), "hw": 64, "location": False},
    {"groups": ("S1",), "t": 1, "patch": 2, "hw": 8},
])
def test_equals_the_authors_encoder_on_shared_random_weights(size, case):
    net, ref = _pair(dict(rg.Galileo.card.variant(size).params), seed=1)
    dp, dg = _compare(net, ref, **case)
    assert dp <= TOL and dg <= TOL, (size, case, dp, dg)


def test_equals_the_authors_encoder_on_their_nano_weights():
    path = Path(REF_DIR) / "data" / "models" / "nano" / "encoder.pt"
    if not path.is_file():
        pytest.skip("no data/models/nano/encoder.pt in the checkout")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    net, ref = _pair(dict(rg.Galileo.card.variant("nano").params), sd=sd)
    for case in ({}, {"groups": ALL_GROUPS, "t": 2, "patch": 4}):
        dp, dg = _compare(net, ref, **case)
        assert dp <= TOL and dg <= TOL, (case, dp, dg)
