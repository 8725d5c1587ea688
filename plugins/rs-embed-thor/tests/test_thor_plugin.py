"""THOR: card, channel mapping, request checks before any fetch, network layout and invariants, the public
API, strict loading, contract (batch == single), export beside another model.

No reference implementation installs here (the authors' `thor` package is git-only), so the network is
checked against the published facts instead: the parameter counts of the four released sizes, the
checkpoint key layout, group token grids, ALiBi ground geometry, the FlexiViT equivalences (core tests),
and grid order.
"""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.card import Step, WeightsSpec
from rs_embed_core.embedder import BatchContext
from rs_embed_core.errors import SpecError, UnknownBandError, WeightsError
from rs_embed_core.grid import GridSpec, grid_for
from rs_embed_core.nn import sincos_1d
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.providers import FetchRequest
from rs_embed_core.raster import Raster
from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing import (
    FakeProvider,
    check_embedder_contract,
    check_strict_loading,
    random_weights,
    registered,
)

import rs_embed_thor as rt
import rs_embed_thor_model as rtm

WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")
S2 = SensorSpec(rt.S2_L2A, rt.DEFAULT_BANDS, 10)
S2_ALL = SensorSpec(rt.S2_L2A, ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"), 10)
S1 = SensorSpec(rt.S1_GRD, ("VV", "VH"), 10)
S2_BANDS = S2_ALL.bands
DEFAULT_CHANNELS = tuple(rt._S2_TO_THOR[b] for b in rt.DEFAULT_BANDS)
TINY_PARAMS = {**rt._params("tiny", 8), "embed_dim": 32, "depth": 1, "heads": 2, "group_embed_dim": 8}
PLACEHOLDER = WeightsSpec("FM4CS/THOR-1.0-tiny", "0" * 40, "thor_v1_vit_tiny.pt", "0" * 64, "apache-2.0")
TINY = rt.Variant("tiny", pooled_dim=32, grid_dim=32, weights=PLACEHOLDER, params=TINY_PARAMS)
TINY16 = attrs.evolve(TINY, name="tiny-p16", params={**TINY_PARAMS, "patch_size": 16})
PUBLISHED_PARAMS_M = {"tiny": 7.6, "small": 25.8, "base": 94.1, "large": 314.4}  # the released sizes


class TinyTHOR(rt.THOR):
    card = attrs.evolve(rt.THOR.card, id="thor_tiny_test", aliases=(), variants=(TINY, TINY16),
                        default_variant="tiny")


@pytest.fixture
def tiny_registered():
    with registered(TinyTHOR):
        yield TinyTHOR


def _net(params=TINY_PARAMS, seed=0) -> rtm.ThorEncoder:
    torch.manual_seed(seed)
    net = rtm.ThorEncoder(params).eval()
    with torch.no_grad():  # a random-looking encoder (default inits leave LayerNorms at identity)
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


# ----------------------------------------------------------------------------- card and channel table


def test_card_variants_default_and_base_pinned_by_commit():
    card = rt.THOR.card
    json.dumps(card.describe())
    assert card.default_variant == "base" and card.variant().params["patch_size"] == 8
    names = [v.name for v in card.variants]
    assert names == ["tiny", "tiny-p16", "small", "small-p16", "base", "base-p16", "large", "large-p16"]
    dims = {v.name: (v.pooled_dim, v.grid_dim, v.params["depth"], v.params["heads"]) for v in card.variants}
    assert dims["tiny"] == (192, 192, 12, 3) and dims["large-p16"] == (1024, 1024, 24, 16)
    pinned = {v.name: v.weights for v in card.variants if v.weights is not None}
    assert set(pinned) == {"base", "base-p16"}  # tiny, small, large: no known commit, weights= yours
    w = pinned["base"]
    assert w == pinned["base-p16"] and w.digest_from_revision and w.revision == rt.BASE_COMMIT
    assert (w.repo_id, w.filename, w.license) == ("FM4CS/THOR-1.0-base", "thor_v1_vit_base.pt", "apache-2.0")
    assert card.input.collection == "COPERNICUS/S2_SR_HARMONIZED" and card.input.image_size == 288
    assert [s.name for s in card.preprocessing] == ["scale", "normalize", "fill_invalid", "resize"]
    assert "Forgaard" in card.citation and "weights=" in card.notes


def test_module_hook_registers_the_embedder():
    got: list[type] = []
    rt.register_embedders(register=got.append)
    assert got == [rt.THOR]


@pytest.mark.parametrize("size", ["tiny", "small", "base", "large"])
def test_each_size_has_the_published_parameter_count(size):
    with torch.device("meta"):
        net = rtm.ThorEncoder(rt.THOR.card.variant(size).params)
    n = sum(t.numel() for t in net.state_dict().values())
    assert round(n / 1e6, 1) == PUBLISHED_PARAMS_M[size]


def test_channel_table_and_checkpoint_key_layout():
    assert len(rt.GROUPS) == 10 and len(rt.KERNEL_NAMES) == 46  # S2 12, S1 4 (IW/EW shared), S3 30
    assert rt.KERNEL["S1:EW-VV"] == rt.KERNEL["S1:IW-VV"] == "S1:VV"
    assert {rt.GSD_M[c] for c in rt.GROUPS[1]} == {20} and rt.GSD_M["S2:WaterVapor"] == 60
    with torch.device("meta"):
        sd = rtm.ThorEncoder(rt.THOR.card.variant("base").params).state_dict()
    assert sd["ind_patch_embed.patch_embed.S2:Red.weight"].shape == (768, 1, 16, 16)
    assert sd["ind_patch_embed.patch_embed.S3:S9_BT_in.bias"].shape == (768,)
    assert sd["encoder_slopes"].shape == (12,) and sd["band_embed.group9"].shape == (128,)
    assert sd["blocks.11.attn.qkv.weight"].shape == (2304, 768) and sd["norm.weight"].shape == (768,)
    assert not any(k.startswith(("pos_embed", "cls_token", "prod_embed")) for k in sd)  # alibi, pooled cls


def test_fixed_codes_at_construction_are_the_authors_sincos():
    net = rtm.ThorEncoder(rt.THOR.card.variant("tiny").params)
    assert torch.allclose(net.encoder_slopes, torch.tensor([2 ** -4, 2 ** -8, 2 ** -2]))
    assert torch.allclose(net.band_embed["group3"], sincos_1d(32, [3])[0])


def test_channels_from_each_bands_collection():
    assert rt.channels_for(S2, rt.DEFAULT_BANDS) == DEFAULT_CHANNELS
    assert rt.channels_for(S1, ("VH", "VV")) == ("S1:IW-VH", "S1:IW-VV")
    l1c = SensorSpec(rt.S2_L1C, ("B8A", "B9"), 10)
    assert rt.channels_for(l1c, ("B8A", "B9")) == ("S2:RE4", "S2:WaterVapor")
    assert rt.channels_for((S2, S1), ("B4", "VV")) == ("S2:Red", "S1:IW-VV")  # multi-sensor


@pytest.mark.parametrize("sensor, bands, err, match", [
    (SensorSpec(rt.S2_L1C, ("B4", "B10"), 10), ("B10",), SpecError, "cannot embed band 'B10'"),
    (SensorSpec(rt.S2_L2A, ("B4", "SCL"), 10), ("SCL",), SpecError, "cannot embed band 'SCL'"),
    (SensorSpec(rt.S1_GRD, ("VV", "angle"), 10), ("angle",), SpecError, "cannot embed band 'angle'"),
    (SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4",), 30), ("SR_B4",), SpecError, "no channels for collection"),
    (S2, ("B99",), UnknownBandError, "which sensor"),
    (S2, (), SpecError, "at least one band"),
])
def test_bands_thor_has_no_kernel_for_are_refused(sensor, bands, err, match):
    with pytest.raises(err, match=match):
        rt.channels_for(sensor, bands)


def test_a_channel_asked_twice_is_refused():
    other = SensorSpec(rt.S2_L1C, ("B4",), 10)
    with pytest.raises(SpecError, match="more than once"):
        rt.channels_for((SensorSpec(rt.S2_L2A, ("B3",), 10), other), ("B3", "B4", "B4"))


def test_geometry_check_per_group_gsd_and_patch():
    rt.check_geometry(DEFAULT_CHANNELS, 288, 288, 8)
    rt.check_geometry(DEFAULT_CHANNELS, 288, 288, 16)
    rt.check_geometry(("S2:Red",), 100, 100, 4)  # 10 m only: a multiple of the patch is enough
    with pytest.raises(SpecError, match="20 m bands"):
        rt.check_geometry(DEFAULT_CHANNELS, 280, 280, 8)  # 140 px at 20 m is not a multiple of 8
    with pytest.raises(SpecError, match="60 m bands"):
        rt.check_geometry(("S2:Red", "S2:CoastAerosal"), 288, 288, 32)  # 48 px at 60 m do not tile by 32
    with pytest.raises(SpecError, match="60 m bands"):
        rt.check_geometry(("S2:WaterVapor",), 100, 100, 2)


def test_default_chain_per_sensor_and_against_numpy():
    assert rt.THOR.default_chain(S2) == rt.THOR.card.preprocessing
    s1 = rt.THOR.default_chain(S1)
    assert [s.name for s in s1] == ["normalize", "fill_invalid", "resize"]
    assert s1[0].params == {"mean": [-12.9850, -20.6958], "std": [5.0062, 5.8688]}
    sub = rt.THOR.default_chain(SensorSpec(rt.S2_L2A, ("B8", "B1"), 10))
    assert sub[1].params["mean"] == [0.308133, 0.182569]
    rng = np.random.default_rng(0)
    dn = rng.uniform(0, 8000, (1, 10, 288, 288)).astype(np.float32)
    valid = np.ones((1, 288, 288), bool)
    valid[0, 5:9, 7:30] = False
    raster = Raster(dn, rt.DEFAULT_BANDS, GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, 288, 288), (None,), valid)
    out = apply_chain(raster, rt.THOR.card.preprocessing)
    mean = np.array([rt.STATS[c][0] for c in DEFAULT_CHANNELS], np.float32)[:, None, None]
    std = np.array([rt.STATS[c][1] for c in DEFAULT_CHANNELS], np.float32)[:, None, None]
    want = np.where(valid[0], (dn[0] * np.float32(1e-4) - mean) / std, 0.0)
    np.testing.assert_allclose(out.data[0], want, atol=1e-5)


# ----------------------------------------------------------------------------- refused before any fetch


@pytest.mark.parametrize("kw, match", [
    (dict(sensor=SensorSpec(rt.S2_L1C, ("B4", "B10"), 10)), "B10"),
    (dict(preprocessing=[("resize", {"size": 280})]), "multiple of 16"),
    (dict(variant="tiny-p16", preprocessing=[("resize", {"size": 160})], sensor=S2_ALL), "multiple of 96"),
    (dict(sensor=(S2, S1)), "normalises 10 channels but the request gives 12"),  # two sensors, default chain
])
def test_bad_requests_fail_before_any_fetch(tiny_registered, kw, match):
    from rs_embed import get_embedding

    provider = FakeProvider(bands=S2_BANDS + ("B10", "VV", "VH"))
    with pytest.raises(SpecError, match=match):
        get_embedding("thor_tiny_test", PointBuffer(121.5, 31.2, 1440), WHEN, backend=provider, **kw)
    assert provider.calls == 0
    TinyTHOR.check_request(TINY16, (S2_ALL,), (Step("resize", {"size": 288}),))  # 48 px at 60 m: 3 tokens


def test_no_weights_is_a_weights_error_before_any_fetch_naming_the_file():
    from rs_embed import get_embedding

    provider = FakeProvider(bands=S2_BANDS)
    with registered(rt.THOR), pytest.raises(WeightsError) as err:
        get_embedding("thor", PointBuffer(121.5, 31.2, 1440), WHEN, backend=provider, variant="small")
    assert provider.calls == 0
    assert "FM4CS/THOR-1.0-small" in str(err.value) and "thor_v1_vit_small.pt" in str(err.value)
    assert "weights=" in str(err.value)


# ----------------------------------------------------------------------------- the network


def _input(bands=rt.DEFAULT_BANDS, size=288, seed=0) -> torch.Tensor:
    return torch.randn(2, len(bands), size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bands, patch, layout", [
    (rt.DEFAULT_BANDS, 8, [(0, (36, 36)), (1, (18, 18))]),
    (S2_BANDS, 8, [(0, (36, 36)), (1, (18, 18)), (2, (6, 6))]),
    (rt.DEFAULT_BANDS, 16, [(0, (18, 18)), (1, (9, 9))]),
    (("B5", "B11"), 8, [(1, (18, 18))]),
])
def test_group_token_grids_and_outputs(bands, patch, layout):
    net = _net()
    chans = rt.channels_for(S2_ALL, bands)
    with torch.inference_mode():
        pooled, grid, got = net.embed(_input(bands), chans, patch)
    assert got == layout
    h, w = max((hw for _, hw in layout), key=lambda hw: hw[0])
    assert pooled.shape == (2, 32) and grid.shape == (2, 32, h, w)
    assert torch.isfinite(pooled).all() and torch.isfinite(grid).all()


