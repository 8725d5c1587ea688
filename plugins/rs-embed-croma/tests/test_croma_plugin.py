"""The CROMA card, its two preprocessing steps, registration, strict loading, the contract and the
three modes (optical, SAR, joint through a multi-sensor request) via the public API."""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.card import ModelCard
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
    FakeProvider,
    build_hf_cache,
    check_embedder_contract,
    check_strict_loading,
    offline_hub,
    random_weights,
    weights_spec_for,
)
from rs_embed_core.weights import CACHE_ENV

import rs_embed_croma as rc
import rs_embed_croma_model as rcm

TINY = attrs.evolve(rc.BASE, name="tiny", pooled_dim=32, grid_dim=32, params={"embed_dim": 32, "depth": 2, "heads": 4})
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")
ROI = PointBuffer(121.5, 31.2, 600)  # 120 px at 10 m
S2 = SensorSpec(rc.OPTICAL_COLLECTION, rc.OPTICAL_BANDS, 10)
S1 = SensorSpec(rc.SAR_COLLECTION, rc.SAR_BANDS, 10)


class TinyCROMA(rc.CROMA):
    card = attrs.evolve(rc.CROMA.card, id="croma_tiny_test", aliases=(), variants=(TINY,), default_variant="tiny")


class DbFake(FakeProvider):
    """FakeProvider whose VV/VH look like backscatter in dB (-25..0), as Earth Engine serves S1 GRD."""

    def fetch(self, request: FetchRequest) -> Raster:
        r = super().fetch(request)
        sar = [i for i, b in enumerate(r.bands) if b in rc.SAR_BANDS]
        if not sar:
            return r
        data = r.data.copy()
        data[:, sar] = -25.0 + data[:, sar] / 400.0
        return r.replace(data=data)


PROVIDER_BANDS = known_collection(rc.OPTICAL_COLLECTION).band_names + rc.SAR_BANDS


@pytest.fixture
def tiny_registered():
    class Plugin:
        @hookimpl
        def register_embedders(self, register):
            register(TinyCROMA)

        @hookimpl
        def register_preprocessors(self, register):
            rc.register_preprocessors(register=register)

    plugin = Plugin()
    pm.register(plugin, name="croma-tiny-test")
    try:
        yield TinyCROMA
    finally:
        pm.unregister(plugin)
        from rs_embed_core.runner import clear_model_cache

        clear_model_cache()


def test_card_describes_variants_chain_modes_and_gsd():
    card: ModelCard = rc.CROMA.card
    json.dumps(card.describe())
    assert card.id == "croma" and card.default_variant == "base"
    assert [v.name for v in card.variants] == ["base", "large"]
    for v in card.variants:
        assert v.weights.repo_id == "torchgeo/croma" and len(v.weights.revision) == 40
        assert v.weights.sha256.startswith(v.weights.filename.rsplit("-", 1)[1].removesuffix(".pt"))
        assert len(v.weights.sha256) == 64 and v.weights.license == "MIT"
    assert (card.input.gsd_m, card.input.image_size) == (10.0, 120)
    assert card.input.collection == "COPERNICUS/S2_HARMONIZED" and card.input.bands == rc.OPTICAL_BANDS
    assert [s.name for s in card.preprocessing] == ["croma_select", "resize", "croma_scale"]
    for word in ("optical", "SAR", "joint", "10 m"):
        assert word in card.notes
    # every band CROMA takes exists in the band table of the collection it comes from
    assert set(rc.OPTICAL_BANDS) <= set(known_collection(rc.OPTICAL_COLLECTION).band_names)
    assert set(rc.SAR_BANDS) <= set(known_collection(rc.SAR_COLLECTION).band_names)


def test_module_hooks_register_the_embedder_and_steps():
    got: list = []
    rc.register_embedders(register=got.append)
    steps: dict = {}
    rc.register_preprocessors(register=steps.__setitem__)
    assert got == [rc.CROMA] and steps == {"croma_select": rc.croma_select, "croma_scale": rc.croma_scale}


def _raster(values: dict[str, float], size: int = 8) -> Raster:
    bands = tuple(values)
    dn = np.array(list(values.values()), np.float32)
    data = np.broadcast_to(dn[None, :, None, None], (1, len(bands), size, size))
    grid = GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, size, size)
    return Raster(data, bands, grid, (None,), np.ones((1, size, size), bool))


