"""Clay card, sensors and side inputs, chains, the public API, strict loading, contract, export."""

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
from rs_embed_core.nn.cyclic import latlon_code, week_hour_code
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

import rs_embed_clay as rc
import rs_embed_clay_model as rcm

TINY_PARAMS = {**rc.LARGE_PARAMS, "embed_dim": 32, "depth": 1, "heads": 2, "dim_head": 16}
TINY = attrs.evolve(rc.LARGE, name="tiny", pooled_dim=32, grid_dim=32, params=TINY_PARAMS)
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")
S2 = SensorSpec(rc.S2_COLLECTION, rc.S2_L2A.bands, 10)
S1 = SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"), 10)
L8 = SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4", "SR_B3", "SR_B2"), 30)
MOD = SensorSpec("MODIS/061/MOD09A1", ("sur_refl_b01", "sur_refl_b02"), 500)
ROI = PointBuffer(11.6, 48.1, 1280)  # 256 px at 10 m


class TinyClay(rc.Clay):
    card = attrs.evolve(rc.Clay.card, id="clay_tiny_test", aliases=(), variants=(TINY,), default_variant="tiny")


@pytest.fixture
def tiny_registered():
    with registered(TinyClay):
        yield TinyClay


def _ctx(grids, centers, times, sensor=S2, bands=rc.S2_L2A.bands) -> BatchContext:
    return BatchContext(grids=tuple(grids), centers_lonlat=tuple(centers), times=tuple(times), temporal=WHEN,
                        sensor=sensor, want="grid", band_names=tuple(bands))


def test_card_pins_the_v15_checkpoint_and_states_licence_and_side_inputs():
    card = rc.Clay.card
    json.dumps(card.describe())
    w = card.variant().weights
    assert (w.repo_id, w.revision, w.filename, w.license) == (
        "made-with-clay/Clay", "70200ebcccdf67bf2a0cb9984c77ddee26c10ed2", "v1.5/clay-v1.5.ckpt", "apache-2.0")
    assert len(w.sha256) == 64 and int(w.sha256, 16) >= 0
    assert card.input.collection == "COPERNICUS/S2_SR_HARMONIZED" and card.input.image_size == 256
    assert card.input.bands == ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
    assert [s.name for s in card.preprocessing] == ["normalize", "fill_invalid", "resize"]
    assert card.variant().pooled_dim == 1024 and len(card.side_inputs) == 4


def test_module_hook_registers_the_embedder():
    got: list[type] = []
    rc.register_embedders(register=got.append)
    assert got == [rc.Clay]


def test_band_inputs_are_the_authors_wavelengths_per_sensor():
    assert rc.band_inputs(S2, ("B2", "B8A", "B12")) == (rc.S2_L2A, (0.493, 0.865, 2.19))
    assert rc.band_inputs(L8, L8.bands) == (rc.LANDSAT_L2, (0.65, 0.56, 0.48))
    assert rc.band_inputs(S1, ("VV", "VH")) == (rc.S1_RTC, (3.5, 4.0))  # the trained codes, not C-band
    assert rc.band_inputs(MOD, MOD.bands) == (rc.MODIS, (645.0, 858.5))  # nm, as metadata.yaml has them
    nine = SensorSpec("LANDSAT/LC09/C02/T1_L2", ("SR_B7",), 30)
    assert rc.band_inputs(nine, ("SR_B7",)) == (rc.LANDSAT_L2, (2.2,))


@pytest.mark.parametrize("sensors, bands, err, match", [
    (SensorSpec(rc.S2_COLLECTION, ("B1",), 10), ("B1",), SpecError, "no published wavelength"),
    (SensorSpec(rc.S2_COLLECTION, ("QA60",), 10), ("QA60",), SpecError, "no published wavelength"),
    (SensorSpec("COPERNICUS/S2_HARMONIZED", ("B4",), 10), ("B4",), SpecError, "not one of them"),
    (SensorSpec("LANDSAT/LC08/C02/T1_TOA", ("B4",), 30), ("B4",), SpecError, "not one of them"),
    ((S2, S1), ("B4", "VV"), SpecError, "one sensor at a time"),
    (S2, ("B99",), UnknownBandError, "which sensor"),
    (S2, (), SpecError, "at least one band"),
])
def test_bands_without_published_inputs_are_refused(sensors, bands, err, match):
    with pytest.raises(err, match=match):
        rc.band_inputs(sensors, bands)