def test_sentinel1_polarisations_make_the_sar_groups():
    net = _net()
    with torch.inference_mode():
        _, grid, layout = net.embed(_input(("VV", "VH", "HH", "HV")), ("S1:IW-VV", "S1:IW-VH", "S1:IW-HH",
                                                                       "S1:IW-HV"), 8)
        mixed = net.embed(torch.cat([_input(("B4",)), _input(("VV",), seed=1)], 1), ("S2:Red", "S1:IW-VV"), 8)[2]
    assert layout == [(3, (36, 36)), (4, (36, 36))] and grid.shape == (2, 32, 36, 36)
    assert mixed == [(0, (36, 36)), (3, (36, 36))]


def test_tokens_before_the_blocks_are_subset_mean_plus_footprint_and_group_codes():
    net = _net(params={**TINY_PARAMS, "depth": 0})
    x = _input(("B4", "B8", "B5"))
    bands = net.resample(x, ("S2:Red", "S2:NIR", "S2:RE1"))
    assert bands["S2:RE1"].shape == (2, 1, 144, 144)
    with torch.inference_mode():
        tokens, layout = net.tokens(bands, 8)
        conv = [net.ind_patch_embed.patch_embed[c](bands[c], 8)[0] for c in ("S2:Red", "S2:NIR", "S2:RE1")]
    assert layout == [(0, (36, 36)), (1, (18, 18))]
    code0 = torch.cat([sincos_1d(24, [2.0])[0], net.band_embed["group0"]])  # 8 px x 10 m / 40 m = 2
    code1 = torch.cat([sincos_1d(24, [4.0])[0], net.band_embed["group1"]])  # 8 px x 20 m / 40 m = 4
    assert torch.allclose(tokens[:, :1296], (conv[0] + conv[1]) / 2 + code0, atol=1e-5)
    assert torch.allclose(tokens[:, 1296:], conv[2] + code1, atol=1e-5)


