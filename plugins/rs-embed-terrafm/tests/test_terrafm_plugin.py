"""TerraFM: card, band sets and modalities, request checks before any fetch, network layout and routing,
the Sentinel-1 scaling, strict loading, contract (batch == single), public API, grid georeferencing, export
beside another model.

No reference implementation installs here (the authors' code is a single git/Hub file; terratorch, torchgeo
and rshf do not carry TerraFM): test_terrafm_equality.py runs against a copy of it when one is given, and
these tests check the published facts instead: the checkpoint key layout and shapes, the modality routing,
the token order, the outputs' definitions.
"""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.card import Step, WeightsSpec
from rs_embed_core.embedder import BatchContext
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.grid import GridSpec, grid_for
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

import rs_embed_terrafm as rt
import rs_embed_terrafm_model as rtm

WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")
L2A = SensorSpec(rt.S2_L2A, rt.S2_BANDS, 10)
L1C = SensorSpec(rt.S2_L1C, rt.S2_BANDS, 10)
S1 = SensorSpec(rt.S1_GRD, rt.S1_BANDS, 10)
ROI = PointBuffer(121.5, 31.2, 1120)  # 224 px at 10 m: no resize
TINY_PARAMS = {**rt.TerraFM.card.variant("base").params, "embed_dim": 32, "depth": 1, "heads": 2, "size": "base"}
PLACEHOLDER = WeightsSpec(rt.HUB_REPO, "0" * 40, "TerraFM-B.pth", "0" * 64, "unknown")
TINY = rt.Variant("tiny", pooled_dim=32, grid_dim=32, weights=PLACEHOLDER, params=TINY_PARAMS)


class TinyTerraFM(rt.TerraFM):
    card = attrs.evolve(rt.TerraFM.card, id="terrafm_tiny_test", aliases=(), variants=(TINY,), default_variant="tiny")


@pytest.fixture
def tiny_registered():
    with registered(TinyTerraFM):
        yield TinyTerraFM


