"""SatMAE / SatMAE++ cards, chain, registration, weights handling, strict loading and the contract via the public API."""

from __future__ import annotations

import json
import re

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.errors import WeightsError
from rs_embed_core.grid import GridSpec, grid_for
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.plugins import pm
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.providers import FetchRequest
from rs_embed_core.raster import Raster
from rs_embed_core.specs import OutputSpec, PointBuffer, TemporalSpec
from rs_embed_core.testing import (
    registered,
    FakeProvider,
    check_embedder_contract,
    build_hf_cache,
    check_strict_loading,
    fake_hub_lfs,
    file_sha256,
    offline_hub,
    random_weights,
    random_weights_file,
)
from rs_embed_core.weights import CACHE_ENV

import rs_embed_satmae as rs
import rs_embed_satmae_model as rsm

TINY_PARAMS = {**rs.VIT_LARGE, "embed_dim": 32, "depth": 1, "heads": 2}
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")


class TinySatMAEPP(rs.SatMAEPP):
    card = attrs.evolve(rs.SatMAEPP.card, id="satmaepp_tiny_test", aliases=(), default_variant="tiny", variants=(
        attrs.evolve(rs.SatMAEPP.card.variant(), name="tiny", pooled_dim=32, grid_dim=32, params=TINY_PARAMS),))


class TinySatMAE(rs.SatMAE):
    card = attrs.evolve(rs.SatMAE.card, id="satmae_tiny_test", aliases=(), default_variant="tiny", variants=(
        attrs.evolve(rs.SatMAE.card.variant(), name="tiny", pooled_dim=32, grid_dim=32, params=TINY_PARAMS),))


@pytest.fixture
def tiny_registered():
    with registered(TinySatMAEPP, TinySatMAE):
        yield


def test_cards_describe_weights_chain_and_licences():
    pp, sm = rs.SatMAEPP.card, rs.SatMAE.card
    for card in (pp, sm):
        d = card.describe()
        json.dumps(d)
        assert [s.name for s in card.preprocessing] == ["select_bands", "to_8bit", "scale", "normalize", "resize"]
        assert card.input.bands == ("B4", "B3", "B2") and card.variant().params["norm_eps"] == 1e-6
        assert (card.variant().pooled_dim, card.variant().grid_dim) == (1024, 1024)
        assert "spatial order" in card.notes and "eps" in card.notes
    w = pp.variant().weights
    assert w.repo_id == "mubashir04/checkpoint_ViT-L_pretrain_fmow_rgb" and len(w.revision) == 40
    assert len(w.sha256) == 64 and w.license == "apache-2.0"
    assert "CC-BY-NC-4.0" in sm.license and "zenodo" in sm.notes.lower()


def test_satmae_default_variant_has_default_weights_pinned_to_a_commit():
    """The default variant ships weights: the MVRL Hub copy pinned to a 40-hex commit, digest from that commit."""
    w = rs.SatMAE.card.variant().weights
    assert rs.SatMAE.card.default_variant == "vit_large" and w is rs.SATMAE_WEIGHTS
    assert w.repo_id == "MVRL/satmae-vitlarge-fmow-pretrain-800" and w.filename == "model.safetensors"
    assert re.fullmatch(r"[0-9a-f]{40}", w.revision) and w.digest_from_revision and w.license == "cc-by-nc-4.0"
    d = rs.SatMAE.card.describe()["variants"][0]["weights"]
    assert d["revision"] == w.revision and d["sha256"] is None and w.revision in d["sha256_source"]
    assert w.repo_id in rs.SatMAE.card.notes and w.revision in rs.SatMAE.card.notes


def test_module_hook_registers_both():
    got: list[type] = []
    rs.register_embedders(register=got.append)
    assert got == [rs.SatMAE, rs.SatMAEPP]


def _rgb_raster(size: int = 300) -> tuple[np.ndarray, Raster]:
    dn = np.random.default_rng(0).uniform(0, 3500, (1, 3, size, size)).astype(np.float32)
    grid = GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, size, size)
    return dn, Raster(dn, ("B4", "B3", "B2"), grid, (None,), np.ones((1, size, size), bool))


def _authors_prefix(dn: np.ndarray) -> torch.Tensor:
    import torchvision.transforms.v2.functional as TF

    u8 = torch.from_numpy(np.rint(np.clip(dn[0] / 3000.0, 0, 1) * 255)).to(torch.uint8)  # the 8-bit stretch
    return TF.normalize(u8.float() / 255.0, list(rs.FMOW_MEAN), list(rs.FMOW_STD))  # ToTensor + Normalize


def test_chain_is_the_authors_fmow_eval_transform_without_the_crop():
    """8-bit RGB -> /255 -> Normalize(fMoW) -> Resize(224, bicubic, no antialias), as torchvision computes it."""
    import torchvision.transforms.v2.functional as TF

    dn, raster = _rgb_raster()
    out = apply_chain(raster, rs.SatMAE.card.preprocessing)
    x = TF.resize(_authors_prefix(dn), [224, 224], interpolation=TF.InterpolationMode.BICUBIC, antialias=False)
    assert out.shape == (1, 3, 224, 224) and out.grid.bounds == raster.grid.bounds  # the whole ROI
    np.testing.assert_allclose(out.data[0], x.numpy(), atol=2e-5)


