"""The SatVision-TOA card and chain, the MODIS L1B band table, request checks, strict loading, the contract,
and the full-size architecture against the published checkpoint's layout (on the meta device: no 12 GB)."""

from __future__ import annotations

import json
import re

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.card import WeightsSpec
from rs_embed_core.collections import known_collection
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.grid import GridSpec
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.raster import Raster
from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing import (
    FakeProvider,
    build_hf_cache,
    check_embedder_contract,
    check_strict_loading,
    fake_hub_lfs,
    file_sha256,
    offline_hub,
    random_state,
    random_weights,
    registered,
)
from rs_embed_core.weights import CACHE_ENV, pinned_digest

import rs_embed_satvision as rs
import rs_embed_satvision_model as rsm

PLACEHOLDER = WeightsSpec(rs.HUB_REPO, "0" * 40, rs.HUB_FILE, "0" * 64, "apache-2.0")
TINY_PARAMS = {**rs.GIANT, "embed_dim": 8, "depths": [1, 1, 2, 1], "heads": [1, 1, 2, 2], "norm_period": 2}
TINY = attrs.evolve(rs.VARIANTS[0], name="tiny", pooled_dim=64, grid_dim=64, weights=PLACEHOLDER, params=TINY_PARAMS)
# The published file: 5.31 GB (Hub file listing), bfloat16 tensors (its pickle imports BFloat16Storage).
PUBLISHED_BYTES = 5.31e9


class TinySatVision(rs.SatVision):
    card = attrs.evolve(rs.SatVision.card, id="satvision_tiny_test", aliases=(), variants=(TINY,),
                        default_variant="tiny")


def _raster(values: np.ndarray, h: int = 40, w: int = 40) -> Raster:
    data = np.broadcast_to(values.reshape(1, -1, 1, 1), (1, len(values), h, w)).astype(np.float32)
    grid = GridSpec("EPSG:32651", 350000.0, 3450000.0, 1000.0, w, h)
    return Raster(data, rs.BANDS, grid, (None,), np.ones((1, h, w), bool))


def test_card_describes_the_authors_input_and_its_default_weights():
    card = rs.SatVision.card
    json.dumps(card.describe())
    assert card.id == "satvision" and card.aliases == ("satvision_toa",)
    assert card.input.collection == "MODIS/061/MOD021KM" and card.input.gsd_m == 1000.0
    assert card.input.bands == ("1", "2", "3", "6", "7", "21", "26", "27", "28", "29", "30", "31", "32", "33")
    assert card.input.image_size == 128 and card.input.frames == 1
    assert card.variant().name == "giant"
    assert rs.HUB_COMMIT in card.notes and "sha256" in card.notes and "Apache-2.0" in card.license


def test_default_weights_are_pinned_to_the_commit_with_the_digest_left_to_the_hub():
    w = rs.SatVision.card.variant().weights
    assert w is rs.WEIGHTS and (w.repo_id, w.filename, w.license) == (rs.HUB_REPO, rs.HUB_FILE, "apache-2.0")
    assert re.fullmatch(r"[0-9a-f]{40}", w.revision) and w.revision == rs.HUB_COMMIT and w.digest_from_revision
    d = rs.SatVision.card.describe()["variants"][0]["weights"]
    assert d["sha256"] is None and w.revision in d["sha256_source"]


def test_band_table_holds_every_band_with_wavelengths():
    coll = known_collection(rs.COLLECTION)
    assert coll is not None and coll.reflectance_scale == 0.01
    for name in rs.BANDS:
        band = coll.band(name)
        assert band.gsd_m == 1000 and band.center_nm and band.bandwidth_nm
    # reflective bands are the short-wave ones, thermal the long-wave ones, as the scaling indexes them
    assert all(coll.band(rs.BANDS[i]).center_nm < 2500 for i in rs.REFLECTIVE)
    assert all(coll.band(rs.BANDS[i]).center_nm > 3500 for i in rs.EMISSIVE)


def test_chain_is_the_authors_scaling():
    """reflectance % -> x 0.01; brightness temperature -> (K - min) / (max - min)."""
    values = np.array([12.0, 30.0, 8.0, 20.0, 10.0, 300.0, 2.0, 240.0, 250.0, 280.0, 260.0, 290.0, 288.0, 250.0])
    out = apply_chain(_raster(values), rs.SatVision.card.preprocessing)
    assert out.shape == (1, 14, 128, 128) and out.bands == rs.BANDS
    expected = values.copy()
    expected[list(rs.REFLECTIVE)] *= 0.01
    lo, hi = np.array(rs.EMISSIVE_MIN), np.array(rs.EMISSIVE_MAX)
    expected[list(rs.EMISSIVE)] = (values[list(rs.EMISSIVE)] - lo) / (hi - lo)
    np.testing.assert_allclose(out.data[0, :, 64, 64], expected, rtol=1e-5, atol=1e-6)
    assert np.all((out.data[0, list(rs.EMISSIVE)] > 0) & (out.data[0, list(rs.EMISSIVE)] < 1))


