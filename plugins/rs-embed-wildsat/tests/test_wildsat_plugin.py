"""WildSAT card, chain, band checks, the authors' checkpoint format, strict loading, the contract, weights= path."""

from __future__ import annotations

import argparse
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
from rs_embed_core.testing import (
    FakeProvider,
    check_embedder_contract,
    check_strict_loading,
    random_weights,
    registered,
)
from rs_embed_core.weights import CACHE_ENV

import rs_embed_wildsat as ws
import rs_embed_wildsat_model as wm

TINY_VIT = {"dim": 48, "depth": 1, "heads": 2, "mlp_dim": 96, "classes": 40}
PLACEHOLDER = WeightsSpec("test/wildsat", "0" * 40, "wildsat.pth", "0" * 64, "test")  # replaced by random_weights
TINY = attrs.evolve(ws.WildSATEmbedder.card.variant("vitb16"), name="tiny", pooled_dim=256,
                              grid_dim=48, weights=PLACEHOLDER,
                              params={"arch": "vit_b_16", "input_size": 224, "head": "image", "backbone": TINY_VIT})
TINY_FEATS = attrs.evolve(TINY, name="tiny_feats", pooled_dim=40, params={**TINY.params, "head": None})
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")
ROI = PointBuffer(-72.5, 42.4, 2560)


class TinyWildSAT(ws.WildSATEmbedder):
    card = attrs.evolve(ws.WildSATEmbedder.card, id="wildsat_tiny_test", variants=(TINY, TINY_FEATS),
                        default_variant="tiny")


@pytest.fixture
def tiny_registered():
    with registered(TinyWildSAT):
        yield TinyWildSAT


def _template(params: dict) -> dict[str, torch.Tensor]:
    return wm.build_net(params).state_dict()


def test_card_variants_dims_and_no_unpinned_weights():
    card = ws.WildSATEmbedder.card
    json.dumps(card.describe())
    assert [v.name for v in card.variants] == ["vitb16", "vitb16_features", "resnet50", "resnet50_features", "swint",
                                               "swint_features"]
    assert card.variant().name == "vitb16" and card.variant().params["head"] == "image"
    assert [(v.pooled_dim, v.grid_dim) for v in card.variants] == [(256, 768), (1000, 768), (256, 2048),
                                                                   (1000, 2048), (256, 768), (1000, 768)]
    assert all(v.weights is None for v in card.variants)  # no published digest: nothing pinned
    assert card.input.bands == ("B4", "B3", "B2") and "no licence" in card.license
    with pytest.raises(WeightsError, match="1IxBpf3nbEMzny4YJWS6stMBxel6gMiYE"):
        ws.WildSATEmbedder(card.variant()).load()