def test_alibi_positions_are_patch_centres_on_the_ground_over_the_largest_footprint():
    pts = rtm.token_positions([(0, (36, 36)), (1, (18, 18))], 8)
    assert pts.shape == (1296 + 324, 2)
    # 10 m group: centre of token (i, j) at ((8 i + 4) x 10 m, (8 j + 4) x 10 m) over 8 px x 20 m = 160 m
    assert pts[0].tolist() == [0.25, 0.25] and pts[1].tolist() == [0.25, 0.75] and pts[36].tolist() == [0.75, 0.25]
    assert pts[1295].tolist() == [17.75, 17.75]
    assert pts[1296].tolist() == [0.5, 0.5] and pts[-1].tolist() == [17.5, 17.5]  # 20 m group: 160 m patches


def test_grid_is_in_spatial_order_north_up():
    """Without blocks, a change inside one 8 px patch of the 10 m bands moves exactly that grid cell."""
    net = _net(params={**TINY_PARAMS, "depth": 0})
    chans = ("S2:Red", "S2:Green", "S2:Blue", "S2:NIR")
    x = _input(("B4", "B3", "B2", "B8"))
    y = x.clone()
    y[:, :, 8 * 3:8 * 4, 8 * 30:8 * 31] += 1.0  # row 3 (from the north), column 30
    with torch.inference_mode():
        g0, g1 = net.embed(x, chans, 8)[1], net.embed(y, chans, 8)[1]
    changed = (g1 - g0).abs().amax(dim=(0, 1)) > 1e-6
    assert changed.nonzero().tolist() == [[3, 30]]


