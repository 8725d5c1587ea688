"""Copernicus-FM card, spectral and metadata side inputs, chains, the public API, strict loading, contract."""

from __future__ import annotations

import datetime as dt
import json
import math

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.card import Step
from rs_embed_core.embedder import BatchContext
from rs_embed_core.errors import SpecError, UnknownBandError, WeightsError
from rs_embed_core.grid import GridSpec, grid_for
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.providers import FetchRequest
from rs_embed_core.raster import Raster
from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing import (
    FakeProvider,
    check_embedder_contract,
    check_strict_loading,
    offline_hub,
    random_weights,
    registered,
)
from rs_embed_core.weights import CACHE_ENV

import rs_embed_copernicusfm as rcf
import rs_embed_copernicusfm_model as rcfm

TINY_PARAMS = {**rcf.BASE_PARAMS, "embed_dim": 32, "depth": 1, "heads": 2}
TINY = attrs.evolve(rcf.BASE, name="tiny", pooled_dim=32, grid_dim=32, params=TINY_PARAMS)
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")
S2 = SensorSpec(rcf.S2_COLLECTION, rcf.S2_BANDS, 10)
S1 = SensorSpec(rcf.S1_COLLECTION, ("VV", "VH"), 10)
L8 = SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4", "SR_B5"), 30)


class TinyCopernicusFM(rcf.CopernicusFM):
    card = attrs.evolve(rcf.CopernicusFM.card, id="copernicusfm_tiny_test", aliases=(), variants=(TINY,),
                        default_variant="tiny")


@pytest.fixture
def tiny_registered():
    with registered(TinyCopernicusFM):
        yield TinyCopernicusFM


def _ctx(grids, centers, times, sensor=S2, bands=rcf.S2_BANDS) -> BatchContext:
    return BatchContext(grids=tuple(grids), centers_lonlat=tuple(centers), times=tuple(times), temporal=WHEN,
                        sensor=sensor, want="grid", band_names=tuple(bands))


def test_card_pins_torchgeos_file_and_states_licence_and_side_inputs():
    card = rcf.CopernicusFM.card
    json.dumps(card.describe())
    w = card.variant().weights
    assert (w.repo_id, w.revision, w.license) == ("torchgeo/copernicus-fm", "f395812cc990ba25a451dbb9c9e6d95c8482947e",
                                                  "cc-by-4.0")
    assert len(w.sha256) == 64 and w.filename.endswith(f"-{w.sha256[:8]}.pth")  # torchgeo's name carries the prefix
    assert card.input.collection == "COPERNICUS/S2_HARMONIZED" and len(card.input.bands) == 13
    assert [s.name for s in card.preprocessing] == ["normalize", "fill_invalid", "resize"]
    assert len(card.side_inputs) == 4 and "CC-BY-4.0" in card.license


def test_module_hook_registers_the_embedder():
    got: list[type] = []
    rcf.register_embedders(register=got.append)
    assert got == [rcf.CopernicusFM]