def test_authors_eval_chain_replicates_resize_256_and_center_crop():
    import torchvision.transforms.v2.functional as TF

    dn, raster = _rgb_raster()
    out = apply_chain(raster, rs.authors_eval_chain())
    x = TF.resize(_authors_prefix(dn), [256], interpolation=TF.InterpolationMode.BICUBIC, antialias=False)
    x = TF.center_crop(x, [224])
    assert out.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(out.data[0], x.numpy(), atol=2e-5)
    assert out.grid.res == pytest.approx(10.0 * 300 / 256)  # the central 224/256 of the ROI


def test_satmae_offline_without_its_weights_fails_before_fetching_and_says_where_to_put_them(tmp_path, monkeypatch):
    from rs_embed import get_embedding

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    provider = FakeProvider()
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        get_embedding("satmae", PointBuffer(121.5, 31.2, 1280), WHEN, backend=provider, device="cpu")
    text = str(err.value)
    w = rs.SATMAE_WEIGHTS
    assert w.repo_id in text and w.revision in text and "Place the file" in text and "weights=" in text
    assert provider.calls == 0


def test_satmae_default_weights_verified_against_the_commits_lfs_digest_then_offline(tiny_registered, tmp_path,
                                                                                      monkeypatch):
    """The MVRL safetensors layout (flat keys, MAE decoder included) at the pinned commit: the first load reads
    the LFS sha256 from the (faked) Hub metadata, later offline loads use the recorded digest."""
    from rs_embed import get_embedding

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    w = rs.SATMAE_WEIGHTS
    net = rsm.build_net(TINY_PARAMS)
    sd = {**net.state_dict(), "decoder_pred.weight": torch.zeros(768, 16), "mask_token": torch.zeros(1, 1, 16)}
    org, name = w.repo_id.split("/")
    local = random_weights_file(sd, tmp_path / "wd" / f"{org}__{name}" / w.filename, seed=5)
    monkeypatch.setenv("RS_EMBED_WEIGHTS_DIR", str(tmp_path / "wd"))
    with fake_hub_lfs({(w.repo_id, w.revision, w.filename): file_sha256(local)}) as calls:
        rs.SatMAE(TinySatMAE.card.variant()).load()
    assert calls == [(w.repo_id, w.revision, w.filename)]
    roi, provider = PointBuffer(121.5, 31.2, 1280), FakeProvider()
    build_hf_cache(tmp_path / "hub", w.repo_id, w.revision, {w.filename: local})
    with offline_hub(tmp_path / "hub"):  # hides RS_EMBED_WEIGHTS_DIR: the Hub cache copy, checked offline
        emb = get_embedding("satmae_tiny_test", roi, WHEN, backend=provider, device="cpu")
    assert emb.data.shape == (32,) and emb.meta["weights"]["revision"] == w.revision
    local.write_bytes(b"not the pinned file")
    build_hf_cache(tmp_path / "hub2", w.repo_id, w.revision, {w.filename: local})
    with offline_hub(tmp_path / "hub2"), pytest.raises(WeightsError, match="sha256 mismatch"):
        rs.SatMAE(TinySatMAE.card.variant()).load()


def test_satmae_with_your_weights_file_runs_the_network(tiny_registered, tmp_path, monkeypatch):
    """weights=<a training checkpoint like Zenodo's fmow_pretrain.pth> (nested model + Namespace + decoder)."""
    import argparse

    from rs_embed import get_embedding

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    net = rsm.build_net(TINY_PARAMS)
    sd = torch.load(random_weights_file(net, tmp_path / "enc.pt", seed=4), weights_only=True)
    sd["decoder_pred.weight"] = torch.zeros(768, 16)
    path = tmp_path / "fmow_pretrain.pth"
    torch.save({"model": sd, "args": argparse.Namespace(input_size=224)}, path)
    roi = PointBuffer(121.5, 31.2, 1280)
    provider = FakeProvider()
    with offline_hub(tmp_path / "hub"):
        emb = get_embedding("satmae_tiny_test", roi, WHEN, OutputSpec.grid(), backend=provider, device="cpu",
                            weights=str(path))
    assert emb.data.shape == (32, 14, 14) and emb.meta["weights"]["sha256"]
    net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("decoder")}, strict=True)
    raster = provider.fetch(FetchRequest(grid_for(roi, 10.0), WHEN, provider_sensor(rs.SatMAE)))
    x = torch.from_numpy(apply_chain(raster, rs.SatMAE.card.preprocessing).data)
    with torch.inference_mode():
        _, grid = rsm.embed(net.eval(), x)
    np.testing.assert_allclose(emb.data, grid[0].numpy(), rtol=1e-5, atol=1e-5)


def provider_sensor(cls):
    from rs_embed_core.specs import SensorSpec

    i = cls.card.input
    return SensorSpec(i.collection, i.bands, i.gsd_m, composite=i.composite)


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    report = check_strict_loading(TinySatMAEPP, "tiny", tmp_path)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)
    assert report.keys == len(rsm.build_net(TINY_PARAMS).state_dict())


def test_embedder_contract_on_random_weights(tiny_registered, tmp_path):
    with random_weights("satmaepp_tiny_test", "tiny", tmp_path, seed=0):
        report = check_embedder_contract("satmaepp_tiny_test", variant="tiny")
    assert report.pooled_dim == 32 and report.grid_shapes == ((32, 14, 14), (32, 14, 14))
    assert "batch == single (grid)" in report.checks


def test_missing_satmaepp_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        rs.SatMAEPP(rs.SatMAEPP.card.variant()).load()
    assert rs.SATMAEPP_WEIGHTS.repo_id in str(err.value) and rs.SATMAEPP_WEIGHTS.filename in str(err.value)


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_satmae, rs_embed; m = rs_embed.list_models(); "
            "assert 'satmae' in m and 'satmaepp' in m, m; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