@pytest.mark.parametrize("sensor, match", [
    (SensorSpec(rc.S2_COLLECTION, ("B4", "B1"), 10), "B1"),
    (SensorSpec(rc.S2_COLLECTION, ("B4", "B3"), 10, frames=3), "one composited frame"),
    (SensorSpec(rc.S2_COLLECTION, ("B4", "B3"), 10, composite="none"), "one composited frame"),
    (SensorSpec("NASA/HLS/HLSL30/v002", ("B4",), 30), "HLSL30"),
])
def test_bad_requests_are_refused_before_any_fetch(tiny_registered, sensor, match):
    from rs_embed import get_embedding

    provider = FakeProvider(bands=sensor.bands)
    with pytest.raises(SpecError, match=match):
        get_embedding("clay_tiny_test", ROI, WHEN, backend=provider, sensor=sensor)
    with pytest.raises(SpecError, match=match):  # also with the user's own chain
        get_embedding("clay_tiny_test", ROI, WHEN, backend=provider, sensor=sensor,
                      preprocessing=[("resize", {"size": 256})])
    assert provider.calls == 0


def test_metadata_from_grid_date_hour_and_centre():
    grids = (GridSpec("EPSG:32632", 690000.0, 5340000.0, 10.0, 256, 256),
             GridSpec("EPSG:32632", 690000.0, 5340000.0, 20.0, 256, 256, res_y=45.0))
    when = dt.datetime(2022, 7, 16, 18, 30, tzinfo=dt.timezone.utc)
    gsds, rows = rc.metadata(_ctx(grids, ((11.6, 48.1), (-70.6, -33.4)), ((when,), (None,))))
    assert gsds == [10.0, pytest.approx(30.0)]  # geometric mean of 20 m and 45 m
    week = 28 * 2 * math.pi / 52  # ISO week 28; 18 h UTC
    assert rows[0] == pytest.approx([math.sin(week), math.cos(week), math.sin(1.5 * math.pi), math.cos(1.5 * math.pi),
                                     *latlon_code(48.1, 11.6)])
    assert rows[1][:4] == [0.0] * 4  # no timestamp: the pre-training's "no metadata" zeros
    assert rows[1][4:] == pytest.approx([math.sin(math.radians(-33.4)), math.cos(math.radians(-33.4)),
                                         math.sin(math.radians(-70.6)), math.cos(math.radians(-70.6))])
    with pytest.raises(SpecError, match="lat -90..90"):
        rc.metadata(_ctx(grids[:1], ((500000.0, 48.1),), ((when,),)))


def test_cyclic_codes_wrap_and_read_aware_times_in_utc():
    a = week_hour_code(dt.datetime(2022, 1, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))))  # 2 Jan 22 h UTC
    assert a == pytest.approx(week_hour_code(dt.datetime(2022, 1, 2, 22)))
    assert week_hour_code(dt.date(2022, 7, 16)) == pytest.approx(week_hour_code(dt.datetime(2022, 7, 16, 0)))
    assert latlon_code(0.0, 180.0) == pytest.approx(latlon_code(0.0, -180.0), abs=1e-12)
    with pytest.raises(SpecError):
        week_hour_code("2022-07-16")  # type: ignore[arg-type]


def test_default_chain_per_sensor():
    assert rc.Clay.default_chain(S2) == rc.Clay.card.preprocessing
    sub = rc.Clay.default_chain(SensorSpec(rc.S2_COLLECTION, ("B8", "B4"), 10))
    assert sub[0].params == {"mean": [2743.0, 1552.0], "std": [1742.0, 1888.0]}
    assert rc.Clay.default_chain(L8)[0].params == {"mean": [13705.0, 13310.0, 12474.0],
                                                   "std": [9578.0, 9408.0, 10144.0]}
    assert rc.Clay.default_chain(S1)[0].params == {"mean": [0.123273, 0.027337], "std": [1.492154, 0.122182]}
    assert rc.Clay.default_chain(MOD)[0].params["mean"] == [1072.471882, 1624.482782]
    with pytest.raises(SpecError, match="not one of them"):
        rc.Clay.default_chain(SensorSpec("COPERNICUS/S2_HARMONIZED", ("B4",), 10))