def _net(params=TINY_PARAMS, seed=0) -> rtm.TerraFMEncoder:
    torch.manual_seed(seed)
    net = rtm.TerraFMEncoder(params).eval()
    with torch.no_grad():  # random-looking: default inits leave LayerNorms at identity and codes at 0
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _x(chans=12, batch=2, seed=0) -> torch.Tensor:
    return torch.rand(batch, chans, 224, 224, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- card and band tables


def test_card_variants_default_input_and_no_pinned_weights():
    card = rt.TerraFM.card
    json.dumps(card.describe())
    assert card.id == "terrafm" and "terrafm_b" in card.aliases and card.default_variant == "base"
    dims = {v.name: (v.pooled_dim, v.params["depth"], v.params["heads"]) for v in card.variants}
    assert dims == {"base": (768, 12, 12), "large": (1024, 24, 16)}
    assert all(v.weights is None for v in card.variants)  # no public commit + sha256: weights= yours
    assert card.input.collection == rt.S2_L2A and card.input.bands == rt.S2_BANDS and card.input.image_size == 224
    assert [s.name for s in card.preprocessing] == ["scale", "clip", "fill_invalid", "resize"]
    assert card.preprocessing[-1].params == {"size": 224, "method": "bilinear", "antialias": False}
    assert "Danish" in card.citation and "weights=" in card.notes and "is_l2a" in card.notes


def test_module_hooks_register_the_embedder_and_the_sar_step():
    got: list = []
    rt.register_embedders(register=got.append)
    steps: dict = {}
    rt.register_preprocessors(register=steps.__setitem__)
    assert got == [rt.TerraFM] and steps == {"sar_log_scale": rt.sar_log_scale}


def test_each_collection_has_its_patch_embedding_and_band_list():
    assert rt.check_bands(rt.S2_L2A, rt.S2_BANDS) == "s2_l2a"
    assert rt.check_bands(rt.S2_L1C, rt.S2_BANDS) == "s2_l1c"
    assert rt.check_bands(rt.S1_GRD, ("VV", "VH")) == "s1"


@pytest.mark.parametrize("collection, bands, match", [
    (rt.S2_L1C, rt.S2_BANDS[:10] + ("B10",) + rt.S2_BANDS[10:], r"no channel for \['B10'\]"),  # L1C's 13 bands
    (rt.S2_L2A, ("B4", "B3", "B2"), r"missing"),
    (rt.S2_L2A, tuple(reversed(rt.S2_BANDS)), "order differs"),
    (rt.S2_L2A, rt.S2_BANDS[:-1] + ("SCL",), r"no channel for \['SCL'\]"),
    (rt.S1_GRD, ("VH", "VV"), "order differs"),
    (rt.S1_GRD, ("VV", "VH", "angle"), r"no channel for \['angle'\]"),
    ("LANDSAT/LC08/C02/T1_L2", ("SR_B4",), "no patch embedding for collection"),
])
def test_band_sets_the_model_cannot_take_are_refused(collection, bands, match):
    with pytest.raises(SpecError, match=match):
        rt.check_bands(collection, bands)


# ----------------------------------------------------------------------------- refused before any fetch


@pytest.mark.parametrize("kw, match", [
    (dict(sensor=SensorSpec(rt.S2_L1C, rt.S2_BANDS + ("B10",), 10)), "B10"),
    (dict(sensor=SensorSpec(rt.S2_L2A, ("B4", "B3", "B2"), 10)), "takes exactly"),
    (dict(sensor=SensorSpec(rt.S1_GRD, ("VV",), 10)), r"\['VH'\] missing"),
    (dict(sensor=(L2A, S1)), "one modality per request"),
    (dict(preprocessing=[("scale", {"factor": 1e-4}), ("resize", {"size": 256})]), "224 x 224"),
])
def test_bad_requests_fail_before_any_fetch(tiny_registered, kw, match):
    from rs_embed import get_embedding

    provider = FakeProvider(bands=rt.S2_BANDS + ("B10", "VV", "VH"))
    with pytest.raises(SpecError, match=match):
        get_embedding("terrafm_tiny_test", ROI, WHEN, backend=provider, **kw)
    assert provider.calls == 0


def test_no_weights_is_a_weights_error_before_any_fetch_naming_the_file():
    from rs_embed import get_embedding

    provider = FakeProvider(bands=rt.S2_BANDS)
    with registered(rt.TerraFM), pytest.raises(WeightsError) as err:
        get_embedding("terrafm", ROI, WHEN, backend=provider, variant="large")
    assert provider.calls == 0
    assert "MBZUAI/TerraFM" in str(err.value) and "TerraFM-L.pth" in str(err.value) and "weights=" in str(err.value)


# ----------------------------------------------------------------------------- preprocessing


def _raster(data, bands, valid=None) -> Raster:
    t, _, h, w = data.shape
    valid = np.ones((t, h, w), bool) if valid is None else valid
    return Raster(data, bands, GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, w, h), (None,) * t, valid)


def test_sentinel2_chain_is_reflectance_clipped_against_numpy():
    dn = np.random.default_rng(0).uniform(-500, 12000, (1, 12, 224, 224)).astype(np.float32)
    valid = np.ones((1, 224, 224), bool)
    valid[0, 3:9, 10:40] = False
    out = apply_chain(_raster(dn, rt.S2_BANDS, valid), rt.TerraFM.card.preprocessing)
    want = np.where(valid[0], np.clip(dn[0] * np.float32(1e-4), 0, 1), 0.0)
    np.testing.assert_allclose(out.data[0], want, atol=1e-7)
    assert rt.TerraFM.default_chain(L1C) == rt.TerraFM.card.preprocessing


