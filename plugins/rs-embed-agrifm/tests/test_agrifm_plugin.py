"""The AgriFM card and chain, request checks (frame range, bands, weights), strict loading, the contract, and the
full-size encoder loaded strictly from a checkpoint in the authors' layout through the public `weights=` path."""

from __future__ import annotations

import datetime as dt
import gc
import json

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.card import WeightsSpec
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.grid import GridSpec
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.raster import Raster
from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing import (FakeProvider, check_embedder_contract, check_strict_loading, random_state,
                                   random_weights, registered)
from rs_embed_core.weights import CACHE_ENV

import rs_embed_agrifm as ra
import rs_embed_agrifm_model as ram

PLACEHOLDER = WeightsSpec("local/agrifm", "0" * 40, "AgriFM.pth", "0" * 64, "apache-2.0")
TINY_PARAMS = {**ra.S2, "embed_dim": 8, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2]}
TINY = attrs.evolve(ra.VARIANTS[0], name="tiny", pooled_dim=64, grid_dim=64, weights=PLACEHOLDER, params=TINY_PARAMS)
WHEN = TemporalSpec.range("2022-03-01", "2022-11-01")


class TinyAgriFM(ra.AgriFM):
    card = attrs.evolve(ra.AgriFM.card, id="agrifm_tiny_test", variants=(TINY,), default_variant="tiny")


def test_card_describes_the_authors_input_and_no_default_weights():
    card = ra.AgriFM.card
    json.dumps(card.describe())
    assert card.id == "agrifm" and card.variant().name == "s2" and card.variant().weights is None
    assert card.input.bands == ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
    assert card.input.frames == 8 and card.input.composite == "median" and card.input.image_size == 256
    assert card.input.gsd_m == 10.0 and "Apache-2.0" in card.license and "OneDrive" in card.notes
    params = card.variant().params
    assert params["patch_size"] == [4, 2, 2] and params["window"] == [8, 7, 7] and params["depths"] == [2, 2, 18, 2]


def test_chain_normalises_with_the_config_statistics():
    dn = np.array([500.0, 800.0, 700.0, 1200.0, 2500.0, 2900.0, 3000.0, 3100.0, 2000.0, 1200.0])
    h = w = 30
    data = np.broadcast_to(dn.reshape(1, -1, 1, 1), (8, 10, h, w)).astype(np.float32)
    valid = np.ones((8, h, w), bool)
    valid[3] = False  # an empty frame
    raster = Raster(data, ra.BANDS, GridSpec("EPSG:32650", 400000.0, 3500000.0, 10.0, w, h),
                    tuple(dt.datetime(2022, 3 + k, 15) for k in range(8)), valid)
    out = apply_chain(raster, ra.AgriFM.card.preprocessing)
    assert out.shape == (8, 10, 256, 256) and out.bands == ra.BANDS
    np.testing.assert_allclose(out.data[0, :, 128, 128], (dn - np.array(ra.MEAN)) / np.array(ra.STD), rtol=1e-5)
    assert np.all(out.data[3] == 0.0)  # the empty frame is the band mean


def _sensor(frames: int = 8, composite: str = "median", bands=ra.BANDS) -> SensorSpec:
    return SensorSpec(ra.COLLECTION, bands, 10.0, composite=composite, frames=frames)


@pytest.mark.parametrize("frames", [1, 8, 32])
def test_frame_counts_in_range_are_accepted(frames):
    var = attrs.evolve(ra.VARIANTS[0], weights=PLACEHOLDER)
    ra.AgriFM.check_request(var, (_sensor(frames),), ra.AgriFM.card.preprocessing)