def test_requests_that_do_not_fit_are_refused_before_any_fetch():
    var = attrs.evolve(rs.VARIANTS[0], weights=PLACEHOLDER)
    good = SensorSpec(rs.COLLECTION, rs.BANDS, 1000.0, composite="mosaic")
    rs.SatVision.check_request(var, (good,), rs.SatVision.card.preprocessing)
    reordered = SensorSpec(rs.COLLECTION, ("2", "1", *rs.BANDS[2:]), 1000.0)
    with pytest.raises(SpecError, match="in this order"):
        rs.SatVision.check_request(var, (reordered,), ())
    with pytest.raises(SpecError, match="frames=1"):
        rs.SatVision.check_request(var, (attrs.evolve(good, frames=3),), rs.SatVision.card.preprocessing)
    with pytest.raises(WeightsError, match="weights="):
        rs.SatVision.check_request(attrs.evolve(var, weights=None), (good,), rs.SatVision.card.preprocessing)


def test_default_weights_offline_and_unrecorded_fail_before_any_fetch(tmp_path, monkeypatch):
    from rs_embed import get_embedding

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    provider = FakeProvider(bands=rs.BANDS)
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        get_embedding("satvision_toa", spatial=PointBuffer(121.5, 31.2, 64000), backend=provider,
                      temporal=TemporalSpec.range("2022-07-01", "2022-07-02"), output=OutputSpec.pooled(), device="cpu")
    assert rs.HUB_REPO in str(err.value) and rs.HUB_COMMIT in str(err.value) and "weights=" in str(err.value)
    assert provider.calls == 0