def test_chain_emulates_tci_over_255_and_the_network_shifts_by_the_minimum():
    dn = np.random.default_rng(0).uniform(0, 3000, (1, 3, 512, 512)).astype(np.float32)
    raster = Raster(dn, ws.RGB_BANDS, GridSpec("EPSG:32618", 690000.0, 4700000.0, 10.0, 512, 512), (None,),
                    np.ones((1, 512, 512), bool))
    out = apply_chain(raster, ws.WildSATEmbedder.card.preprocessing).data[0]
    np.testing.assert_allclose(out, np.rint(np.clip(dn[0].astype(np.float64) / 2500.0, 0, 1) * 255) / 255, atol=1e-6)
    x = torch.from_numpy(out)[None] * 0.5 + 0.2
    y = wm.input_shift(x)
    assert y.min().item() == 0.0 and torch.allclose(y, x - x.min())  # divided by max(max, 1) = 1
    assert torch.equal(wm.input_shift(torch.full((1, 3, 4, 4), 0.3)), torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("sensor", [
    SensorSpec("COPERNICUS/S2_HARMONIZED", ("B2", "B3", "B4"), 10),
    SensorSpec("COPERNICUS/S2_HARMONIZED", ("B4", "B3", "B2", "B8"), 10),
    SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4", "SR_B3", "SR_B2"), 30),
])
def test_other_band_sets_are_refused_before_any_fetch(tiny_registered, sensor):
    from rs_embed import get_embedding

    provider = FakeProvider(bands=("B2", "B3", "B4", "B8"))
    with pytest.raises(SpecError, match="red, green, blue"):
        get_embedding("wildsat_tiny_test", ROI, WHEN, backend=provider, sensor=sensor)
    assert provider.calls == 0


def test_the_authors_training_checkpoint_loads_strictly(tmp_path, monkeypatch):
    """train.py's save_checkpoint layout: satellite_state_dict with DDP's "module." prefix, the run's argparse
    options, optimiser and the SINR / text models beside it."""
    from rs_embed_core.weights import local_weights

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    src = wm.build_net(TINY.params)
    for p in src.parameters():
        torch.nn.init.normal_(p)
    ckpt = {"epoch": 30, "satellite_state_dict": {f"module.{k}": v for k, v in src.state_dict().items()},
            "sinr_state_dict": {"module.head.weight": torch.zeros(256, 256)}, "text_emb_model": {},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
            "opt": argparse.Namespace(satellite_encoder="vitb16", satellite_head="threelinearnobias"),
            "scheduler": None, "loss": 0.5, "all_losses_plot": [[1.0, 0.5]]}
    path = tmp_path / "vitb16-imagenet-bnfc.pth"
    torch.save(ckpt, path)
    net = wm.build(attrs.evolve(TINY, weights=local_weights(path)))
    for k, v in src.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_a_pickle_with_other_objects_is_refused_unread(tmp_path, monkeypatch):
    from rs_embed_core.weights import local_weights

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    path = tmp_path / "evil.pth"
    torch.save({"satellite_state_dict": {}, "hook": attrs.evolve}, path)
    with pytest.raises(WeightsError, match="refused to unpickle"):
        wm.build(attrs.evolve(TINY, weights=local_weights(path)))


def test_a_checkpoint_of_another_architecture_names_the_mismatched_keys(tmp_path, monkeypatch):
    from rs_embed_core.weights import local_weights

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    path = tmp_path / "rn50.pth"
    torch.save({"satellite_state_dict": wm.build_net({"arch": "resnet50"}).state_dict()}, path)
    with pytest.raises(WeightsError) as err:
        wm.build(attrs.evolve(TINY, weights=local_weights(path)))
    assert "backbone.conv_proj.weight" in str(err.value) and "backbone.conv1.weight" in str(err.value)


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    report = check_strict_loading(TinyWildSAT, "tiny", tmp_path, state_dict=_template(TINY.params))
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)


@pytest.mark.parametrize("variant,pooled", [("tiny", 256), ("tiny_feats", 40)])
def test_embedder_contract_on_random_weights(tiny_registered, tmp_path, variant, pooled):
    with random_weights("wildsat_tiny_test", variant, tmp_path, state_dict=_template(TINY.params), seed=0):
        report = check_embedder_contract("wildsat_tiny_test", variant=variant,
                                         provider=FakeProvider(bands=ws.RGB_BANDS))
    assert report.pooled_dim == pooled and report.grid_shapes == ((48, 14, 14), (48, 14, 14))
    assert "batch == single (grid)" in report.checks


def test_public_api_equals_the_network_on_the_preprocessed_pixels(tiny_registered, tmp_path):
    from rs_embed import get_embedding
    from rs_embed_core.grid import grid_for
    from rs_embed_core.providers import FetchRequest
    from rs_embed_core.runner import load_embedder

    provider = FakeProvider(bands=ws.RGB_BANDS)
    with random_weights("wildsat_tiny_test", "tiny", tmp_path, state_dict=_template(TINY.params), seed=1):
        emb = get_embedding("wildsat_tiny_test", ROI, WHEN, OutputSpec.pooled(), backend=provider, device="cpu")
        net = load_embedder(TinyWildSAT, TinyWildSAT.card.variant("tiny"), "cpu").net
    s = SensorSpec(ws.S2_COLLECTION, ws.RGB_BANDS, 10)
    pre = apply_chain(provider.fetch(FetchRequest(grid_for(ROI, 10.0), WHEN, s)), ws.WildSATEmbedder.card.preprocessing)
    x = torch.from_numpy(pre.data)
    with torch.inference_mode():
        small = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
        expected = net.decoder.backbone3(net.backbone(small - small.min())[0])[0].numpy()
    assert emb.data.shape == (256,)
    np.testing.assert_allclose(emb.data, expected, rtol=1e-5, atol=1e-5)


def test_level_2a_is_accepted_with_sensor(tiny_registered, tmp_path):
    from rs_embed import get_embedding

    sensor = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ws.RGB_BANDS, 10)
    with random_weights("wildsat_tiny_test", "tiny", tmp_path, state_dict=_template(TINY.params), seed=1):
        emb = get_embedding("wildsat_tiny_test", ROI, WHEN, backend=FakeProvider(bands=ws.RGB_BANDS), sensor=sensor,
                            device="cpu")
    assert emb.data.shape == (256,) and np.isfinite(emb.data).all()


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_wildsat, rs_embed; assert 'wildsat' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
