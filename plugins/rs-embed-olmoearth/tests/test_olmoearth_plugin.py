"""The OlmoEarth card, its constants, side inputs, strict loading (full-size default), the contract."""

from __future__ import annotations

import datetime as dt
import json

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.plugins import pm
from rs_embed_core.providers import FetchRequest
from rs_embed_core.raster import Raster
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

import rs_embed_olmoearth as ro
import rs_embed_olmoearth_model as rom

NANO = ro.OlmoEarth.card.variant("v1.2-nano")


class NanoOlmoEarth(ro.OlmoEarth):
    card = attrs.evolve(ro.OlmoEarth.card, id="olmoearth_nano_test", variants=(NANO,), default_variant=NANO.name)


@pytest.fixture
def nano_registered():
    with registered(NanoOlmoEarth):
        yield NanoOlmoEarth


def test_card_describes_variants_inputs_and_weights():
    card = ro.OlmoEarth.card
    d = card.describe()
    json.dumps(d)
    assert d["id"] == "olmoearth" and card.variant().name == "v1.2-base"
    assert [v.name for v in card.variants] == [f"{v}-{s}" for v in ("v1", "v1.1", "v1.2") for s in ("nano", "tiny", "base")]
    for v in card.variants:
        w = v.weights
        assert w.filename == "weights.pth" and len(w.sha256) == 64 and len(w.revision) == 40
        assert w.repo_id == f"allenai/OlmoEarth-{v.params['model_version'].replace('.', '_')}-{v.params['model_size'].title()}"
    assert len({v.weights.sha256 for v in card.variants}) == 9
    assert card.input.frames == 12 and card.input.collection == "COPERNICUS/S2_SR_HARMONIZED"
    assert [s.name for s in card.preprocessing] == ["select_bands", "normalize", "fill_invalid", "resize"]


def test_statistics_and_band_order_are_the_packages():
    pytest.importorskip("olmoearth_pretrain_minimal")
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.data.normalize import load_computed_config
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality

    stats = load_computed_config()["sentinel2_l2a"]
    order = Modality.SENTINEL2_L2A.band_order
    assert ro.S2_MEAN == tuple(stats[b]["mean"] for b in order)
    assert ro.S2_STD == tuple(stats[b]["std"] for b in order)
    assert [f"B{int(b[1:]):02d}" if b[1:].isdigit() else f"B{b[1:]}" for b in ro.BANDS] == order


def test_variant_dims_match_the_constructor():
    from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1

    for v in ro.OlmoEarth.card.variants:
        with torch.device("meta"):
            enc = OlmoEarthPretrain_v1(model_size=v.params["model_size"], model_version=v.params["model_version"]).model.encoder
        assert enc.embedding_size == v.pooled_dim == v.grid_dim


def test_timestamps_are_day_zero_based_month_year():
    when = ((dt.datetime(2022, 1, 31), dt.date(2022, 12, 1)), (dt.datetime(2021, 6, 15), dt.datetime(2021, 7, 15)))
    assert ro.timestamps(when).tolist() == [[[31, 0, 2022], [1, 11, 2022]], [[15, 5, 2021], [15, 6, 2021]]]
    with pytest.raises(SpecError, match="date of every frame"):
        ro.timestamps(((dt.datetime(2022, 1, 1), None),))


def test_token_mask_policy():
    valid = np.ones((1, 3, 8, 8), bool)
    valid[0, 1] = False  # an empty bin
    valid[0, 0, :4, :4] = False  # a patch clouded in frame 0 ...
    valid[0, 2, :4, :4] = False  # ... and frame 2: only frame 1 is empty there too -> never seen
    valid[0, 0, 4:6, 4:6] = False  # a quarter patch: still visible
    m = ro.token_missing(valid, 4)
    assert m.shape == (1, 3, 2, 2)
    assert m[0, 1, 0, 1] and m[0, 1, 1, 1] and m[0, 1, 1, 0]
    assert not m[0, :, 0, 0].any()  # never observed: kept visible
    assert not m[0, 0, 1, 1] and not m[0, 0].any() and not m[0, 2].any()
    with pytest.raises(SpecError, match="4-pixel patches"):
        ro.token_missing(np.ones((1, 1, 6, 8), bool), 4)


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    report = check_strict_loading(NanoOlmoEarth, NANO.name, tmp_path)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)
    assert report.keys == len(rom.new_encoder(NANO.params).state_dict())


