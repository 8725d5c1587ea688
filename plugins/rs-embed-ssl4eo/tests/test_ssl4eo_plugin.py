"""SSL4EO card (pins, licence, variants), chain, band checks, strict loading, the contract, MAE weights= path."""

from __future__ import annotations

import json
import re

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.grid import GridSpec
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.raster import Raster
from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing import (
    FakeProvider,
    check_embedder_contract,
    build_hf_cache,
    check_strict_loading,
    fake_hub_lfs,
    file_sha256,
    offline_hub,
    random_weights,
    random_weights_file,
    registered,
)
from rs_embed_core.weights import CACHE_ENV

import rs_embed_ssl4eo as rs4
import rs_embed_ssl4eo_model as rs4m

TINY_PARAMS = {**rs4.SSL4EO.card.variant().params, "embed_dim": 48, "depth": 1, "heads": 12}
TINY = attrs.evolve(rs4.SSL4EO.card.variant(), name="tiny", pooled_dim=48, grid_dim=48, params=TINY_PARAMS)
TINY_MAE = attrs.evolve(rs4.SSL4EO.card.variant("vit_small_mae"), name="tiny_mae", pooled_dim=48, grid_dim=48,
                        params={**TINY_PARAMS, "heads": 6})
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")
ROI = PointBuffer(11.6, 48.1, 1120)


class TinySSL4EO(rs4.SSL4EO):
    card = attrs.evolve(rs4.SSL4EO.card, id="ssl4eo_tiny_test", aliases=(), variants=(TINY, TINY_MAE),
                        default_variant="tiny")


@pytest.fixture
def tiny_registered():
    with registered(TinySSL4EO):
        yield TinySSL4EO


def test_card_pins_weights_to_lfs_digests_and_states_the_licence():
    card = rs4.SSL4EO.card
    json.dumps(card.describe())
    moco, dino = card.variant("vit_small_moco").weights, card.variant("vit_small_dino").weights
    for w, rev in ((moco, "1cb683f6c14739634cdfaaceb076529adf898c74"), (dino, "5b41dd418a79de47ac9f5be3e035405a83818a62")):
        assert w.revision == rev and len(w.sha256) == 64 and w.license == "cc-by-4.0"
        assert w.filename.endswith(f"-{w.sha256[:8]}.pth")  # torchgeo's file-name suffix is the digest's prefix
    assert [v.name for v in card.variants] == ["vit_small_moco", "vit_small_dino", "vit_small_mae", "vit_base_mae",
                                               "vit_large_mae"]
    assert [v.pooled_dim for v in card.variants] == [384, 384, 384, 768, 1024]
    assert card.variant("vit_small_moco").params["heads"] == 12 and card.variant("vit_small_dino").params["heads"] == 6
    for n, filename in rs4.MAE_FILES.items():  # pinned by the commit; digest read from it (from_revision)
        w = card.variant(n).weights
        assert (w.repo_id, w.revision, w.filename) == ("wangyi111/SSL4EO-S12", rs4.MAE_SOURCE[1], filename)
        assert re.fullmatch(r"[0-9a-f]{40}", w.revision) and w.digest_from_revision and w.license == "cc-by-4.0"
    assert card.input.bands == rs4.S2_BANDS and "CC-BY-4.0" in card.license


def test_module_hook_registers_the_embedder():
    got: list[type] = []
    rs4.register_embedders(register=got.append)
    assert got == [rs4.SSL4EO]


def test_chain_is_dn_over_10000_clipped_then_resized():
    import torchvision.transforms.v2.functional as TF

    dn = np.random.default_rng(0).uniform(0, 12000, (1, 13, 112, 112)).astype(np.float32)
    raster = Raster(dn, rs4.S2_BANDS, GridSpec("EPSG:32632", 690000.0, 5340000.0, 10.0, 112, 112), (None,),
                    np.ones((1, 112, 112), bool))
    out = apply_chain(raster, rs4.SSL4EO.card.preprocessing)
    x = torch.from_numpy(np.clip(dn[0] * np.float32(1e-4), 0, 1))
    x = TF.resize(x, [224, 224], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    np.testing.assert_allclose(out.data[0], x.numpy(), atol=2e-6)
    # what the weights were trained on: uint8(DN / 10000 * 255) / 255, within one 8-bit step below DN <= 10000
    ok = dn[0] <= 10000
    trained = (dn[0] / 10000.0 * 255.0).astype(np.uint8) / 255.0
    assert np.all((np.clip(dn[0] * 1e-4, 0, 1) - trained)[ok] < 1 / 255 + 1e-6)


@pytest.mark.parametrize("sensor", [
    SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11",
                                               "B12"), 10),
    SensorSpec(rs4.S2_COLLECTION, ("B4", "B3", "B2"), 10),
    SensorSpec(rs4.S2_COLLECTION, tuple(reversed(rs4.S2_BANDS)), 10),
])
def test_other_band_sets_are_refused_before_any_fetch(tiny_registered, sensor):
    from rs_embed import get_embedding

    provider = FakeProvider(bands=rs4.S2_BANDS + ("QA60", "SCL"))
    with pytest.raises(SpecError, match="13 Sentinel-2 L1C bands"):
        get_embedding("ssl4eo_tiny_test", ROI, WHEN, backend=provider, sensor=sensor)
    assert provider.calls == 0