def test_coarser_groups_are_upsampled_and_averaged_into_the_grid():
    tokens = torch.randn(1, 16 + 4, 3)
    grid = rtm.merge_group_grids(tokens, [(0, (4, 4)), (1, (2, 2))])
    fine = tokens[:, :16].transpose(1, 2).reshape(1, 3, 4, 4)
    coarse = tokens[:, 16:].transpose(1, 2).reshape(1, 3, 2, 2)
    up = torch.nn.functional.interpolate(coarse, size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(grid, (fine + up) / 2)
    with pytest.raises(SpecError, match="covers"):
        rtm.merge_group_grids(torch.randn(1, 21, 3), [(0, (4, 4)), (1, (2, 2))])


def test_pooled_is_the_pretraining_feature():
    net = _net()
    x = _input()
    with torch.inference_mode():
        pooled, _, _ = net.embed(x, DEFAULT_CHANNELS, 8)
        tokens, _ = net.tokens(net.resample(x, DEFAULT_CHANNELS), 8)
        want = net.norm(net.norm(tokens).mean(dim=1))
    assert torch.allclose(pooled, want, atol=1e-6)


def test_forward_refuses_several_frames_and_bad_geometry():
    emb = TinyTHOR(TINY)
    grid = GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, 288, 288)
    ctx = BatchContext(grids=(grid,), centers_lonlat=((121.5, 31.2),), times=((None, None),), temporal=WHEN,
                       sensor=S2, want="grid", band_names=rt.DEFAULT_BANDS)
    with pytest.raises(SpecError, match="one frame"):
        emb.forward(torch.zeros(1, 2, 10, 288, 288), ctx)
    ctx1 = attrs.evolve(ctx, times=((None,),))
    with pytest.raises(SpecError, match="multiple of 16"):
        emb.forward(torch.zeros(1, 1, 10, 280, 280), ctx1)


