"""FoMo card, chain, band checks, weights= path, strict loading, the contract, and an export beside WildSAT."""

from __future__ import annotations

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

import rs_embed_fomo as rf
import rs_embed_fomo_model as rfm

TINY_PARAMS = {**rf.FOMONET1.params, "dim": 32, "depth": 1, "heads": 2, "dim_head": 16, "mlp_dim": 64}
PLACEHOLDER = WeightsSpec("test/fomo", "0" * 40, rf.WEIGHTS_FILE, "0" * 64, "test")  # replaced by random_weights
TINY = attrs.evolve(rf.FOMONET1, name="tiny", pooled_dim=32, grid_dim=32, weights=PLACEHOLDER, params=TINY_PARAMS)
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")
ROI = PointBuffer(-73.6, 45.5, 320)


class TinyFoMo(rf.FoMo):
    card = attrs.evolve(rf.FoMo.card, id="fomo_tiny_test", aliases=(), variants=(TINY,), default_variant="tiny")


@pytest.fixture
def tiny_registered():
    with registered(TinyFoMo):
        yield TinyFoMo


def _template(params: dict, with_dropped: bool = True) -> dict[str, torch.Tensor]:
    sd = dict(rfm.build_net(params).state_dict())
    if with_dropped:  # the authors' file carries these too
        sd["cls_token"] = torch.zeros(1, 1, int(params["dim"]))
        sd["mlp_head.weight"], sd["mlp_head.bias"] = torch.zeros(1000, int(params["dim"])), torch.zeros(1000)
    return sd


def test_card_band_ids_statistics_and_no_unpinned_weights():
    card = rf.FoMo.card
    json.dumps(card.describe())
    assert card.variant().name == "fomonet1" and card.variant().weights is None
    assert card.input.bands == rf.S2_BANDS and card.input.image_size == 64
    assert len(rf.S2_MEAN) == len(rf.S2_STD) == len(rf.S2_BANDS) == 10
    assert [rf.S2_SPECTRAL_IDS[b] for b in rf.S2_BANDS] == [7, 8, 9, 10, 11, 12, 13, 14, 17, 18]
    assert max(rf.S2_SPECTRAL_IDS.values()) < rf.SPECTRAL_IDS and "MIT" in card.license
    with pytest.raises(WeightsError, match="fomo_single_embedding_layer_weights.pt"):
        rf.FoMo(card.variant()).load()


def test_chain_standardises_with_tallos_statistics():
    dn = np.random.default_rng(0).uniform(0, 6000, (1, 10, 64, 64)).astype(np.float32)
    raster = Raster(dn, rf.S2_BANDS, GridSpec("EPSG:32618", 600000.0, 5040000.0, 10.0, 64, 64), (None,),
                    np.ones((1, 64, 64), bool))
    out = apply_chain(raster, rf.FoMo.card.preprocessing).data[0]
    want = (dn[0] - np.array(rf.S2_MEAN, np.float32)[:, None, None]) / np.array(rf.S2_STD, np.float32)[:, None, None]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sensor", [
    SensorSpec("COPERNICUS/S2_HARMONIZED", ("B4", "B3", "B2"), 10),
    SensorSpec("COPERNICUS/S2_HARMONIZED", tuple(reversed(rf.S2_BANDS)), 10),
    SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"), 30),
])
def test_other_band_sets_are_refused_before_any_fetch(tiny_registered, sensor):
    from rs_embed import get_embedding

    provider = FakeProvider(bands=rf.S2_BANDS)
    with pytest.raises(SpecError, match="TalloS"):
        get_embedding("fomo_tiny_test", ROI, WHEN, backend=provider, sensor=sensor)
    assert provider.calls == 0


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    # the authors' file minus cls_token / mlp_head (dropped by name, so their absence is no error)
    report = check_strict_loading(TinyFoMo, "tiny", tmp_path, state_dict=_template(TINY_PARAMS, with_dropped=False))
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)


