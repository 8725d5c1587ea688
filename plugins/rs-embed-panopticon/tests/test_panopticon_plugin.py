"""The Panopticon card, its chains, registration, strict loading, the contract and any-sensor use
(including a Sentinel-1 + Sentinel-2 multi-sensor request) via the public API."""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.card import ModelCard, Step
from rs_embed_core.collections import known_collection
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.grid import GridSpec, grid_for
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.plugins import pm
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.providers import FetchRequest
from rs_embed_core.raster import Raster
from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing import (
    registered,
    FakeProvider,
    build_hf_cache,
    check_embedder_contract,
    check_strict_loading,
    offline_hub,
    random_weights,
    random_weights_file,
    weights_spec_for,
)
from rs_embed_core.weights import CACHE_ENV

import rs_embed_panopticon as rp
import rs_embed_panopticon_model as rpm

TINY = attrs.evolve(rp.BASE, name="tiny", pooled_dim=32, grid_dim=32,
                    params={**rp.BASE.params, "embed_dim": 32, "depth": 1, "heads": 2, "attn_dim": 48,
                            "channel_heads": 4, "pos_grid": 4})
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")
S1 = SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"), 10)
S2 = SensorSpec(rp.S2_COLLECTION, ("B4", "B8"), 10)
LANDSAT = SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4", "SR_B3", "SR_B2", "SR_B5"), 30)


class TinyPanopticon(rp.Panopticon):
    card = attrs.evolve(rp.Panopticon.card, id="panopticon_tiny_test", aliases=(), variants=(TINY,),
                        default_variant="tiny")


@pytest.fixture
def tiny_registered():
    with registered(TinyPanopticon):
        yield TinyPanopticon


def test_card_describes_weights_chain_and_side_inputs():
    card: ModelCard = rp.Panopticon.card
    json.dumps(card.describe())
    assert card.id == "panopticon" and [v.name for v in card.variants] == ["base"]
    w = card.variant().weights
    assert (w.repo_id, w.revision, w.filename) == (rp.REPO_ID, rp.REVISION, "panopticon_vitb14_teacher.pth")
    assert len(w.sha256) == 64 and w.license == "CC-BY-4.0"
    assert (card.input.collection, card.input.bands, card.input.gsd_m, card.input.image_size) == (
        "COPERNICUS/S2_HARMONIZED", rp.S2_BANDS, 10.0, 224)
    assert set(rp.S2_BANDS) == set(known_collection(card.input.collection).band_names) - {"QA60"}
    assert [s.name for s in card.preprocessing] == ["resize", "normalize"]
    assert "channel ids" in " ".join(card.side_inputs) and "pos_resize" in card.notes


def test_module_hook_registers_the_embedder():
    got: list[type] = []
    rp.register_embedders(register=got.append)
    assert got == [rp.Panopticon]


def _raster(dn: np.ndarray, bands: tuple[str, ...], size: int = 112) -> Raster:
    data = np.broadcast_to(dn.astype(np.float32)[None, :, None, None], (1, len(bands), size, size)).copy()
    data[:, :, : size // 2] += 100.0  # some spatial variation for standardize
    grid = GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, size, size)
    return Raster(data, bands, grid, (None,), np.ones((1, size, size), bool))


def test_default_chain_uses_the_authors_statistics_for_sentinel2_l1c():
    """(x - mean) / std with the authors' fMoW-Sentinel values, for the bands requested, in their order."""
    sensor = SensorSpec(rp.S2_COLLECTION, ("B12", "B4", "B10"), 10)
    chain = rp.Panopticon.default_chain(sensor)
    assert [s.name for s in chain] == ["resize", "normalize"]
    dn = np.array([1000.0, 2000.0, 20.0])
    out = apply_chain(_raster(dn, sensor.bands), chain)
    assert out.shape == (1, 3, 224, 224)
    expected = [(v - rp.FMOW_S2_MEAN[b]) / rp.FMOW_S2_STD[b] for v, b in zip(dn, sensor.bands)]
    np.testing.assert_allclose(out.data[0, :, -1, -1], expected, rtol=1e-5)
    default = SensorSpec(rp.S2_COLLECTION, rp.S2_BANDS, 10)
    assert rp.Panopticon.default_chain(default) == rp.Panopticon.card.preprocessing


@pytest.mark.parametrize("sensor", [S1, LANDSAT, SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B8"), 10)],
                         ids=["sentinel1", "landsat", "s2-l2a"])
def test_default_chain_standardises_other_sensors_per_image(sensor):
    chain = rp.Panopticon.default_chain(sensor)
    assert chain == (rp._RESIZE, Step("standardize"))
    out = apply_chain(_raster(np.arange(1.0, len(sensor.bands) + 1), sensor.bands), chain)
    np.testing.assert_allclose(out.data.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.data.std(axis=(0, 2, 3)), 1.0, atol=2e-2)


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    report = check_strict_loading(TinyPanopticon, "tiny", tmp_path)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)
    assert report.keys == len(rpm.Panopticon(TINY.params).state_dict())


def _serve(tmp_path, monkeypatch, sd, rev: str):
    path = random_weights_file(sd, tmp_path / rev[:4] / TINY.weights.filename)
    build_hf_cache(tmp_path / "hub", rp.REPO_ID, rev, {path.name: path})
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    return attrs.evolve(TINY, weights=weights_spec_for(rp.REPO_ID, rev, path.name, path))