def test_chain_is_the_authors_statistics_with_invalid_pixels_at_the_mean():
    rng = np.random.default_rng(0)
    dn = rng.uniform(0, 6000, (1, 10, 256, 256)).astype(np.float32)
    valid = np.ones((1, 256, 256), bool)
    valid[0, :3, :5] = False
    raster = Raster(dn, rc.S2_L2A.bands, GridSpec("EPSG:32632", 690000.0, 5340000.0, 10.0, 256, 256), (None,), valid)
    out = apply_chain(raster, rc.Clay.card.preprocessing)
    mean = np.array([rc.S2_L2A.mean[b] for b in rc.S2_L2A.bands], np.float32)[:, None, None]
    std = np.array([rc.S2_L2A.std[b] for b in rc.S2_L2A.bands], np.float32)[:, None, None]
    np.testing.assert_allclose(out.data[0], np.where(valid[0], (dn[0] - mean) / std, 0.0), atol=1e-5)
    assert out.grid.res == 10.0 and out.data.shape[-2:] == (256, 256)  # 256 px at 10 m: no resampling


def test_side_inputs_reach_the_network_through_the_public_api(tiny_registered, tmp_path):
    """grid == the network on the same pixels with the request's wavelengths, GSD, date and centre."""
    from rs_embed import get_embedding
    from rs_embed_core.runner import load_embedder

    provider = FakeProvider()
    roi = PointBuffer(11.6, 48.1, 640)  # 128 px at 10 m -> 256 px at 5 m
    with random_weights("clay_tiny_test", "tiny", tmp_path, seed=1):
        emb = get_embedding("clay_tiny_test", roi, WHEN, OutputSpec.grid(), backend=provider, device="cpu")
        net = load_embedder(TinyClay, TinyClay.card.variant("tiny"), "cpu").model
    raster = provider.fetch(FetchRequest(grid_for(roi, 10.0), WHEN, S2))
    pre = apply_chain(raster, rc.Clay.card.preprocessing)
    gsd = math.sqrt(pre.grid.res * pre.grid.yres)
    assert gsd == pytest.approx(5.0, rel=0.01) and emb.meta["model_extra"]["gsd_m"] == pytest.approx(gsd)
    meta = [*week_hour_code(raster.times[0]), *latlon_code(48.1, 11.6)]
    waves = torch.tensor([rc.S2_L2A.wavelength[b] for b in rc.S2_L2A.bands])
    x = torch.from_numpy(pre.data)
    with torch.inference_mode():
        expected = net(x, waves, torch.tensor([gsd]), torch.tensor([meta]))[1][0].numpy()
        other_gsd = net(x, waves, torch.tensor([10.0]), torch.tensor([meta]))[1][0].numpy()
    assert emb.data.shape == (32, 32, 32)
    np.testing.assert_allclose(emb.data, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(emb.data - other_gsd).max() > 1e-3 * np.abs(emb.data).max()


@pytest.mark.parametrize("sensor", [S1, L8, MOD], ids=["s1", "landsat", "modis"])
def test_other_sensors_run_with_their_statistics(tiny_registered, tmp_path, sensor):
    from rs_embed import get_embedding

    with random_weights("clay_tiny_test", "tiny", tmp_path, seed=2):
        emb = get_embedding("clay_tiny_test", PointBuffer(11.6, 48.1, 128 * sensor.scale_m), WHEN,
                            backend=FakeProvider(bands=sensor.bands), sensor=sensor, device="cpu")
    assert emb.data.shape == (32,) and np.isfinite(emb.data).all()
    assert emb.meta["preprocessing"][0]["params"]["mean"] == rc.Clay.default_chain(sensor)[0].params["mean"]
    assert emb.meta["model_extra"]["wavelengths"] == list(rc.band_inputs(sensor, sensor.bands)[1])


def test_forward_refuses_several_frames():
    emb = TinyClay(TINY)
    grid = GridSpec("EPSG:32632", 690000.0, 5340000.0, 10.0, 256, 256)
    with pytest.raises(SpecError, match="one frame"):
        emb.forward(torch.zeros(1, 2, 10, 256, 256), _ctx((grid,), ((11.6, 48.1),), ((None, None),)))


def test_network_refuses_inputs_off_the_patch_lattice():
    net = rcm.ClayEncoder(TINY_PARAMS)
    with pytest.raises(SpecError, match="multiples of 8"):
        net(torch.zeros(1, 2, 60, 64), torch.tensor([0.5, 0.6]), torch.tensor([10.0]), torch.zeros(1, 8))
    with pytest.raises(SpecError, match="one wavelength per band"):
        net(torch.zeros(1, 2, 64, 64), torch.tensor([0.5]), torch.tensor([10.0]), torch.zeros(1, 8))


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    """File-side names (`model.encoder.*`); the decoder/teacher/projection keys a real file also holds
    are dropped by name (the full-size equality test loads a file with all of them)."""
    keys = {rcm.PREFIX + k: tuple(v.shape) for k, v in rcm.ClayEncoder(TINY_PARAMS).state_dict().items()}
    report = check_strict_loading(TinyClay, "tiny", tmp_path, state_dict=keys)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)
    with random_weights(TinyClay, "tiny", tmp_path / "dropped", state_dict={
            **keys, "model.decoder.mask_patch": (16,), "model.teacher.pos_embed": (1, 4, 4, 8),
            "model.proj.weight": (8, 32)}):
        TinyClay(TinyClay.card.variant("tiny")).load()


