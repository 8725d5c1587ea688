"""The DOFA card, its chain, registration, strict loading, the contract and any-sensor use via the public API."""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.card import ModelCard
from rs_embed_core.collections import known_collection
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.grid import GridSpec
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.plugins import pm
from rs_embed_core.preprocess import apply_chain
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

import rs_embed_dofa as rd
import rs_embed_dofa_model as rdm

TINY = attrs.evolve(rd.BASE, name="tiny", pooled_dim=32, grid_dim=32,
                    params={**rd.BASE.params, "embed_dim": 32, "depth": 1, "heads": 2})
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")
LANDSAT = SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4", "SR_B3", "SR_B2", "SR_B5"), 30)
LANDSAT_CHAIN = [("scale", {"factor": 2.75e-5, "offset": -0.2}), ("resize", {"size": 224, "method": "bilinear"})]


class TinyDOFA(rd.DOFA):
    card = attrs.evolve(rd.DOFA.card, id="dofa_tiny_test", aliases=(), variants=(TINY,), default_variant="tiny")


@pytest.fixture
def tiny_registered():
    with registered(TinyDOFA):
        yield TinyDOFA


def test_card_describes_variants_chain_and_outputs():
    card = rd.DOFA.card
    d = card.describe()
    json.dumps(d)
    assert d["id"] == "dofa" and [v["name"] for v in d["variants"]] == ["base", "large"] and d["variants"][0]["default"]
    for v in card.variants:
        assert v.weights.repo_id == "torchgeo/dofa" and v.weights.revision == rd.REVISION
        assert v.weights.sha256.startswith(v.weights.filename.rsplit("-", 1)[1].removesuffix(".pth"))
        assert len(v.weights.sha256) == 64 and v.weights.license == "cc-by-4.0"
    assert (card.variant("base").pooled_dim, card.variant("large").grid_dim) == (768, 1024)
    assert [s.name for s in card.preprocessing] == ["select_bands", "to_8bit", "resize", "normalize"]
    assert card.input.bands == rd.S2_BANDS and card.input.collection == "COPERNICUS/S2_HARMONIZED"
    assert all(known_collection(card.input.collection).band(b).center_nm for b in card.input.bands)
    assert "wavelength" in " ".join(card.side_inputs)


def test_module_hook_registers_the_embedder():
    got: list[type] = []
    rd.register_embedders(register=got.append)
    assert got == [rd.DOFA]


def _raster(dn: np.ndarray, bands: tuple[str, ...], size: int = 224) -> Raster:
    data = np.broadcast_to(dn.astype(np.float32)[None, :, None, None], (1, len(bands), size, size))
    grid = GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, size, size)
    return Raster(data, bands, grid, (None,), np.ones((1, size, size), bool))


def test_chain_is_satlas_8bit_then_the_authors_statistics():
    """B4/B3/B2 as DN/2500*255 (TCI emulation), the rest DN/8160*255 (Satlas' DN//32), saturating at
    255, then (x - S2_MEAN) / S2_STD; bands reordered to the authors' order whatever the fetch order."""
    fetched = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12", "B8A")  # not the model's order
    dn = np.array([500, 1000, 1250, 816, 1632, 4080, 8160, 9999, 100, 3000], float)
    out = apply_chain(_raster(dn, fetched), rd.DOFA.card.preprocessing)
    assert out.bands == rd.S2_BANDS and out.shape == (1, 9, 224, 224)
    by_name = dict(zip(fetched, dn))
    eight = np.array([min(by_name[b] / (2500 if b in ("B4", "B3", "B2") else 8160), 1.0) * 255 for b in rd.S2_BANDS])
    expected = (eight - np.array(rd.S2_MEAN)) / np.array(rd.S2_STD)
    np.testing.assert_allclose(out.data[0, :, 100, 100], expected, rtol=1e-5, atol=1e-5)
    assert eight[0] == 127.5 and eight[6] == 255.0 and eight[7] == 255.0  # B4 1250 -> 127.5; B8 saturates