# ----------------------------------------------------------------------------- loading and the public API


def test_strict_loading_with_the_authors_prefix_and_ignore_list(tmp_path):
    own = {k: tuple(v.shape) for k, v in rtm.ThorEncoder(TINY_PARAMS).state_dict().items()}
    file_side = {f"encoder.{k}": s for k, s in own.items()}
    file_side["encoder.decoder_pred.S2:Red.weight"] = (4, 32)  # the authors' ignore list: dropped
    file_side["encoder.pos_embed.10"] = (1296, 24)
    report = check_strict_loading(TinyTHOR, "tiny", tmp_path, state_dict=file_side)
    assert {"fitting file loads", "extra key refused", "missing key refused", "wrong shape refused"} <= set(
        report.checks)
    assert rtm.encoder_keys({"encoder.decode_land_cover.w": torch.zeros(1), "encoder.norm.bias": torch.zeros(1),
                             "ref_pos_embed.ref": torch.zeros(1), "blocks.0.x": torch.zeros(1)}).keys() == {
        "norm.bias", "blocks.0.x"}


def test_embedder_contract_on_random_weights(tiny_registered, tmp_path):
    with random_weights("thor_tiny_test", "tiny", tmp_path, seed=0):
        report = check_embedder_contract("thor_tiny_test", variant="tiny", provider=FakeProvider(bands=S2_BANDS))
    assert report.pooled_dim == 32 and report.grid_shapes == ((32, 36, 36), (32, 36, 36))
    assert "batch == single (grid)" in report.checks


def test_public_api_grid_is_the_network_on_the_chain_output(tiny_registered, tmp_path):
    from rs_embed import get_embedding
    from rs_embed_core.runner import load_embedder

    provider = FakeProvider(bands=S2_BANDS)
    roi = PointBuffer(121.5, 31.2, 10 * 100)  # 200 px at 10 m -> resized to 288
    with random_weights("thor_tiny_test", "tiny-p16", tmp_path, seed=1):
        emb = get_embedding("thor_tiny_test", roi, WHEN, OutputSpec.grid(), backend=provider, device="cpu",
                            variant="tiny-p16")
        net = load_embedder(TinyTHOR, TinyTHOR.card.variant("tiny-p16"), "cpu").model
    raster = provider.fetch(FetchRequest(grid_for(roi, 10.0), WHEN, S2))
    pre = apply_chain(raster, rt.THOR.card.preprocessing)
    with torch.inference_mode():
        want = net.embed(torch.from_numpy(pre.data), DEFAULT_CHANNELS, 16)[1][0].numpy()
    assert emb.data.shape == (32, 18, 18)
    np.testing.assert_allclose(emb.data, want, rtol=1e-5, atol=1e-5)
    assert emb.meta["model_extra"]["patch_size"] == 16
    assert emb.meta["model_extra"]["token_grids"] == {"group0": [18, 18], "group1": [9, 9]}


