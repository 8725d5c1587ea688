"""The Prithvi card and chain, Landsat inputs, registration, strict loading and the embedder contract."""

from __future__ import annotations

import datetime as dt
import json

import attrs
import numpy as np
import pytest

from rs_embed_core.collections import known_collection
from rs_embed_core.errors import SpecError
from rs_embed_core.grid import GridSpec
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.plugins import pm
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.raster import Raster
from rs_embed_core.specs import OutputSpec, PointBuffer, TemporalSpec
from rs_embed_core.testing import FakeProvider, check_embedder_contract, check_strict_loading, random_weights, registered

import rs_embed_prithvi as rp

TINY = attrs.evolve(rp.VARIANTS[0], name="tiny", pooled_dim=32, grid_dim=32,
                    params={**rp.VARIANTS[0].params, "embed_dim": 32, "depth": 1, "heads": 2})


class TinyPrithvi(rp.Prithvi):
    card = attrs.evolve(rp.Prithvi.card, id="prithvi_tiny_test", aliases=(), variants=(TINY,), default_variant="tiny")


def _raster(bands: tuple[str, ...], value: np.ndarray, h: int = 40, w: int = 40, t: int = 4) -> Raster:
    data = np.broadcast_to(value.reshape(1, -1, 1, 1), (t, len(bands), h, w)).astype(np.float32)
    grid = GridSpec("EPSG:32651", 350000.0, 3450000.0, 30.0, w, h)
    times = tuple(dt.datetime(2022, 6, 1 + 7 * k) for k in range(t))
    return Raster(data, bands, grid, times, np.ones((t, h, w), bool))


def test_card_describes_variants_inputs_and_side_inputs():
    card = rp.Prithvi.card
    json.dumps(card.describe())
    assert card.id == "prithvi" and card.aliases == ("prithvi_eo_v2_s2_6b",)
    assert card.variant().name == "100M-TL" and [v.name for v in card.variants] == ["100M-TL", "300M-TL", "600M-TL", "300M"]
    assert card.input.bands == ("B2", "B3", "B4", "B8A", "B11", "B12") and card.input.gsd_m == 30.0
    assert card.input.frames == 4 and card.input.composite == "median" and card.input.image_size == 224
    for v in card.variants:
        w = v.weights
        assert w.repo_id.startswith("ibm-nasa-geospatial/Prithvi-EO-2.0-") and len(w.sha256) == 64
        assert w.filename == f"Prithvi_EO_V2_{v.name.replace('-', '_')}.pt"
        assert v.params["coords"] == v.name.endswith("-TL") and v.pooled_dim == v.params["embed_dim"]
    assert card.variant("600M-TL").params["patch_size"] == 14


def test_hook_registers_the_embedder():
    got: list[type] = []
    rp.register_embedders(register=got.append)
    assert got == [rp.Prithvi]


def test_chain_normalises_hls_dn_and_fills_gaps_with_the_mean():
    """(DN - mean) / std on reflectance x 10000; an invalid pixel becomes 0 (the band mean)."""
    dn = np.array([500.0, 800.0, 700.0, 3000.0, 2000.0, 1200.0])
    raster = _raster(rp.S2_BANDS + ("SCL",), np.append(dn, 4.0))
    valid = raster.valid.copy()
    valid[1, 5:9, 5:9] = False
    out = apply_chain(raster.replace(valid=valid), rp.Prithvi.card.preprocessing)
    assert out.shape == (4, 6, 224, 224) and out.bands == rp.S2_BANDS
    expected = (dn - np.array(rp.MEAN)) / np.array(rp.STD)
    np.testing.assert_allclose(out.data[0, :, 100, 100], expected, rtol=1e-5)
    assert (~out.valid[1]).any() and not (~out.valid[0]).any()
    before_resize = apply_chain(raster.replace(valid=valid), rp.Prithvi.card.preprocessing[:-1])
    assert np.all(before_resize.data[1, :, 5:9, 5:9] == 0.0)


@pytest.mark.parametrize("collection", ["LANDSAT/LC08/C02/T1_L2", "NASA/HLS/HLSL30/v002", "NASA/HLS/HLSS30/v002"])
def test_landsat_and_hls_inputs_reach_the_same_normalised_values(collection):
    """Equal reflectance gives equal model input whatever the collection's DN encoding."""
    refl = np.array([0.05, 0.08, 0.07, 0.30, 0.20, 0.12])
    coll = known_collection(collection)
    dn = (refl - coll.reflectance_offset) / coll.reflectance_scale
    kw = rp.inputs_for(collection)
    assert kw["sensor"].collection == collection and kw["sensor"].frames == 4 and kw["sensor"].scale_m == 30.0
    out = apply_chain(_raster(kw["sensor"].bands, dn), kw["preprocessing"])
    expected = (refl * 1e4 - np.array(rp.MEAN)) / np.array(rp.STD)
    np.testing.assert_allclose(out.data[0, :, 7, 7], expected, rtol=1e-4, atol=1e-4)


def test_inputs_for_unknown_collection_is_refused():
    with pytest.raises(SpecError, match="no band mapping"):
        rp.inputs_for("COPERNICUS/S2_HARMONIZED")


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    report = check_strict_loading(TinyPrithvi, "tiny", tmp_path)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)
    assert report.keys == 5 + 12 + 2  # patch embed w/b, cls token, 2 coordinate scales; 1 block; final norm


@pytest.fixture
def tiny_model(tmp_path):
    with registered(TinyPrithvi):
        with random_weights(TinyPrithvi, "tiny", tmp_path, seed=3):
            yield TinyPrithvi


def test_embedder_contract_through_the_public_api(tiny_model):
    report = check_embedder_contract(tiny_model, provider=FakeProvider())
    assert report.pooled_dim == 32 and report.grid_shapes == ((32, 14, 14), (32, 14, 14))
    assert "batch == single (grid)" in report.checks
    request = FakeProvider()
    from rs_embed_core.api import get_embedding

    get_embedding(tiny_model.card.id, spatial=PointBuffer(121.5, 31.2, 1500.0), backend=request,
                  temporal=TemporalSpec.range("2022-06-01", "2022-09-01"), output=OutputSpec.pooled(), device="cpu")
    assert request.requests[0].sensor.frames == 4  # the card's frames reach the provider


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_prithvi, rs_embed; assert 'prithvi' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("collection", ["LANDSAT/LC08/C02/T1_L2", "NASA/HLS/HLSL30/v002"])
def test_sensor_alone_selects_the_collections_chain(collection):
    kw = rp.inputs_for(collection)
    assert rp.Prithvi.default_chain(kw["sensor"]) == tuple(kw["preprocessing"])
    from rs_embed_core.runner import default_sensor

    assert rp.Prithvi.default_chain(default_sensor(rp.Prithvi.card)) == rp.Prithvi.card.preprocessing