def test_requests_that_do_not_fit_are_refused_before_any_fetch():
    var = attrs.evolve(ra.VARIANTS[0], weights=PLACEHOLDER)
    with pytest.raises(SpecError, match="1..32 frames"):
        ra.AgriFM.check_request(var, (_sensor(33),), ra.AgriFM.card.preprocessing)
    with pytest.raises(SpecError, match="composite='none'"):
        ra.AgriFM.check_request(var, (_sensor(composite="none"),), ra.AgriFM.card.preprocessing)
    with pytest.raises(SpecError, match="in this order"):
        ra.AgriFM.check_request(var, (_sensor(bands=ra.BANDS[::-1]),), ())
    with pytest.raises(WeightsError, match="OneDrive"):
        ra.AgriFM.check_request(ra.VARIANTS[0], (_sensor(),), ra.AgriFM.card.preprocessing)


def test_too_many_frames_through_the_api_fails_before_fetching(tiny_model):
    from rs_embed import get_embedding

    provider = FakeProvider()
    with pytest.raises(SpecError, match="1..32 frames"):
        get_embedding(tiny_model.card.id, spatial=PointBuffer(116.4, 39.9, 1280), temporal=WHEN, backend=provider,
                      sensor=_sensor(40), output=OutputSpec.pooled(), device="cpu")
    assert provider.calls == 0


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    report = check_strict_loading(TinyAgriFM, "tiny", tmp_path)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)


@pytest.fixture
def tiny_model(tmp_path):
    with registered(TinyAgriFM):
        with random_weights(TinyAgriFM, "tiny", tmp_path, seed=4):
            yield TinyAgriFM


def test_embedder_contract_through_the_public_api(tiny_model):
    provider = FakeProvider()
    report = check_embedder_contract(tiny_model, provider=provider, temporal=WHEN)
    assert report.pooled_dim == 64 and report.grid_shapes == ((64, 16, 16), (64, 16, 16))
    assert "batch == single (grid)" in report.checks
    assert all(r.sensor.frames == 8 for r in provider.requests)  # the card's frame count reaches the provider


def test_full_size_checkpoint_in_the_authors_layout_loads_strictly_and_embeds(tmp_path, monkeypatch):
    """A random AgriFM.pth laid out as the authors' loader reads it (mmengine `state_dict`, `module.` prefix,
    `S2_patch_emd`, the Landsat / MODIS patch embeddings, stored index buffers) through `weights=`."""
    from rs_embed import get_embedding
    from rs_embed_core.runner import clear_model_cache, load_embedder
    from rs_embed_core.weights import local_weights

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in ram.AgriFMEncoder(ra.S2).state_dict().items()}
    sd = random_state(shapes, seed=5)
    assert sum(int(np.prod(s)) for s in shapes.values()) > 80e6  # a Swin-B-sized backbone
    file_sd = {f"module.{k.replace('patch_emd.', 'S2_patch_emd.', 1) if k.startswith('patch_emd.') else k}": v
               for k, v in sd.items()}
    file_sd["module.HLSL30_patch_emd.proj.weight"] = torch.zeros(128, 6, 4, 2, 2)
    file_sd["module.Modis_patch_emd.proj.weight"] = torch.zeros(128, 7, 4, 2, 2)
    file_sd["module.backbone.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(392, 392, dtype=torch.long)
    path = tmp_path / "AgriFM.pth"
    torch.save({"state_dict": file_sd, "meta": {"epoch": 50, "mmengine_version": "0.10.3"}}, path)
    del file_sd
    gc.collect()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    try:
        with registered(ra.AgriFM):
            emb = get_embedding("agrifm", PointBuffer(116.4, 39.9, 1280), WHEN, OutputSpec.grid(),
                                backend=FakeProvider(), device="cpu", weights=path)
            net = load_embedder(ra.AgriFM, attrs.evolve(ra.VARIANTS[0], weights=local_weights(path)), "cpu").net
        path.unlink()
        assert emb.data.shape == (1024, 16, 16) and np.isfinite(emb.data).all()
        assert emb.meta["weights"]["sha256"] and emb.meta["variant"] == "s2"
        loaded = net.state_dict()
        assert set(loaded) == set(sd) and all(torch.equal(loaded[k], sd[k]) for k in sd)
    finally:
        clear_model_cache()


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, rs_embed_agrifm, rs_embed; assert 'agrifm' in rs_embed.list_models(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