def test_default_weights_verified_against_the_commits_lfs_digest_then_offline(tmp_path, monkeypatch):
    """The published DeepSpeed layout ("module": encoder.* + mask token + decoder, beside DeepSpeed's own
    entries) at the pinned commit, through the default spec on a small config: the first load reads the LFS
    sha256 from the (faked) Hub metadata, a later offline load uses the recorded digest, changed bytes are refused."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    small = attrs.evolve(TINY, weights=rs.WEIGHTS)
    net = rsm.SatVisionSwinV2(TINY_PARAMS)
    sd = {f"encoder.{k}": v for k, v in random_state({k: v.shape for k, v in net.state_dict().items()}, 3).items()}
    sd |= {"encoder.mask_token": torch.zeros(1, 1, 8), "decoder.0.weight": torch.zeros(16 * 14, 64, 1, 1),
           "encoder.layers.0.blocks.0.attn.relative_position_index": torch.zeros(64, 64, dtype=torch.long)}
    w = rs.WEIGHTS
    path = tmp_path / "wd" / w.repo_id.replace("/", "__") / w.filename
    path.parent.mkdir(parents=True)
    torch.save({"module": sd, "ds_version": "0.14.0", "global_steps": 1}, path)
    monkeypatch.setenv("RS_EMBED_WEIGHTS_DIR", str(tmp_path / "wd"))
    with fake_hub_lfs({(w.repo_id, w.revision, w.filename): file_sha256(path)}) as calls:
        loaded = rsm.build(small, "cpu")
    assert calls == [(w.repo_id, w.revision, w.filename)] and pinned_digest(w) == file_sha256(path)
    build_hf_cache(tmp_path / "hub", w.repo_id, w.revision, {w.filename: path})
    with offline_hub(tmp_path / "hub"):  # no Hub, no weights folder: the Hub cache copy, the recorded digest
        again = rsm.build(small, "cpu")
    for k, v in again.state_dict().items():
        assert torch.equal(v, sd[f"encoder.{k}"]) and torch.equal(loaded.state_dict()[k], v)
    torch.save({"module": {**sd, "encoder.norm.weight": torch.ones(64)}}, tmp_path / "changed.pt")
    build_hf_cache(tmp_path / "hub2", w.repo_id, w.revision, {w.filename: tmp_path / "changed.pt"})
    with offline_hub(tmp_path / "hub2"), pytest.raises(WeightsError, match="sha256 mismatch"):
        rsm.build(small, "cpu")


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    report = check_strict_loading(TinySatVision, "tiny", tmp_path)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)


@pytest.fixture
def tiny_model(tmp_path):
    with registered(TinySatVision):
        with random_weights(TinySatVision, "tiny", tmp_path, seed=2):
            yield TinySatVision


def test_embedder_contract_through_the_public_api(tiny_model):
    report = check_embedder_contract(tiny_model, provider=FakeProvider(bands=rs.BANDS),
                                     spatials=[PointBuffer(121.5, 31.2, 64000), PointBuffer(-60.0, -3.1, 50000)],
                                     temporal=TemporalSpec.range("2022-07-01", "2022-07-02"))
    assert report.pooled_dim == 64 and report.grid_shapes == ((64, 4, 4), (64, 4, 4))
    assert "batch == single (grid)" in report.checks


def test_full_size_encoder_matches_the_published_checkpoint_layout():
    """The giant built on the meta device has exactly the checkpoint's encoder tensors (timm's SwinV2 at the
    authors' config, renamed to their layout, plus the norm3 of blocks 6, 12, ..., 42 of stage 2), and with the
    decoder its bfloat16 tensors account for the published file's 5.31 GB."""
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        ours = rsm.SatVisionSwinV2(rs.GIANT)
        ref = timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=128, in_chans=14, embed_dim=512,
                                depths=(2, 2, 42, 2), num_heads=(16, 32, 64, 128), window_size=8, num_classes=0)
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    expected = {}
    for k, v in ref.state_dict().items():
        parts = k.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) - 1)
        expected[".".join(parts)] = tuple(v.shape)
    norm3 = {f"layers.2.blocks.{i}.norm3.{p}": (2048,) for i in range(5, 42, 6) for p in ("weight", "bias")}
    assert mine == {**expected, **norm3}
    assert mine["patch_embed.proj.weight"] == (512, 14, 4, 4) and mine["norm.weight"] == (4096,)
    decoder = 4096 * 32 * 32 * 14 + 32 * 32 * 14  # 1x1 conv to encoder_stride^2 x 14 channels
    params = rsm.parameter_count(rs.VARIANTS[0]) + 512 + decoder  # + mask token
    assert abs(2 * params - PUBLISHED_BYTES) < 0.005 * PUBLISHED_BYTES
    assert ours.out_side == 4 and ours.num_features == rs.VARIANTS[0].pooled_dim


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_satvision, rs_embed; assert 'satvision' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _write_modis_mosaic(path, descriptions):
    """A gridded MOD021KM day in EPSG:4326 (~1 km cells) over the ROI: reflectance % and brightness temperature K."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    base = np.array([12.0, 30.0, 8.0, 20.0, 10.0, 300.0, 2.0, 240.0, 250.0, 280.0, 260.0, 290.0, 288.0, 250.0])
    data = (base[:, None, None] * (1 + 0.05 * rng.standard_normal((14, 200, 200)))).astype(np.float32)
    profile = dict(driver="GTiff", width=200, height=200, count=14, dtype="float32", crs="EPSG:4326",
                   transform=from_origin(120.5, 32.2, 0.01, 0.01), nodata=-999.0)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    return path


def test_modis_mosaic_from_local_files_reaches_the_model(tiny_model, tmp_path):
    """Item 4: the MODIS L1B collection is served by the local provider (band descriptions = band numbers)."""
    from rs_embed import LocalProvider, get_embedding

    path = _write_modis_mosaic(tmp_path / "MOD021KM_2022-07-01.tif", rs.BANDS)
    provider = LocalProvider(str(path), collection=rs.COLLECTION)
    roi, day = PointBuffer(121.5, 31.2, 64000), TemporalSpec.range("2022-07-01", "2022-07-02")
    emb = get_embedding(tiny_model.card.id, roi, day, OutputSpec.grid(), backend=provider, device="cpu")
    assert emb.data.shape == (64, 4, 4) and np.isfinite(emb.data).all()
    assert emb.meta["sensor"]["collection"] == rs.COLLECTION and tuple(emb.meta["sensor"]["bands"]) == rs.BANDS
    assert emb.meta["provider"] == provider.name
    # a 14-band file without descriptions is read by position ("1".."14"): band 21 is missing, refused by name
    positional = _write_modis_mosaic(tmp_path / "positional_2022-07-01.tif", ())
    from rs_embed_core.errors import UnknownBandError

    with pytest.raises(UnknownBandError, match="21"):
        get_embedding(tiny_model.card.id, roi, day, OutputSpec.pooled(), device="cpu",
                      backend=LocalProvider(str(positional), collection=rs.COLLECTION))


def test_a_safetensors_export_of_the_encoder_loads_too(tmp_path, monkeypatch):
    """weights= may also be a safetensors file of the `module` entry (e.g. converted once by the user)."""
    from safetensors.torch import save_file

    from rs_embed_core.weights import CACHE_ENV, local_weights

    net = rsm.SatVisionSwinV2(TINY_PARAMS)
    sd = {f"encoder.{k}": torch.randn_like(v) for k, v in net.state_dict().items()}
    save_file(sd, tmp_path / "svtoa.safetensors")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    loaded = rsm.build(attrs.evolve(TINY, weights=local_weights(tmp_path / "svtoa.safetensors")), "cpu")
    assert all(torch.equal(loaded.state_dict()[k.removeprefix("encoder.")], v) for k, v in sd.items())
