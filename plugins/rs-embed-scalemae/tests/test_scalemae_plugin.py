"""Scale-MAE card (licence), chain, GSD side input through the public API, strict loading and the contract."""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.grid import GridSpec, grid_for
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.plugins import pm
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.providers import FetchRequest
from rs_embed_core.raster import Raster
from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing import (
    registered,
    FakeProvider,
    check_embedder_contract,
    check_strict_loading,
    offline_hub,
    random_weights,
)
from rs_embed_core.weights import CACHE_ENV

import rs_embed_scalemae as rsc
import rs_embed_scalemae_model as rscm

TINY_PARAMS = {**rsc.VIT_LARGE, "embed_dim": 32, "depth": 1, "heads": 2}
TINY = attrs.evolve(rsc.ScaleMAE.card.variant(), name="tiny", pooled_dim=32, grid_dim=32, params=TINY_PARAMS)
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")


class TinyScaleMAE(rsc.ScaleMAE):
    card = attrs.evolve(rsc.ScaleMAE.card, id="scalemae_tiny_test", aliases=(), variants=(TINY,), default_variant="tiny")


@pytest.fixture
def tiny_registered():
    with registered(TinyScaleMAE):
        yield TinyScaleMAE


def test_card_pins_weights_and_states_the_non_commercial_licence():
    card = rsc.ScaleMAE.card
    json.dumps(card.describe())
    w = card.variant().weights
    assert (w.repo_id, w.revision, w.license) == (rsc.REPO_ID, "9dc7f569424baeb780698352cf6e87638c882123", "cc-by-nc-4.0")
    assert len(w.sha256) == 64 and w.filename.endswith("-98ed9821.pth")
    assert "CC-BY-NC-4.0" in card.license and "non-commercial" in card.license
    assert [s.name for s in card.preprocessing] == ["select_bands", "to_8bit", "scale", "resize", "normalize"]
    assert any("ground sampling distance" in s for s in card.side_inputs)


def test_describe_shows_the_licence():
    """`rs-embed describe scalemae` prints describe_model's dict: the licence is in it, at top level and per file."""
    from rs_embed_core.api import describe_model

    d = describe_model("scalemae")
    assert "CC-BY-NC-4.0" in d["license"] and d["variants"][0]["weights"]["license"] == "cc-by-nc-4.0"
    assert d["side_inputs"] and "GSD" in d["notes"]


def test_cli_describe_prints_the_licence():
    from click.testing import CliRunner

    from rs_embed_core.cli import main

    result = CliRunner().invoke(main, ["describe", "scalemae"])
    assert result.exit_code == 0, result.output
    assert "CC-BY-NC-4.0" in result.output


def test_module_hook_registers_the_embedder():
    got: list[type] = []
    rsc.register_embedders(register=got.append)
    assert got == [rsc.ScaleMAE]


def test_chain_is_8bit_then_imagenet_statistics():
    import torchvision.transforms.v2.functional as TF

    dn = np.random.default_rng(0).uniform(0, 3500, (1, 3, 112, 112)).astype(np.float32)
    raster = Raster(dn, ("B4", "B3", "B2"), GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, 112, 112), (None,),
                    np.ones((1, 112, 112), bool))
    out = apply_chain(raster, rsc.ScaleMAE.card.preprocessing)
    x = torch.from_numpy(np.rint(np.clip(dn[0] / 3000.0, 0, 1) * 255) / 255.0).float()
    x = TF.resize(x, [224, 224], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    x = TF.normalize(x, list(rsc.IMAGENET_MEAN), list(rsc.IMAGENET_STD))
    np.testing.assert_allclose(out.data[0], x.numpy(), atol=2e-5)
    assert out.grid.res == pytest.approx(5.0)  # 112 px at 10 m resized to 224: the GSD the model is given


def test_gsd_comes_from_each_items_preprocessed_grid(tiny_registered, tmp_path):
    """grid == the network on the same pixels with res = real GSD after the resize; another GSD differs."""
    from rs_embed import get_embedding
    from rs_embed_core.runner import load_embedder

    provider = FakeProvider()
    roi = PointBuffer(121.5, 31.2, 10 * 64)  # 128 px at 10 m -> resized to 224 -> 5.714 m/px
    with random_weights("scalemae_tiny_test", "tiny", tmp_path, seed=1):
        emb = get_embedding("scalemae_tiny_test", roi, WHEN, OutputSpec.grid(), backend=provider, device="cpu")
        net = load_embedder(TinyScaleMAE, TinyScaleMAE.card.variant("tiny"), "cpu").net
    i = rsc.ScaleMAE.card.input
    raster = provider.fetch(FetchRequest(grid_for(roi, 10.0), WHEN, SensorSpec(i.collection, i.bands, i.gsd_m)))
    pre = apply_chain(raster, rsc.ScaleMAE.card.preprocessing)
    gsd = pre.grid.res
    assert gsd == pytest.approx(10.0 * raster.shape[-1] / 224)
    assert emb.meta["model_extra"]["gsd_ratio"] == pytest.approx(gsd / rsc.GSD_REFERENCE_M)
    x = torch.from_numpy(pre.data)
    with torch.inference_mode():
        expected = rscm.embed(net, x, torch.tensor([gsd]))[1][0].numpy()
        other = rscm.embed(net, x, torch.tensor([10.0]))[1][0].numpy()
    assert emb.data.shape == (32, 14, 14)
    np.testing.assert_allclose(emb.data, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(emb.data - other).max() > 0.1 * np.abs(emb.data).max()  # far beyond float noise


def test_gsd_of_rectangular_pixels_and_bad_gsd():
    class Ctx:
        grids = (GridSpec("EPSG:32651", 0.0, 0.0, 10.0, 4, 4), GridSpec("EPSG:32651", 0.0, 0.0, 4.0, 4, 4, res_y=9.0))

    assert rsc.gsd_ratios(Ctx()) == pytest.approx((10.0, 6.0))  # geometric mean of the two pixel sides

    class Bad:
        grids = (type("G", (), {"res": float("nan"), "yres": float("nan")})(),)

    with pytest.raises(SpecError, match="ground sampling distance"):
        rsc.gsd_ratios(Bad())
    with pytest.raises(SpecError, match="positive"):
        rscm.gsd_pos_embed(32, 14, torch.tensor([float("nan")]))


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    keys = {k: tuple(v.shape) for k, v in rscm.build_net(TINY_PARAMS).state_dict().items()}
    keys["pos_embed"] = (1, 197, 32)  # the file's fixed table, dropped by name
    report = check_strict_loading(TinyScaleMAE, "tiny", tmp_path, state_dict=keys)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)


def test_embedder_contract_on_random_weights(tiny_registered, tmp_path):
    with random_weights("scalemae_tiny_test", "tiny", tmp_path, seed=0):
        report = check_embedder_contract("scalemae_tiny_test", variant="tiny")
    assert report.pooled_dim == 32 and report.grid_shapes == ((32, 14, 14), (32, 14, 14))
    assert "batch == single (grid)" in report.checks


def test_missing_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        rsc.ScaleMAE(rsc.ScaleMAE.card.variant()).load()
    assert rsc.REPO_ID in str(err.value) and rsc.WEIGHTS.filename in str(err.value)


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_scalemae, rs_embed; assert 'scalemae' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