def test_select_keeps_complete_groups_in_cromas_order():
    optical = {b: float(i) for i, b in enumerate(reversed(rc.OPTICAL_BANDS))}
    params = {"optical": list(rc.OPTICAL_BANDS), "sar": list(rc.SAR_BANDS)}
    out = rc.croma_select(_raster({**optical, "QA60": 0.0}), **params)
    assert out.bands == rc.OPTICAL_BANDS and out.data[0, 0, 0, 0] == optical["B1"]
    assert rc.croma_select(_raster({"VH": 1.0, "angle": 3.0, "VV": 2.0}), **params).bands == rc.SAR_BANDS
    both = rc.croma_select(_raster({"VH": 1.0, **optical, "VV": 2.0}), **params)
    assert both.bands == rc.OPTICAL_BANDS + rc.SAR_BANDS and both.data[0, -2, 0, 0] == 2.0
    with pytest.raises(SpecError, match=r"optical encoder needs all .* lacks \['B9'\]"):
        rc.croma_select(_raster({b: 1.0 for b in rc.OPTICAL_BANDS if b != "B9"}), **params)
    with pytest.raises(SpecError, match=r"SAR encoder .* lacks \['VH'\]"):
        rc.croma_select(_raster({"VV": 1.0}), **params)
    with pytest.raises(SpecError, match="optical bands .* SAR bands"):
        rc.croma_select(_raster({"red": 1.0}), **params)


def test_scale_is_cromas_two_sigma_window_clipped():
    """clip((x - (mean - 2 std)) / (4 std), 0, 1), per band by name, with SSL4EO-S12's statistics."""
    m, s = rc.SSL4EO_MEAN, rc.SSL4EO_STD
    values = {"B4": m["B4"], "B8": m["B8"] + 1.5 * s["B8"], "B11": 0.0, "VV": 0.0, "VH": -20.19237134 - 2 * s["VH"]}
    out = rc.croma_scale(_raster(values), mean=m, std=s)
    got = out.data[0, :, 3, 3]
    expected = [0.5, 0.875, max(0.0, (0 - (m["B11"] - 2 * s["B11"])) / (4 * s["B11"])),
                min(1.0, (0 - (m["VV"] - 2 * s["VV"])) / (4 * s["VV"])), 0.0]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert 0.0 < got[2] < 0.5 and got[3] == 1.0  # B11 = 0 DN is inside the window; 0 dB VV saturates
    with pytest.raises(SpecError, match=r"no statistics for band\(s\) \['red'\]"):
        rc.croma_scale(_raster({"red": 1.0}), mean=m, std=s)
    with pytest.raises(SpecError, match="std must be > 0"):
        rc.croma_scale(_raster({"B4": 1.0}), mean=m, std={**s, "B4": 0.0})


def test_scale_records_how_much_it_clipped():
    """Values in other units (here linear backscatter instead of dB) fall outside the window: recorded in
    meta["saturated"], which the runner turns into a SaturatedInputWarning above one half."""
    m, s = rc.SSL4EO_MEAN, rc.SSL4EO_STD
    assert rc.croma_scale(_raster({"B4": m["B4"], "B8": m["B8"]}), mean=m, std=s).meta["saturated"] == {
        "croma_scale": 0.0}
    out = rc.croma_scale(_raster({"VV": 0.1, "VH": -20.0}), mean=m, std=s)  # VV 0.1 is above its dB window
    assert out.meta["saturated"]["croma_scale"] == pytest.approx(0.5)


def test_sar_in_linear_units_warns_through_the_api(tiny_registered, tmp_path):
    from rs_embed import get_embedding
    from rs_embed_core.runner import SaturatedInputWarning

    with random_weights("croma_tiny_test", "tiny", tmp_path), pytest.warns(SaturatedInputWarning, match="croma_scale"):
        get_embedding("croma_tiny_test", ROI, WHEN, backend=FakeProvider(bands=PROVIDER_BANDS), device="cpu",
                      sensor=S1)  # FakeProvider's 0..10000 are far above any dB window


def test_card_chain_runs_on_a_fetched_optical_raster():
    provider = FakeProvider(bands=PROVIDER_BANDS)
    raster = provider.fetch(FetchRequest(grid_for(PointBuffer(121.5, 31.2, 800), 10), WHEN, S2))
    out = apply_chain(raster, rc.CROMA.card.preprocessing)
    assert out.bands == rc.OPTICAL_BANDS and out.shape == (1, 12, 120, 120)
    assert out.data.min() >= 0.0 and out.data.max() <= 1.0 and out.data.std() > 0.01


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    report = check_strict_loading(TinyCROMA, "tiny", tmp_path)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)
    assert report.keys == len(rcm.CROMA(TINY.params).state_dict())


def _nested(model: torch.nn.Module) -> dict:
    return {part: getattr(model, part).state_dict() for part in rcm.PARTS}


def _serve(tmp_path, monkeypatch, obj, rev: str):
    path = tmp_path / TINY.weights.filename
    torch.save(obj, path)
    build_hf_cache(tmp_path / "hub", rc.REPO_ID, rev, {path.name: path})
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    return attrs.evolve(TINY, weights=weights_spec_for(rc.REPO_ID, rev, path.name, path))


def test_released_nested_layout_loads_and_a_missing_part_is_refused(tmp_path, monkeypatch):
    src = rcm.CROMA(TINY.params)
    for p in src.parameters():
        torch.nn.init.normal_(p, std=0.05)
    variant = _serve(tmp_path, monkeypatch, _nested(src), "4" * 40)
    with offline_hub(tmp_path / "hub"):
        emb = TinyCROMA(variant)
        emb.load()
    for k, v in src.state_dict().items():
        assert torch.equal(emb.model.state_dict()[k], v), k
    partial = {k: v for k, v in _nested(src).items() if k != "joint_encoder"}
    variant = _serve(tmp_path, monkeypatch, partial, "6" * 40)
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError, match="joint_encoder.layers.0"):
        TinyCROMA(variant).load()


