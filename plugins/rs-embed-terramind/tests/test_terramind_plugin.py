"""The TerraMind card and chain, registration, strict loading and the embedder contract."""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest

from rs_embed_core.grid import GridSpec
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.plugins import pm
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.raster import Raster
from rs_embed_core.testing import FakeProvider, check_embedder_contract, check_strict_loading, random_weights, registered

import rs_embed_terramind as rt

TINY = attrs.evolve(rt.VARIANTS[1], name="tiny", pooled_dim=32, grid_dim=32,
                    params={**rt.VARIANTS[1].params, "dim": 32, "depth": 1, "heads": 2})


class TinyTerraMind(rt.TerraMind):
    card = attrs.evolve(rt.TerraMind.card, id="terramind_tiny_test", variants=(TINY,), default_variant="tiny")


def test_card_describes_variants_and_input():
    card = rt.TerraMind.card
    json.dumps(card.describe())
    assert card.id == "terramind" and card.variant().name == "small" and [v.name for v in card.variants] == ["small", "base"]
    assert card.input.bands == ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
    assert card.input.frames == 1 and card.input.gsd_m == 10.0 and card.input.image_size == 224
    for v in card.variants:
        assert v.weights.repo_id == f"ibm-esa-geospatial/TerraMind-1.0-{v.name}"
        assert v.weights.filename == f"TerraMind_v1_{v.name}.pt" and len(v.weights.sha256) == 64
        assert v.pooled_dim == v.grid_dim == v.params["dim"]


def test_statistics_are_terratorchs_v1_s2l2a_values():
    terratorch = pytest.importorskip("terratorch.models.backbones.terramind.model.terramind_register")
    assert list(rt.MEAN) == terratorch.v1_pretraining_mean["untok_sen2l2a@224"]
    assert list(rt.STD) == terratorch.v1_pretraining_std["untok_sen2l2a@224"]
    names = ["COASTAL_AEROSOL", "BLUE", "GREEN", "RED", "RED_EDGE_1", "RED_EDGE_2", "RED_EDGE_3", "NIR_BROAD",
             "NIR_NARROW", "WATER_VAPOR", "SWIR_1", "SWIR_2"]
    assert terratorch.PRETRAINED_BANDS["untok_sen2l2a@224"] == names  # our B1..B12 (no B10) order


def test_chain_standardises_and_fills_gaps_with_the_mean():
    bands = rt.S2_BANDS + ("SCL",)
    dn = np.linspace(300, 4000, 12)
    data = np.broadcast_to(np.append(dn, 4.0).reshape(1, -1, 1, 1), (1, 13, 30, 30)).astype(np.float32)
    valid = np.ones((1, 30, 30), bool)
    valid[0, :5, :5] = False
    raster = Raster(data, bands, GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, 30, 30), (None,), valid)
    out = apply_chain(raster, rt.TerraMind.card.preprocessing)
    assert out.shape == (1, 12, 224, 224) and out.bands == rt.S2_BANDS
    np.testing.assert_allclose(out.data[0, :, 150, 150], (dn - np.array(rt.MEAN)) / np.array(rt.STD), rtol=1e-5)
    before_resize = apply_chain(raster, rt.TerraMind.card.preprocessing[:-1])
    assert np.all(before_resize.data[0, :, :5, :5] == 0.0)


def test_hook_registers_the_embedder():
    got: list[type] = []
    rt.register_embedders(register=got.append)
    assert got == [rt.TerraMind]


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    report = check_strict_loading(TinyTerraMind, "tiny", tmp_path)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)
    assert report.keys == 2 + 7 + 1  # proj + mod_emb; one bias-free gated block (2 norms, qkv, proj, fc1-3); final norm


@pytest.fixture
def tiny_model(tmp_path):
    with registered(TinyTerraMind):
        with random_weights(TinyTerraMind, "tiny", tmp_path, seed=4):
            yield TinyTerraMind


def test_embedder_contract_through_the_public_api(tiny_model):
    report = check_embedder_contract(tiny_model, provider=FakeProvider())
    assert report.pooled_dim == 32 and report.grid_shapes == ((32, 14, 14), (32, 14, 14))
    assert "batch == single (grid)" in report.checks


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_terramind, rs_embed; assert 'terramind' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