def test_sentinel1_request_runs_with_the_sar_statistics(tiny_registered, tmp_path):
    from rs_embed import get_embedding

    with random_weights("thor_tiny_test", "tiny", tmp_path, seed=2):
        emb = get_embedding("thor_tiny_test", PointBuffer(121.5, 31.2, 1440), WHEN, backend=FakeProvider(
            bands=("VV", "VH")), sensor=S1, device="cpu")
    assert emb.data.shape == (32,) and np.isfinite(emb.data).all()
    assert emb.meta["preprocessing"][0]["params"]["mean"] == [-12.9850, -20.6958]


def test_export_with_another_model_equals_get_embeddings_batch(tiny_registered, tmp_path):
    rs_embed_baseline = pytest.importorskip("rs_embed_baseline")
    from rs_embed import export_batch, get_embeddings_batch, load_export

    rois = [PointBuffer(121.5, 31.2, 1440), PointBuffer(121.52, 31.21, 1440)]
    with registered(rs_embed_baseline.Mosaiks), random_weights("thor_tiny_test", "tiny", tmp_path / "w", seed=3):
        res = export_batch(rois, WHEN, ["thor_tiny_test", "mosaiks"], tmp_path / "out",
                           backend=FakeProvider(bands=S2_BANDS), device="cpu")
        ref = get_embeddings_batch("thor_tiny_test", rois, WHEN, backend=FakeProvider(bands=S2_BANDS), device="cpu")
    assert (res.ok, res.failed) == (4, 0)
    got = load_export(tmp_path / "out").embeddings
    np.testing.assert_allclose(got["thor_tiny_test"], np.stack([e.data for e in ref]), rtol=1e-5, atol=1e-6)
    assert got["mosaiks"].shape[0] == 2


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_thor, rs_embed; assert 'thor' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_sentinel2_and_sentinel1_together_with_their_statistics(tiny_registered, tmp_path):
    from rs_embed import get_embedding

    chans = rt.channels_for((S2, S1), rt.DEFAULT_BANDS + ("VV", "VH"))
    chain = [("scale", {"factor": [1e-4] * 10 + [1.0, 1.0]}),
             ("normalize", {"mean": [rt.STATS[c][0] for c in chans], "std": [rt.STATS[c][1] for c in chans]}),
             ("fill_invalid", {"value": 0.0}), ("resize", {"size": 288})]
    with random_weights("thor_tiny_test", "tiny", tmp_path, seed=4):
        emb = get_embedding("thor_tiny_test", PointBuffer(121.5, 31.2, 1440), WHEN, OutputSpec.grid(),
                            backend=FakeProvider(bands=S2_BANDS + ("VV", "VH")), sensor=(S2, S1),
                            preprocessing=chain, device="cpu")
    assert emb.data.shape == (32, 36, 36)
    assert emb.meta["model_extra"]["token_grids"] == {"group0": [36, 36], "group1": [18, 18], "group3": [36, 36]}


def test_tiled_large_roi_stitches_the_group_merged_grids(tiny_registered, tmp_path):
    from rs_embed import get_embedding

    with random_weights("thor_tiny_test", "tiny", tmp_path, seed=5):
        emb = get_embedding("thor_tiny_test", PointBuffer(121.5, 31.2, 2880), WHEN, OutputSpec.grid(),
                            backend=FakeProvider(bands=S2_BANDS), device="cpu", input_prep="tile")
    assert emb.data.shape == (32, 72, 72) and np.isfinite(emb.data).all()  # 2 x 2 tiles of 288 px
    assert emb.grid.shape == (72, 72) and emb.grid.res == pytest.approx(80.0)  # 8 px x 10 m per cell