def test_sentinel1_chain_is_log1p_power_over_its_99th_percentile():
    chain = rt.TerraFM.default_chain(S1)
    assert [s.name for s in chain] == ["sar_log_scale", "fill_invalid", "resize"]
    db = np.random.default_rng(1).uniform(-30, 5, (1, 2, 224, 224)).astype(np.float32)
    valid = np.ones((1, 224, 224), bool)
    valid[0, :5] = False
    db_masked = np.where(valid[:, None], db, 40.0)  # invalid pixels must not move the percentile
    out = apply_chain(_raster(db_masked, rt.S1_BANDS, valid), chain)
    y = np.log1p(10.0 ** (db.astype(np.float64) / 10))
    want = np.clip(y / np.percentile(y[:, :, 5:], 99), 0, 1)
    np.testing.assert_allclose(out.data[0], np.where(valid[0], want[0], 0.0), atol=1e-6)
    assert abs(float((want[0][:, 5:] >= 1).mean()) - 0.01) < 2e-3  # the top 1 % saturates
    linear = rt.sar_log_scale(_raster(np.full((1, 2, 4, 4), 0.5, np.float32), rt.S1_BANDS), from_db=False)
    np.testing.assert_allclose(linear.data, 1.0)
    with pytest.raises(SpecError, match="percentile"):
        rt.sar_log_scale(_raster(db, rt.S1_BANDS), percentile=0)


# ----------------------------------------------------------------------------- the network


def test_full_size_key_layout_and_shapes():
    for size, dim, wide, blocks in (("base", 768, 2304, 12), ("large", 1024, 3072, 24)):
        with torch.device("meta"):
            sd = rtm.TerraFMEncoder(rt.TerraFM.card.variant(size).params).state_dict()
        shapes = {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("blocks.")}
        assert shapes == {
            "cls_token": (1, 1, dim), "pos_embed": (1, 197, dim),
            "patch_embed.conv2d_s2_l2a.weight": (wide, 12, 16, 16), "patch_embed.conv2d_s2_l2a.bias": (wide,),
            "patch_embed.conv2d_s2_l1c.weight": (wide, 12, 16, 16), "patch_embed.conv2d_s2_l1c.bias": (wide,),
            "patch_embed.conv2d_s1.weight": (wide, 2, 16, 16), "patch_embed.conv2d_s1.bias": (wide,),
            "patch_embed.s2_l2a_embed": (1, wide), "patch_embed.s2_l1c_embed": (1, wide),
            "patch_embed.s1_embed": (1, wide),
            "patch_embed.projection.proj1.weight": (wide, wide),  # no bias
            "patch_embed.projection.norm_input.weight": (wide,), "patch_embed.projection.norm_input.bias": (wide,),
            "patch_embed.projection.proj2.weight": (wide, wide), "patch_embed.projection.proj2.bias": (wide,),
            "patch_embed.projection.proj3.weight": (dim, wide), "patch_embed.projection.proj3.bias": (dim,),
            "norm.weight": (dim,), "norm.bias": (dim,),
        }
        assert len(sd) == len(shapes) + 12 * blocks
        assert sd[f"blocks.{blocks - 1}.attn.qkv.bias"].shape == (3 * dim,)
        assert sd[f"blocks.{blocks - 1}.mlp.fc1.weight"].shape == (4 * dim, dim)


def test_layer_norm_epsilons_are_the_authors():
    net = rtm.TerraFMEncoder(TINY_PARAMS)
    assert net.patch_embed.projection.norm_input.eps == 1e-5  # nn.LayerNorm's default in the projection
    assert net.norm.eps == 1e-6 and net.blocks[0].norm1.eps == 1e-6


def test_tokens_before_the_blocks_are_the_modality_conv_code_projection_plus_position():
    net = _net(params={**TINY_PARAMS, "depth": 0})
    pe = net.patch_embed
    for modality, chans in (("s2_l2a", 12), ("s2_l1c", 12), ("s1", 2)):
        x = _x(chans)
        conv = getattr(pe, f"conv2d_{modality}")
        with torch.inference_mode():
            tokens, hw = net.tokens(x, modality)
            patches = conv(x)[0] + getattr(pe, f"{modality}_embed")
            want = net.norm(torch.cat([net.cls_token.expand(2, -1, -1), pe.projection(patches)], 1) + net.pos_embed)
        assert hw == (14, 14)
        torch.testing.assert_close(tokens, want, atol=1e-5, rtol=1e-5)