def test_default_chain_refuses_other_sensors_clearly():
    with pytest.raises(SpecError, match="B4"):
        apply_chain(_raster(np.ones(4), LANDSAT.bands, 32), rd.DOFA.card.preprocessing)


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    report = check_strict_loading(TinyDOFA, "tiny", tmp_path)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)
    assert report.keys == len(rdm.DOFA(TINY.params).state_dict())


def test_an_mae_checkpoint_with_its_norm_and_decoder_is_refused(tmp_path, monkeypatch):
    """The authors' raw MAE file holds mask_token / norm / projector too: strict loading names them."""
    sd = rdm.DOFA(TINY.params).state_dict()
    sd.update({"mask_token": torch.zeros(1, 1, 32), "norm.weight": torch.ones(32), "norm.bias": torch.zeros(32)})
    path = random_weights_file(sd, tmp_path / TINY.weights.filename)
    spec = weights_spec_for(rd.REPO_ID, "3" * 40, path.name, path)
    build_hf_cache(tmp_path / "hub", rd.REPO_ID, "3" * 40, {path.name: path})
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError, match="mask_token") as err:
        TinyDOFA(attrs.evolve(TINY, weights=spec)).load()
    assert "norm.weight" in str(err.value)


def test_missing_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        rd.DOFA(rd.BASE).load()
    assert "torchgeo/dofa" in str(err.value) and "dofa_base_patch16_224-a0275954.pth" in str(err.value)


def test_embedder_contract_on_random_weights(tiny_registered, tmp_path):
    with random_weights("dofa_tiny_test", "tiny", tmp_path, seed=0):
        report = check_embedder_contract("dofa_tiny_test", variant="tiny")
    assert report.pooled_dim == 32 and report.grid_shapes == ((32, 14, 14), (32, 14, 14))
    assert "batch == single (grid)" in report.checks


def test_any_sensor_through_the_public_api(tiny_registered, tmp_path):
    """A Landsat request embeds with Landsat's wavelengths: equal to the network run on the same
    preprocessed pixels with those wavelengths, and different from running it with Sentinel-2's."""
    from rs_embed import get_embedding

    provider = FakeProvider(bands=known_collection(LANDSAT.collection).band_names)
    roi = PointBuffer(121.5, 31.2, 30 * 112)
    with random_weights("dofa_tiny_test", "tiny", tmp_path, seed=1):
        emb = get_embedding("dofa_tiny_test", roi, WHEN, OutputSpec.pooled(), backend=provider, device="cpu",
                            sensor=LANDSAT, preprocessing=LANDSAT_CHAIN)
        from rs_embed_core.runner import load_embedder

        net = load_embedder(TinyDOFA, TinyDOFA.card.variant("tiny"), "cpu").model
    assert emb.data.shape == (32,) and emb.meta["sensor"]["collection"] == LANDSAT.collection
    from rs_embed_core.grid import grid_for
    from rs_embed_core.providers import FetchRequest

    raster = provider.fetch(FetchRequest(grid_for(roi, 30), WHEN, LANDSAT))
    x = torch.from_numpy(apply_chain(raster, LANDSAT_CHAIN).data)
    landsat = torch.tensor(rd.wavelengths_um(LANDSAT.collection, LANDSAT.bands))
    sentinel = torch.tensor(rd.wavelengths_um("COPERNICUS/S2_HARMONIZED", ("B4", "B3", "B2", "B8")))
    with torch.inference_mode():
        expected = net(x, landsat)[0][0].numpy()
        other = net(x, sentinel)[0][0].numpy()
    np.testing.assert_allclose(emb.data, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(emb.data - other).max() > 1e-3


def test_unknown_wavelength_is_a_clear_error(tiny_registered, tmp_path):
    from rs_embed import get_embedding

    qa = SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4", "QA_PIXEL"), 30)
    provider = FakeProvider(bands=known_collection(qa.collection).band_names)
    with random_weights("dofa_tiny_test", "tiny", tmp_path), pytest.raises(SpecError, match="QA_PIXEL"):
        get_embedding("dofa_tiny_test", PointBuffer(121.5, 31.2, 30 * 112), WHEN, backend=provider, device="cpu",
                      sensor=qa, preprocessing=[("resize", {"size": 224})])


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_dofa, rs_embed; assert 'dofa' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