def test_a_checkpoint_with_non_tensor_entries_is_refused(tmp_path, monkeypatch):
    bad = {**_nested(rcm.CROMA(TINY.params)), "epoch": 300}
    variant = _serve(tmp_path, monkeypatch, bad, "8" * 40)
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError, match="'epoch' is a int"):
        TinyCROMA(variant).load()


def test_missing_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        rc.CROMA(rc.BASE).load()
    assert "torchgeo/croma" in str(err.value) and "CROMA_base-0238d814.pt" in str(err.value)


def test_embedder_contract_on_random_weights(tiny_registered, tmp_path):
    with random_weights("croma_tiny_test", "tiny", tmp_path, seed=0):
        report = check_embedder_contract("croma_tiny_test", variant="tiny")
    assert report.pooled_dim == 32 and report.grid_shapes == ((32, 15, 15), (32, 15, 15))
    assert "batch == single (grid)" in report.checks


def _expected(net: rcm.CROMA, provider: FakeProvider, sensors: tuple[SensorSpec, ...]) -> tuple[np.ndarray, str]:
    """What the runner should compute: fetch each sensor on the ROI's grid, bands concatenated in
    request order, the card's chain, then the encoder the bands select."""
    grid = grid_for(ROI, 10)
    rasters = [provider.fetch(FetchRequest(grid, WHEN, s)) for s in sensors]
    merged = rasters[0].replace(data=np.concatenate([r.data for r in rasters], axis=1),
                                bands=tuple(b for r in rasters for b in r.bands))
    prepped = apply_chain(merged, rc.CROMA.card.preprocessing)
    x = torch.from_numpy(prepped.data)
    mode = rc.mode_of(prepped.bands)
    with torch.inference_mode():
        if mode == "optical":
            pooled, _ = net.optical(x)
        elif mode == "sar":
            pooled, _ = net.sar(x)
        else:
            pooled, _ = net.joint(x[:, :12], x[:, 12:])
    return pooled[0].numpy(), mode


@pytest.mark.parametrize("sensors", [(S2,), (S1,), (S2, S1), (S1, S2)],
                         ids=["optical", "sar", "joint", "joint-sar-first"])
def test_the_request_sensors_choose_the_encoder(tiny_registered, tmp_path, sensors):
    """Through get_embedding: S2 -> optical, S1 -> SAR, a multi-sensor request (either order) -> joint,
    each equal to that encoder run on the same preprocessed pixels."""
    from rs_embed import get_embedding
    from rs_embed_core.runner import load_embedder

    provider = DbFake(bands=PROVIDER_BANDS)
    with random_weights("croma_tiny_test", "tiny", tmp_path, seed=1):
        emb = get_embedding("croma_tiny_test", ROI, WHEN, OutputSpec.pooled(), backend=provider, device="cpu",
                            sensor=sensors if len(sensors) > 1 else sensors[0])
        net = load_embedder(TinyCROMA, TinyCROMA.card.variant("tiny"), "cpu").model
    expected, mode = _expected(net, provider, sensors)
    assert mode == {1: "optical" if sensors[0] is S2 else "sar", 2: "joint"}[len(sensors)]
    assert emb.data.shape == (32,)
    np.testing.assert_allclose(emb.data, expected, rtol=1e-5, atol=1e-5)
    if mode == "joint":  # and the joint embedding differs from the optical one of the same place
        optical, _ = _expected(net, provider, (S2,))
        assert np.abs(emb.data - optical).max() > 1e-3


def test_joint_grid_through_the_api(tiny_registered, tmp_path):
    from rs_embed import get_embedding

    with random_weights("croma_tiny_test", "tiny", tmp_path, seed=2):
        emb = get_embedding("croma_tiny_test", ROI, WHEN, OutputSpec.grid(), backend=DbFake(bands=PROVIDER_BANDS),
                            device="cpu", sensor=(S2, S1))
    assert emb.data.shape == (32, 15, 15) and np.isfinite(emb.data).all()
    assert [s["collection"] for s in emb.meta["sensor"]] == [rc.OPTICAL_COLLECTION, rc.SAR_COLLECTION]


def test_an_incomplete_band_group_is_a_clear_error(tiny_registered, tmp_path):
    from rs_embed import get_embedding

    only_vv = SensorSpec(rc.SAR_COLLECTION, ("VV",), 10)
    with random_weights("croma_tiny_test", "tiny", tmp_path), pytest.raises(SpecError, match=r"lacks \['VH'\]"):
        get_embedding("croma_tiny_test", ROI, WHEN, backend=DbFake(bands=PROVIDER_BANDS), device="cpu", sensor=only_vv)


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_croma, rs_embed; assert 'croma' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