def test_each_modality_runs_through_its_own_convolution_only():
    net = _net()
    x = _x()
    with torch.inference_mode():
        l2a, l1c = net.embed(x, "s2_l2a")[0], net.embed(x, "s2_l1c")[0]
        s1 = net.embed(_x(2), "s1")[0]
        net.patch_embed.conv2d_s2_l1c.weight.add_(1.0)
        net.patch_embed.s1_embed.add_(1.0)
        assert torch.equal(net.embed(x, "s2_l2a")[0], l2a)  # L2A untouched by the L1C and S1 parameters
        assert not torch.allclose(net.embed(x, "s2_l1c")[0], l1c)
        assert not torch.allclose(net.embed(_x(2), "s1")[0], s1)
    assert not torch.allclose(l2a, l1c)
    with pytest.raises(SpecError, match="expected"):
        net.embed(_x(2), "s2_l2a")
    with pytest.raises(SpecError, match="no modality"):
        net.embed(x, "s3")
    with pytest.raises(SpecError, match="224"):
        net.embed(torch.zeros(1, 12, 256, 256), "s2_l2a")


def test_pooled_is_the_normed_class_token_and_grid_the_normed_patch_tokens():
    net = _net()
    x = _x()
    with torch.inference_mode():
        pooled, grid = net.embed(x, "s2_l2a")
        tokens = torch.cat([net.cls_token.expand(2, -1, -1), net.patch_embed(x, "s2_l2a")[0]], 1) + net.pos_embed
        for block in net.blocks:
            tokens = block(tokens)
        normed = net.norm(tokens)
    assert pooled.shape == (2, 32) and grid.shape == (2, 32, 14, 14)
    torch.testing.assert_close(pooled, normed[:, 0])
    torch.testing.assert_close(grid[:, :, 2, 5], normed[:, 1 + 2 * 14 + 5])  # row-major


def test_grid_is_in_spatial_order_north_up():
    """Without blocks, a change inside one 16 px patch moves exactly that grid cell."""
    net = _net(params={**TINY_PARAMS, "depth": 0})
    x = _x()
    y = x.clone()
    y[:, :, 16 * 3:16 * 4, 16 * 11:16 * 12] += 1.0  # row 3 (from the north), column 11
    with torch.inference_mode():
        g0, g1 = net.embed(x, "s2_l2a")[1], net.embed(y, "s2_l2a")[1]
    changed = (g1 - g0).abs().amax(dim=(0, 1)) > 1e-6
    assert changed.nonzero().tolist() == [[3, 11]]


def test_forward_refuses_several_frames_and_a_foreign_band_list():
    emb = TinyTerraFM(TINY)
    grid = GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, 224, 224)
    ctx = BatchContext(grids=(grid,), centers_lonlat=((121.5, 31.2),), times=((None, None),), temporal=WHEN,
                       sensor=L2A, want="grid", band_names=rt.S2_BANDS)
    with pytest.raises(SpecError, match="one frame"):
        emb.forward(torch.zeros(1, 2, 12, 224, 224), ctx)
    ctx1 = attrs.evolve(ctx, times=((None,),), band_names=rt.S2_BANDS[::-1])
    with pytest.raises(SpecError, match="order differs"):
        emb.forward(torch.zeros(1, 1, 12, 224, 224), ctx1)


# ----------------------------------------------------------------------------- loading and the public API


def test_strict_loading_of_a_plain_state_dict(tmp_path):
    report = check_strict_loading(TinyTerraFM, "tiny", tmp_path)
    assert {"fitting file loads", "extra key refused", "missing key refused", "wrong shape refused"} <= set(
        report.checks)
    assert report.keys == len(rtm.TerraFMEncoder(TINY_PARAMS).state_dict())


def test_embedder_contract_on_random_weights(tiny_registered, tmp_path):
    with random_weights("terrafm_tiny_test", "tiny", tmp_path, seed=0):
        report = check_embedder_contract("terrafm_tiny_test", variant="tiny",
                                         provider=FakeProvider(bands=rt.S2_BANDS))
    assert report.pooled_dim == 32 and all(s == (32, 14, 14) for s in report.grid_shapes)
    assert "batch == single (grid)" in report.checks