def test_spectral_inputs_pretraining_values_for_s2_and_s1_band_table_otherwise():
    wv, bw = rcf.spectral_inputs(S2, ("B1", "B8", "B8A", "B12"))
    assert wv == (440.0, 842.0, 860.0, 2190.0) and bw == (20.0, 115.0, 20.0, 180.0)
    assert rcf.spectral_inputs(SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B8A",), 20), ("B8A",)) == ((860.0,), (20.0,))
    assert rcf.spectral_inputs(S1, ("VV", "VH")) == ((5e7, 5e7), (1e9, 1e9))  # not the table's 5.55e7 nm
    from rs_embed_core.collections import known_collection

    red = known_collection(L8.collection).band("SR_B4")
    assert rcf.spectral_inputs(L8, ("SR_B4",)) == ((red.center_nm,), (red.bandwidth_nm,))
    # multi-sensor: each band from the sensor that delivered it
    assert rcf.spectral_inputs((S2, S1), ("B4", "VV")) == ((665.0, 5e7), (30.0, 1e9))


@pytest.mark.parametrize("sensor, bands, err, match", [
    (SensorSpec(rcf.S2_COLLECTION, ("B4", "QA60"), 10), ("QA60",), SpecError, "no wavelength"),
    (SensorSpec(rcf.S1_COLLECTION, ("VV", "angle"), 10), ("angle",), SpecError, "no wavelength"),
    (SensorSpec("my/own", ("red",), 10), ("red",), SpecError, "not in the band table"),
    (S2, ("B99",), UnknownBandError, "which sensor"),
])
def test_bands_without_spectral_inputs_are_refused(sensor, bands, err, match):
    with pytest.raises(err, match=match):
        rcf.spectral_inputs(sensor, bands)


def test_bad_band_is_refused_before_any_fetch(tiny_registered):
    from rs_embed import get_embedding

    provider = FakeProvider(bands=rcf.S2_BANDS + ("QA60",))
    with pytest.raises(SpecError, match="QA60"):
        get_embedding("copernicusfm_tiny_test", PointBuffer(11.6, 48.1, 1120), WHEN, backend=provider,
                      sensor=SensorSpec(rcf.S2_COLLECTION, ("B4", "QA60"), 10),
                      preprocessing=[("resize", {"size": 224})])
    assert provider.calls == 0


def test_metadata_from_centre_date_and_preprocessed_gsd():
    grids = (GridSpec("EPSG:32632", 690000.0, 5340000.0, 10.0, 224, 224),
             GridSpec("EPSG:32632", 690000.0, 5340000.0, 20.0, 224, 224, res_y=30.0))
    times = ((dt.datetime(2022, 7, 16, 23, 59),), (None,))
    rows = rcf.metadata(_ctx(grids, ((11.6, 48.1), (-70.6, -33.4)), times))
    assert rows[0] == [11.6, 48.1, float((dt.date(2022, 7, 16) - dt.date(1970, 1, 1)).days), pytest.approx(0.0256)]
    assert math.isnan(rows[1][2]) and rows[1][3] == pytest.approx(0.32 * 0.48)  # 16 px x 20 m by 16 px x 30 m
    with pytest.raises(SpecError, match="degrees"):
        rcf.metadata(_ctx(grids[:1], ((500000.0, 48.1),), times[:1]))


def test_default_chain_per_sensor():
    assert rcf.CopernicusFM.default_chain(S2) == rcf.CopernicusFM.card.preprocessing
    sub = rcf.CopernicusFM.default_chain(SensorSpec(rcf.S2_COLLECTION, ("B4", "B8"), 10))
    assert sub[0].params == {"mean": [rcf.S2_MEAN["B4"], rcf.S2_MEAN["B8"]], "std": [rcf.S2_STD["B4"], rcf.S2_STD["B8"]]}
    s1 = rcf.CopernicusFM.default_chain(S1)
    assert s1[0].params == {"mean": [-12.59, -20.26], "std": [5.26, 5.91]}
    assert [s.name for s in rcf.CopernicusFM.default_chain(L8)] == ["standardize", "fill_invalid", "resize"]


def test_chain_is_authors_statistics_then_resize():
    import torchvision.transforms.v2.functional as TF

    rng = np.random.default_rng(0)
    dn = rng.uniform(0, 6000, (1, 13, 112, 112)).astype(np.float32)
    valid = np.ones((1, 112, 112), bool)
    valid[0, :3, :5] = False
    raster = Raster(dn, rcf.S2_BANDS, GridSpec("EPSG:32632", 690000.0, 5340000.0, 10.0, 112, 112), (None,), valid)
    out = apply_chain(raster, rcf.CopernicusFM.card.preprocessing)
    mean = np.array([rcf.S2_MEAN[b] for b in rcf.S2_BANDS], np.float32)[:, None, None]
    std = np.array([rcf.S2_STD[b] for b in rcf.S2_BANDS], np.float32)[:, None, None]
    x = np.where(valid[0], (dn[0] - mean) / std, 0.0)
    x = TF.resize(torch.from_numpy(x), [224, 224], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    np.testing.assert_allclose(out.data[0], x.numpy(), atol=2e-5)
    assert out.grid.res == pytest.approx(5.0)  # the GSD the patch area is computed from


def test_side_inputs_reach_the_network_through_the_public_api(tiny_registered, tmp_path):
    """grid == the network on the same pixels with the request's centre, date and patch area; another date differs."""
    from rs_embed import get_embedding
    from rs_embed_core.runner import load_embedder

    provider = FakeProvider(bands=rcf.S2_BANDS)
    roi = PointBuffer(11.6, 48.1, 10 * 64)  # 128 px at 10 m -> 224 px at 5.714 m
    with random_weights("copernicusfm_tiny_test", "tiny", tmp_path, seed=1):
        emb = get_embedding("copernicusfm_tiny_test", roi, WHEN, OutputSpec.grid(), backend=provider, device="cpu")
        net = load_embedder(TinyCopernicusFM, TinyCopernicusFM.card.variant("tiny"), "cpu").model
    raster = provider.fetch(FetchRequest(grid_for(roi, 10.0), WHEN, S2))
    pre = apply_chain(raster, rcf.CopernicusFM.card.preprocessing)
    day = float((raster.times[0].date() - dt.date(1970, 1, 1)).days)
    area = (16 * pre.grid.res / 1000) * (16 * pre.grid.yres / 1000)
    assert emb.meta["model_extra"]["days_since_1970"] == day
    assert emb.meta["model_extra"]["patch_area_km2"] == pytest.approx(area)
    wv, bw = (torch.tensor(v, dtype=torch.float32) for v in rcf.spectral_inputs(S2, rcf.S2_BANDS))
    x = torch.from_numpy(pre.data)
    with torch.inference_mode():
        expected = net(x, wv, bw, torch.tensor([[11.6, 48.1, day, area]]))[1][0].numpy()
        other_day = net(x, wv, bw, torch.tensor([[11.6, 48.1, day + 100, area]]))[1][0].numpy()
    assert emb.data.shape == (32, 14, 14)
    np.testing.assert_allclose(emb.data, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(emb.data - other_day).max() > 1e-3 * np.abs(emb.data).max()


def test_sentinel1_request_runs_with_sar_codes(tiny_registered, tmp_path):
    from rs_embed import get_embedding

    provider = FakeProvider(bands=("VV", "VH"))
    with random_weights("copernicusfm_tiny_test", "tiny", tmp_path, seed=2):
        emb = get_embedding("copernicusfm_tiny_test", PointBuffer(11.6, 48.1, 1120), WHEN, backend=provider,
                            sensor=S1, device="cpu")
    assert emb.data.shape == (32,) and np.isfinite(emb.data).all()
    assert emb.meta["preprocessing"][0]["params"]["mean"] == [-12.59, -20.26]


def test_forward_refuses_several_frames():
    emb = TinyCopernicusFM(TINY)
    grid = GridSpec("EPSG:32632", 690000.0, 5340000.0, 10.0, 224, 224)
    with pytest.raises(SpecError, match="one frame"):
        emb.forward(torch.zeros(1, 2, 13, 224, 224), _ctx((grid,), ((11.6, 48.1),), ((None, None),)))


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    keys = {k: tuple(v.shape) for k, v in rcfm.CopernicusFM(TINY_PARAMS).state_dict().items()}
    keys["patch_embed_variable.language_proj.weight"] = (128, 2048)  # in the file, dropped by name
    report = check_strict_loading(TinyCopernicusFM, "tiny", tmp_path, state_dict=keys)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)


def test_embedder_contract_on_random_weights(tiny_registered, tmp_path):
    with random_weights("copernicusfm_tiny_test", "tiny", tmp_path, seed=0):
        report = check_embedder_contract("copernicusfm_tiny_test", variant="tiny",
                                         provider=FakeProvider(bands=rcf.S2_BANDS))
    assert report.pooled_dim == 32 and report.grid_shapes == ((32, 14, 14), (32, 14, 14))
    assert "batch == single (grid)" in report.checks


def test_missing_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        rcf.CopernicusFM(rcf.CopernicusFM.card.variant()).load()
    assert rcf.REPO_ID in str(err.value) and rcf.WEIGHTS.filename in str(err.value)


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_copernicusfm, rs_embed; assert 'copernicusfm' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_step_names_exist():
    from rs_embed_core.preprocess import check_chain

    check_chain([Step.of(s) for s in rcf.CopernicusFM.default_chain(L8)])