def test_public_api_equals_the_network_on_the_preprocessed_pixels(tiny_registered, tmp_path):
    from rs_embed import get_embedding
    from rs_embed_core.grid import grid_for
    from rs_embed_core.providers import FetchRequest
    from rs_embed_core.runner import load_embedder

    provider = FakeProvider(bands=rs4.S2_BANDS)
    with random_weights("ssl4eo_tiny_test", "tiny", tmp_path, seed=1):
        emb = get_embedding("ssl4eo_tiny_test", ROI, WHEN, OutputSpec.grid(), backend=provider, device="cpu")
        net = load_embedder(TinySSL4EO, TinySSL4EO.card.variant("tiny"), "cpu").net
    s = SensorSpec(rs4.S2_COLLECTION, rs4.S2_BANDS, 10)
    pre = apply_chain(provider.fetch(FetchRequest(grid_for(ROI, 10.0), WHEN, s)), rs4.SSL4EO.card.preprocessing)
    with torch.inference_mode():
        expected = rs4m.embed(net, torch.from_numpy(pre.data))[1][0].numpy()
    assert emb.data.shape == (48, 14, 14)
    np.testing.assert_allclose(emb.data, expected, rtol=1e-5, atol=1e-5)


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    keys = {k: tuple(v.shape) for k, v in rs4m.build_net(TINY_PARAMS).state_dict().items()}
    keys["head.weight"] = (10, 48)  # a classifier head, if present, is dropped by name
    report = check_strict_loading(TinySSL4EO, "tiny", tmp_path, state_dict=keys)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)


def test_embedder_contract_on_random_weights(tiny_registered, tmp_path):
    with random_weights("ssl4eo_tiny_test", "tiny", tmp_path, seed=0):
        report = check_embedder_contract("ssl4eo_tiny_test", variant="tiny", provider=FakeProvider(bands=rs4.S2_BANDS))
    assert report.pooled_dim == 48 and report.grid_shapes == ((48, 14, 14), (48, 14, 14))
    assert "batch == single (grid)" in report.checks


def test_mae_variant_default_weights_use_the_commits_lfs_digest_and_weights_path_still_works(
        tiny_registered, tmp_path, monkeypatch):
    from rs_embed import get_embedding
    from rs_embed_core.export import ModelRequest, export_batch

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    w = rs4.MAE_WEIGHTS["vit_small_mae"]
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError, match="not recorded on this machine") as err:
        rs4.SSL4EO(rs4.SSL4EO.card.variant("vit_small_mae")).load()
    assert w.filename in str(err.value) and w.revision in str(err.value)
    path = random_weights_file(rs4m.build_net(TINY_MAE.params), tmp_path / w.filename, seed=3)
    # first load with Hub access (metadata faked): the LFS digest of the pinned commit checks the file ...
    monkeypatch.setenv("RS_EMBED_WEIGHTS_DIR", str(tmp_path))  # $RS_EMBED_WEIGHTS_DIR/<filename>
    with fake_hub_lfs({(w.repo_id, w.revision, w.filename): file_sha256(path)}) as calls:
        rs4.SSL4EO(TINY_MAE).load()
    assert calls == [(w.repo_id, w.revision, w.filename)]
    # ... and is recorded: offline, the default tiny MAE variant runs from the Hub cache
    build_hf_cache(tmp_path / "hub", w.repo_id, w.revision, {w.filename: path})
    with offline_hub(tmp_path / "hub"):
        emb = get_embedding("ssl4eo_tiny_test", ROI, WHEN, backend=FakeProvider(bands=rs4.S2_BANDS), device="cpu",
                            variant="tiny_mae")
        assert emb.data.shape == (48,) and np.isfinite(emb.data).all()
        mine = get_embedding("ssl4eo_tiny_test", ROI, WHEN, backend=FakeProvider(bands=rs4.S2_BANDS), device="cpu",
                             variant="tiny_mae", weights=str(path))  # weights= (your own file) still works
        export_batch([ROI], WHEN, [ModelRequest("ssl4eo_tiny_test", variant="tiny_mae")], tmp_path / "out",
                     backend=FakeProvider(bands=rs4.S2_BANDS), device="cpu", progress=False)
    np.testing.assert_array_equal(emb.data, mine.data)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    recorded = manifest["models"]["ssl4eo_tiny_test-tiny_mae"]["weights"]  # the digest the file was verified against
    assert (recorded["revision"], recorded["sha256"]) == (w.revision, file_sha256(path))


def test_missing_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    w = rs4.SSL4EO.card.variant().weights
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        rs4.SSL4EO(rs4.SSL4EO.card.variant()).load()
    assert w.repo_id in str(err.value) and w.filename in str(err.value)


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_ssl4eo, rs_embed; assert 'ssl4eo' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