def test_full_size_default_loads_strictly_from_the_checkpoint_layout(tmp_path, monkeypatch):
    """The default variant at full size, from a file laid out like the released weights.pth (the whole
    LatentMIM: encoder, decoder, target encoder, plus the legacy time table), through the offline Hub."""
    from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1

    var = ro.OlmoEarth.card.variant()
    with torch.device("meta"):
        full = OlmoEarthPretrain_v1(model_size=var.params["model_size"], model_version=var.params["model_version"])
        shapes = {k: tuple(v.shape) for k, v in full.model.state_dict().items()}
    assert {k.split(".")[0] for k in shapes} == {"encoder", "decoder", "target_encoder"}
    shapes["encoder.composite_encodings.pos_embed"] = (12, 192)
    src = random_weights_file(shapes, tmp_path / "files" / "weights.pth", seed=3)
    rev = "5" * 40
    spec = weights_spec_for(var.weights.repo_id, rev, "weights.pth", src)
    build_hf_cache(tmp_path / "hub", var.weights.repo_id, rev, {"weights.pth": src})
    src.unlink()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    with offline_hub(tmp_path / "hub"):
        emb = ro.OlmoEarth(attrs.evolve(var, weights=spec))
        emb.load()
    enc = emb.model.encoder
    assert sum(p.numel() for p in enc.parameters()) > 100e6  # the full base encoder, not a stand-in
    first = next(k for k in shapes if k.startswith("encoder.blocks.0."))
    loaded = enc.state_dict()[first.removeprefix("encoder.")]
    assert loaded.std().item() == pytest.approx(0.02, rel=0.2) and loaded.abs().max() > 0  # random file, not init


def test_a_checkpoint_missing_an_encoder_key_is_refused(tmp_path, monkeypatch):
    from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1

    with torch.device("meta"):
        sd = {k: tuple(v.shape) for k, v in OlmoEarthPretrain_v1(model_size="nano", model_version="v1.2").model.state_dict().items()}
    gone = "encoder.norm.weight"
    del sd[gone]
    src = random_weights_file(sd, tmp_path / "weights.pth")
    spec = weights_spec_for(NANO.weights.repo_id, "4" * 40, "weights.pth", src)
    build_hf_cache(tmp_path / "hub", NANO.weights.repo_id, "4" * 40, {"weights.pth": src})
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError, match="norm.weight"):
        ro.OlmoEarth(attrs.evolve(NANO, weights=spec)).load()


def test_missing_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        ro.OlmoEarth(ro.OlmoEarth.card.variant()).load()
    assert "allenai/OlmoEarth-v1_2-Base" in str(err.value) and "weights.pth" in str(err.value)


class CloudyProvider(FakeProvider):
    """FakeProvider whose composites have an empty bin (frame 3) and a clouded corner (frame 0)."""

    def fetch(self, request: FetchRequest) -> Raster:
        r = super().fetch(request)
        valid = r.valid.copy()
        valid[3] = False
        valid[0, :20, :20] = False
        data = np.where(valid[:, None], r.data, np.float32(request.sensor.fill_value))
        return r.replace(data=data, valid=valid, meta={"empty_frames": [3]})


@pytest.mark.parametrize("provider", [FakeProvider(), CloudyProvider()], ids=["clear", "empty-bin-and-cloud"])
def test_embedder_contract_on_random_weights(nano_registered, tmp_path, provider):
    from rs_embed_core.specs import TemporalSpec

    with random_weights("olmoearth_nano_test", NANO.name, tmp_path, seed=0):
        report = check_embedder_contract("olmoearth_nano_test", provider=provider,
                                         temporal=TemporalSpec.year(2022))
    assert report.pooled_dim == 128 and report.grid_shapes == ((128, 16, 16), (128, 16, 16))
    assert "batch == single (grid)" in report.checks


def test_frames_dates_and_bands_through_the_public_api(nano_registered, tmp_path):
    """12 frames of a year arrive with their bin-centre dates; other frame counts and band orders are refused."""
    from rs_embed import get_embedding
    from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec

    roi, year = PointBuffer(12.5, 41.9, 320), TemporalSpec.year(2022)
    seen = {}
    original = NanoOlmoEarth.forward

    def spy(self, x, ctx):
        seen["times"], seen["shape"] = ctx.times, tuple(x.shape)
        return original(self, x, ctx)

    with random_weights("olmoearth_nano_test", NANO.name, tmp_path), pytest.MonkeyPatch.context() as mp:
        mp.setattr(NanoOlmoEarth, "forward", spy)
        emb = get_embedding("olmoearth_nano_test", roi, year, OutputSpec.grid(), backend=FakeProvider(), device="cpu")
        assert emb.data.shape == (128, 16, 16) and seen["shape"] == (1, 12, 12, 64, 64)
        months = [t.month for t in seen["times"][0]]
        assert months == list(range(1, 13))
        too_many = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ro.BANDS, 10, frames=13)
        with pytest.raises(SpecError, match="at most 12 frames"):
            get_embedding("olmoearth_nano_test", roi, year, backend=FakeProvider(), device="cpu", sensor=too_many)
        shuffled = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ro.BANDS[::-1], 10, frames=12)
        with pytest.raises(SpecError, match="band order"):
            get_embedding("olmoearth_nano_test", roi, year, backend=FakeProvider(), device="cpu", sensor=shuffled,
                          preprocessing=[("resize", {"size": 64})])


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_olmoearth, rs_embed; assert 'olmoearth' in rs_embed.list_models(); "
            "print('torch' in sys.modules, 'olmoearth_pretrain_minimal' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"