def test_the_teachers_mask_token_is_dropped_and_nothing_else(tmp_path, monkeypatch):
    """The released file holds DINOv2's mask_token: dropped by name; any other extra key (a DINO head) refused."""
    sd = dict(rpm.Panopticon(TINY.params).state_dict())
    variant = _serve(tmp_path, monkeypatch, {**sd, "mask_token": torch.zeros(1, 32)}, "1" * 40)
    with offline_hub(tmp_path / "hub"):
        TinyPanopticon(variant).load()
    variant = _serve(tmp_path, monkeypatch, {**sd, "dino_head.last_layer.weight": torch.zeros(4, 32)}, "2" * 40)
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError, match="dino_head.last_layer.weight"):
        TinyPanopticon(variant).load()


def test_missing_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        rp.Panopticon(rp.BASE).load()
    assert "lewaldm/panopticon" in str(err.value) and "panopticon_vitb14_teacher.pth" in str(err.value)


def test_embedder_contract_on_random_weights(tiny_registered, tmp_path):
    with random_weights("panopticon_tiny_test", "tiny", tmp_path, seed=0):
        report = check_embedder_contract("panopticon_tiny_test", variant="tiny",
                                         provider=FakeProvider(bands=known_collection(rp.S2_COLLECTION).band_names))
    assert report.pooled_dim == 32 and report.grid_shapes == ((32, 16, 16), (32, 16, 16))
    assert "batch == single (grid)" in report.checks


def _prepped(provider, sensors, roi, chain) -> tuple[torch.Tensor, tuple[str, ...]]:
    """What the runner feeds the network: each sensor fetched on the ROI's grid, bands concatenated in
    request order, then the chain."""
    grid = grid_for(roi, sensors[0].scale_m)
    rasters = [provider.fetch(FetchRequest(grid, WHEN, s)) for s in sensors]
    merged = rasters[0].replace(data=np.concatenate([r.data for r in rasters], axis=1),
                                bands=tuple(b for r in rasters for b in r.bands))
    out = apply_chain(merged, chain)
    return torch.from_numpy(out.data), out.bands


@pytest.mark.parametrize("sensors", [(LANDSAT,), (S1, S2)], ids=["landsat", "s1+s2-multi-sensor"])
def test_any_sensor_through_the_public_api(tiny_registered, tmp_path, sensors):
    """The request's bands get their band-table channel ids: equal to the network run on the same
    preprocessed pixels with those ids (that the ids steer the output is shown at full size in
    test_panopticon_equality; tiny random weights damp it below float noise)."""
    from rs_embed import get_embedding
    from rs_embed_core.runner import load_embedder

    provider = FakeProvider(bands=tuple(b for s in sensors for b in known_collection(s.collection).band_names))
    roi = PointBuffer(121.5, 31.2, sensors[0].scale_m * 112)
    with random_weights("panopticon_tiny_test", "tiny", tmp_path, seed=1):
        emb = get_embedding("panopticon_tiny_test", roi, WHEN, OutputSpec.pooled(), backend=provider, device="cpu",
                            sensor=sensors if len(sensors) > 1 else sensors[0])
        net = load_embedder(TinyPanopticon, TinyPanopticon.card.variant("tiny"), "cpu").model
    assert emb.data.shape == (32,) and emb.meta["preprocessing"][-1]["name"] == "standardize"
    x, bands = _prepped(provider, sensors, roi, rp.Panopticon.default_chain(sensors[0]))
    ids = rp.channel_ids(sensors if len(sensors) > 1 else sensors[0], bands)
    assert (ids == (-1.0, -2.0, 665.0, 842.0)) if len(sensors) > 1 else (ids == (655.0, 561.0, 482.0, 865.0))
    with torch.inference_mode():
        expected = net(x, torch.tensor(ids))[0][0].numpy()
    np.testing.assert_allclose(emb.data, expected, rtol=1e-5, atol=1e-6)


def test_a_band_without_an_id_is_a_clear_error(tiny_registered, tmp_path):
    from rs_embed import get_embedding

    qa = SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4", "QA_PIXEL"), 30)
    provider = FakeProvider(bands=known_collection(qa.collection).band_names)
    with random_weights("panopticon_tiny_test", "tiny", tmp_path), pytest.raises(SpecError, match="QA_PIXEL"):
        get_embedding("panopticon_tiny_test", PointBuffer(121.5, 31.2, 30 * 112), WHEN, backend=provider,
                      device="cpu", sensor=qa)


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_panopticon, rs_embed; assert 'panopticon' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_multi_sensor_with_sentinel2_l1c_first_needs_a_chain(tiny_registered, tmp_path):
    """The core picks the default chain from the first sensor: L1C statistics cannot cover the merged
    raster, which is refused by name; the documented chain (or SAR first) runs."""
    from rs_embed import get_embedding

    s2 = SensorSpec(rp.S2_COLLECTION, ("B4", "B8"), 10)
    provider = FakeProvider(bands=known_collection(rp.S2_COLLECTION).band_names + ("VV", "VH"))
    roi = PointBuffer(121.5, 31.2, 1120)
    with random_weights("panopticon_tiny_test", "tiny", tmp_path):
        with pytest.raises(SpecError, match="normalize mean has 2 value"):
            get_embedding("panopticon_tiny_test", roi, WHEN, backend=provider, device="cpu", sensor=(s2, S1))
        emb = get_embedding("panopticon_tiny_test", roi, WHEN, backend=provider, device="cpu", sensor=(s2, S1),
                            preprocessing=[("resize", {"size": 224}), ("standardize", {})])
    assert emb.data.shape == (32,) and np.isfinite(emb.data).all()