@pytest.mark.parametrize("sensor", [L2A, L1C], ids=["l2a", "l1c"])
def test_public_api_is_the_network_on_the_chain_output_georeferenced(tiny_registered, tmp_path, sensor):
    from rs_embed import get_embedding
    from rs_embed_core.runner import load_embedder

    provider = FakeProvider(bands=rt.S2_BANDS)
    roi = PointBuffer(121.5, 31.2, 1600)  # 320 px at 10 m -> resized to 224
    with random_weights("terrafm_tiny_test", "tiny", tmp_path, seed=1):
        emb = get_embedding("terrafm_tiny_test", roi, WHEN, OutputSpec.grid(), backend=provider, device="cpu",
                            sensor=sensor)
        net = load_embedder(TinyTerraFM, TinyTerraFM.card.variant("tiny"), "cpu").model
    raster = provider.fetch(FetchRequest(grid_for(roi, 10.0), WHEN, sensor))
    pre = apply_chain(raster, rt.TerraFM.card.preprocessing)
    modality = rt.MODALITY[sensor.collection]
    with torch.inference_mode():
        want = net.embed(torch.from_numpy(pre.data), modality)[1][0].numpy()
    np.testing.assert_allclose(emb.data, want, rtol=1e-5, atol=1e-5)
    assert emb.meta["model_extra"]["modality"] == modality
    src = grid_for(roi, 10.0)  # the 14 x 14 cells tile the fetched footprint exactly, north-west first
    assert emb.grid.shape == (14, 14) and emb.grid.crs == src.crs
    assert (emb.grid.x0, emb.grid.y0) == (src.x0, src.y0)
    assert emb.grid.res * 14 == pytest.approx(src.res * src.width)


def test_sentinel1_request_runs_through_the_sar_embedding(tiny_registered, tmp_path):
    from rs_embed import get_embedding

    with random_weights("terrafm_tiny_test", "tiny", tmp_path, seed=2):
        emb = get_embedding("terrafm_tiny_test", ROI, WHEN, backend=FakeProvider(bands=rt.S1_BANDS), sensor=S1,
                            device="cpu")
    assert emb.data.shape == (32,) and np.isfinite(emb.data).all()
    assert emb.meta["preprocessing"][0]["name"] == "sar_log_scale"
    assert emb.meta["model_extra"]["modality"] == "s1"


def test_export_with_another_model_equals_get_embeddings_batch(tiny_registered, tmp_path):
    rs_embed_baseline = pytest.importorskip("rs_embed_baseline")
    from rs_embed import export_batch, get_embeddings_batch, load_export

    rois = [ROI, PointBuffer(121.52, 31.21, 1120)]
    with registered(rs_embed_baseline.Mosaiks), random_weights("terrafm_tiny_test", "tiny", tmp_path / "w", seed=3):
        res = export_batch(rois, WHEN, ["terrafm_tiny_test", "mosaiks"], tmp_path / "out",
                           backend=FakeProvider(bands=rt.S2_BANDS), device="cpu")
        ref = get_embeddings_batch("terrafm_tiny_test", rois, WHEN, backend=FakeProvider(bands=rt.S2_BANDS),
                                   device="cpu")
    assert (res.ok, res.failed) == (4, 0)
    got = load_export(tmp_path / "out").embeddings
    np.testing.assert_allclose(got["terrafm_tiny_test"], np.stack([e.data for e in ref]), rtol=1e-5, atol=1e-6)
    assert got["mosaiks"].shape[0] == 2


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_terrafm, rs_embed; assert 'terrafm' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_describe_names_the_model_by_its_alias():
    from rs_embed_core.registry import embedder_class

    with registered(rt.TerraFM):
        assert embedder_class("terrafm_b") is rt.TerraFM


def test_tiled_large_roi_stitches_the_tile_grids(tiny_registered, tmp_path):
    from rs_embed import get_embedding

    with random_weights("terrafm_tiny_test", "tiny", tmp_path, seed=5):
        emb = get_embedding("terrafm_tiny_test", PointBuffer(121.5, 31.2, 2240), WHEN, OutputSpec.grid(),
                            backend=FakeProvider(bands=rt.S2_BANDS), device="cpu", input_prep="tile")
    assert emb.data.shape == (32, 28, 28) and np.isfinite(emb.data).all()  # 2 x 2 tiles of 224 px
    assert emb.grid.shape == (28, 28) and emb.grid.res == pytest.approx(160.0)  # 16 px x 10 m per cell