def test_embedder_contract_on_random_weights(tiny_registered, tmp_path):
    with random_weights("clay_tiny_test", "tiny", tmp_path, seed=0):
        report = check_embedder_contract("clay_tiny_test", variant="tiny", provider=FakeProvider())
    assert report.pooled_dim == 32 and report.grid_shapes == ((32, 32, 32), (32, 32, 32))
    assert "batch == single (grid)" in report.checks


def test_export_with_another_model_equals_get_embeddings_batch(tiny_registered, tmp_path):
    import rs_embed_baseline
    from rs_embed import export_batch, get_embeddings_batch, load_export
    from rs_embed_core.plugins import load_plugins, pm

    load_plugins()
    added = not pm.is_registered(rs_embed_baseline)
    if added:
        pm.register(rs_embed_baseline, name="baseline-clay-export-test")
    spatials = [PointBuffer(11.6 + 0.01 * i, 48.1, 1280) for i in range(3)]
    models = ["clay_tiny_test", "spectral_stats"]
    try:
        with random_weights("clay_tiny_test", "tiny", tmp_path / "w", seed=3):
            provider = FakeProvider()
            res = export_batch(spatials, WHEN, models, tmp_path / "out", backend=provider, batch_size=2,
                               format="npz")
            ref = get_embeddings_batch("clay_tiny_test", spatials, WHEN, backend=FakeProvider(), batch_size=2)
    finally:
        if added:
            pm.unregister(rs_embed_baseline)
    assert (res.ok, res.failed) == (6, 0) and provider.calls == 3  # one fetch per ROI serves both models
    data = load_export(tmp_path / "out")
    assert data.embeddings["clay_tiny_test"].shape == (3, 32)
    np.testing.assert_allclose(data.embeddings["clay_tiny_test"], np.stack([e.data for e in ref]), atol=1e-6)
    assert data.embeddings["spectral_stats"].shape[0] == 3


def test_missing_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        rc.Clay(rc.Clay.card.variant()).load()
    assert rc.REPO_ID in str(err.value) and rc.WEIGHTS.filename in str(err.value)


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_clay, rs_embed; assert 'clay' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_step_names_exist():
    from rs_embed_core.preprocess import check_chain

    for sensor in (S2, S1, L8, MOD):
        check_chain([Step.of(s) for s in rc.Clay.default_chain(sensor)])