def test_a_checkpoint_of_another_size_names_the_mismatched_keys(tmp_path, monkeypatch):
    from rs_embed_core.weights import local_weights

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    path = tmp_path / "fomo_wide.pt"
    torch.save(_template({**TINY_PARAMS, "dim": 48}), path)
    with pytest.raises(WeightsError, match="shape mismatches") as err:
        rfm.build(attrs.evolve(TINY, weights=local_weights(path)))
    assert "pos_embedding: file (1, 17, 48) vs model (1, 17, 32)" in str(err.value)


def test_embedder_contract_on_random_weights(tiny_registered, tmp_path):
    with random_weights("fomo_tiny_test", "tiny", tmp_path, state_dict=_template(TINY_PARAMS), seed=0):
        report = check_embedder_contract("fomo_tiny_test", variant="tiny", provider=FakeProvider(bands=rf.S2_BANDS))
    assert report.pooled_dim == 32 and report.grid_shapes == ((32, 4, 4), (32, 4, 4))
    assert "batch == single (grid)" in report.checks


def test_public_api_with_weights_path_equals_the_network(tiny_registered, tmp_path, monkeypatch):
    from rs_embed import get_embedding
    from rs_embed_core.grid import grid_for
    from rs_embed_core.providers import FetchRequest

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    sd = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(i)) * 0.2
          for i, (k, v) in enumerate(_template(TINY_PARAMS).items())}
    path = tmp_path / rf.WEIGHTS_FILE
    torch.save(sd, path)
    provider = FakeProvider(bands=rf.S2_BANDS)
    emb = get_embedding("fomo_tiny_test", ROI, WHEN, OutputSpec.grid(), backend=provider, device="cpu",
                        weights=str(path))
    net = rfm.build_net(TINY_PARAMS).eval()
    net.load_state_dict({k: v for k, v in sd.items() if k.split(".")[0] not in rfm.DROP})
    s = SensorSpec(rf.S2_COLLECTION, rf.S2_BANDS, 10)
    pre = apply_chain(provider.fetch(FetchRequest(grid_for(ROI, 10.0), WHEN, s)), rf.FoMo.card.preprocessing)
    with torch.inference_mode():
        expected = net(torch.from_numpy(pre.data), [rf.S2_SPECTRAL_IDS[b] for b in rf.S2_BANDS])[1][0].numpy()
    assert emb.data.shape == (32, 4, 4)
    np.testing.assert_allclose(emb.data, expected, rtol=1e-5, atol=1e-5)


def test_export_beside_another_model_equals_single_calls(tiny_registered, tmp_path):
    """One export_batch job with FoMo (tiny, random weights) and the MOSAIKS baseline: both written per ROI,
    FoMo's rows equal get_embedding's."""
    from rs_embed import export_batch, get_embedding
    from rs_embed_core.export import load_export

    provider = FakeProvider(bands=rf.S2_BANDS)
    rois = [ROI, PointBuffer(-73.5, 45.6, 320)]
    with random_weights("fomo_tiny_test", "tiny", tmp_path / "w", state_dict=_template(TINY_PARAMS), seed=2):
        export_batch(spatials=rois, names=["a", "b"], temporal=WHEN, models=["fomo_tiny_test", "mosaiks"],
                     out=tmp_path / "x", layout="combined", backend=provider, format="npz", device="cpu")
        singles = [get_embedding("fomo_tiny_test", r, WHEN, backend=provider, device="cpu").data for r in rois]
    got = load_export(tmp_path / "x")
    assert set(got.embeddings) == {"fomo_tiny_test", "mosaiks"}
    assert list(got.status["fomo_tiny_test"]) == ["ok", "ok"]
    for i, single in enumerate(singles):
        assert single.shape == (32,)
        np.testing.assert_allclose(got.embeddings["fomo_tiny_test"][i], single, rtol=1e-5, atol=1e-6)


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_fomo, rs_embed; assert 'fomo' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
