"""The RemoteCLIP card, its preprocessing chain, registration, strict loading and the embedder contract."""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest

from rs_embed_core.card import ModelCard
from rs_embed_core.errors import WeightsError
from rs_embed_core.grid import GridSpec
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.plugins import pm
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.raster import Raster
from rs_embed_core.testing import (
    FakeProvider,
    build_hf_cache,
    check_embedder_contract,
    check_strict_loading,
    offline_hub,
    random_weights_file,
    weights_spec_for,
)
from rs_embed_core.weights import CACHE_ENV

import rs_embed_remoteclip as rc
import rs_embed_remoteclip_model as rcm


def _raster(h: int, w: int, seed: int = 0) -> Raster:
    """A smooth S2-like DN field (bands B2, B3, B4 on purpose out of RGB order)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(200, 3600, size=(1, 3, 6, 6))
    yy, xx = np.meshgrid(np.linspace(0, 5, h), np.linspace(0, 5, w), indexing="ij")
    y0, x0 = np.floor(yy).astype(int).clip(0, 4), np.floor(xx).astype(int).clip(0, 4)
    fy, fx = yy - y0, xx - x0
    c = coarse[0]
    data = (c[:, y0, x0] * (1 - fy) * (1 - fx) + c[:, y0 + 1, x0] * fy * (1 - fx)
            + c[:, y0, x0 + 1] * (1 - fy) * fx + c[:, y0 + 1, x0 + 1] * fy * fx)
    grid = GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, w, h)
    return Raster(data[None].astype(np.float32), ("B2", "B3", "B4"), grid, (None,), np.ones((1, h, w), bool))


def test_card_describes_variants_chain_and_outputs():
    card = rc.RemoteCLIP.card
    d = card.describe()
    json.dumps(d)  # JSON-friendly for `rs-embed describe` and manifests
    assert d["id"] == "remoteclip" and d["aliases"] == ["remoteclip_s2rgb"]
    assert [v["name"] for v in d["variants"]] == ["ViT-B-32", "ViT-L-14"] and d["variants"][0]["default"]
    assert card.variant("vit-l-14").pooled_dim == 768 and card.variant().grid_dim == 768
    for v in card.variants:
        assert v.weights.repo_id == "chendelong/RemoteCLIP" and v.weights.revision == rc.REVISION
        assert v.weights.filename == f"RemoteCLIP-{v.name}.pt"
    assert [s.name for s in card.preprocessing] == [
        "select_bands", "to_8bit", "scale", "resize", "center_crop", "normalize"]
    assert card.input.bands == ("B4", "B3", "B2") and card.input.gsd_m == 10.0 and card.input.image_size == 224


def test_module_hook_registers_the_embedder():
    got: list[type] = []
    rc.register_embedders(register=got.append)
    assert got == [rc.RemoteCLIP]


def test_chain_makes_224_rgb_in_clip_units():
    out = apply_chain(_raster(300, 260), rc.RemoteCLIP.card.preprocessing)
    assert out.shape == (1, 3, 224, 224) and out.bands == ("B4", "B3", "B2")
    # back to the 0..1 scale: inside [0, 1] up to bicubic overshoot, and built from 8-bit steps
    unit = out.data * np.array(rc.CLIP_STD, np.float32)[None, :, None, None] + np.array(rc.CLIP_MEAN, np.float32)[None, :, None, None]
    assert -0.02 < unit.min() and unit.max() < 1.02
    bright = apply_chain(_raster(224, 224).replace(data=np.full((1, 3, 224, 224), 5000, np.float32)),
                         rc.RemoteCLIP.card.preprocessing)
    expected = (1.0 - np.array(rc.CLIP_MEAN)) / np.array(rc.CLIP_STD)  # saturated at 255
    assert np.allclose(bright.data[0, :, 0, 0], expected, atol=1e-5)


@pytest.mark.parametrize("hw", [(300, 260), (120, 130)])  # downsampling and upsampling
def test_chain_matches_open_clips_pil_transform(hw):
    """The documented deviation (float resize of the 8-bit image vs PIL's uint8 resize) stays within ~1 grey level."""
    pytest.importorskip("open_clip")
    from open_clip.transform import image_transform
    from PIL import Image

    raster = _raster(*hw, seed=3)
    ours = apply_chain(raster, rc.RemoteCLIP.card.preprocessing).data[0]
    rgb = raster.data[0][[2, 1, 0]]  # B4, B3, B2
    u8 = np.rint(np.clip(rgb / rc.RGB_HIGH_DN, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    ref = image_transform(224, is_train=False, mean=rc.CLIP_MEAN, std=rc.CLIP_STD)(Image.fromarray(u8)).numpy()
    assert ref.shape == ours.shape
    grey_levels = np.abs(ours - ref) * np.array(rc.CLIP_STD, np.float32)[:, None, None] * 255
    assert grey_levels.max() <= 1.5 and grey_levels.mean() <= 0.5


def test_on_noise_the_unclipped_overshoot_is_as_documented():
    """The card's note: on white noise, bicubic overshoot (kept, not clipped) reaches tens of grey levels."""
    pytest.importorskip("open_clip")
    from open_clip.transform import image_transform
    from PIL import Image

    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    dn = u8.transpose(2, 0, 1)[[2, 1, 0]].astype(np.float32) * (rc.RGB_HIGH_DN / 255.0)  # B2, B3, B4 order
    grid = GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, 260, 300)
    raster = Raster(dn[None], ("B2", "B3", "B4"), grid, (None,), np.ones((1, 300, 260), bool))
    ours = apply_chain(raster, rc.RemoteCLIP.card.preprocessing).data[0]
    ref = image_transform(224, is_train=False, mean=rc.CLIP_MEAN, std=rc.CLIP_STD)(Image.fromarray(u8)).numpy()
    grey_levels = np.abs(ours - ref) * np.array(rc.CLIP_STD, np.float32)[:, None, None] * 255
    assert 10 < grey_levels.max() < 80 and grey_levels.mean() < 5


# --------------------------------------------------------------------------- loading and contract

TINY = attrs.evolve(
    rc.VIT_B_32, name="tiny", pooled_dim=16, grid_dim=32,
    params={**rc.VIT_B_32.params, "embed_dim": 16, "width": 32, "layers": 1, "heads": 2,
            "text_width": 16, "text_layers": 1, "text_heads": 2},
)


class TinyRemoteCLIP(rc.RemoteCLIP):
    card = attrs.evolve(rc.RemoteCLIP.card, id="remoteclip_tiny_test", aliases=(), variants=(TINY,),
                        default_variant="tiny")


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    report = check_strict_loading(TinyRemoteCLIP, "tiny", tmp_path)
    assert "extra key refused" in report.checks and "wrong shape refused" in report.checks
    assert report.keys == len(rcm.CLIP(TINY.params, text=False).state_dict())


def test_text_tower_load_is_strict_too(tmp_path, monkeypatch):
    """A checkpoint whose text tower is incomplete fails embed_text with the missing key named."""
    sd = rcm.CLIP(TINY.params).state_dict()
    del sd["ln_final.bias"]
    path = random_weights_file(sd, tmp_path / "RemoteCLIP-ViT-B-32.pt")
    spec = weights_spec_for(rc.REPO_ID, "3" * 40, path.name, path)
    build_hf_cache(tmp_path / "hub", rc.REPO_ID, "3" * 40, {path.name: path})
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    with offline_hub(tmp_path / "hub"):
        emb = TinyRemoteCLIP(attrs.evolve(TINY, weights=spec))
        emb.load()  # the image tower is complete
        with pytest.raises(WeightsError, match="ln_final.bias"):
            emb.embed_text(["farmland"])


def test_embed_text_offline_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    monkeypatch.setattr(rc, "_text_models", {})
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        rc.embed_text(["farmland"])
    assert "chendelong/RemoteCLIP" in str(err.value) and "RemoteCLIP-ViT-B-32.pt" in str(err.value)


@pytest.fixture(scope="module")
def registered_b32(tmp_path_factory):
    """The full-size ViT-B-32 image tower under a test id, random weights in an offline Hub cache."""
    root = tmp_path_factory.mktemp("contract")
    path = random_weights_file(rcm.CLIP(rc.VIT_B_32.params, text=False), root / "RemoteCLIP-ViT-B-32.pt", seed=1)
    spec = weights_spec_for(rc.REPO_ID, "4" * 40, path.name, path)
    build_hf_cache(root / "hub", rc.REPO_ID, "4" * 40, {path.name: path})

    class TestRemoteCLIP(rc.RemoteCLIP):
        card: ModelCard = attrs.evolve(
            rc.RemoteCLIP.card, id="remoteclip_contract_test", aliases=(),
            variants=(attrs.evolve(rc.VIT_B_32, weights=spec),),
        )

    class Plugin:
        @hookimpl
        def register_embedders(self, register):
            register(TestRemoteCLIP)

    plugin = Plugin()
    pm.register(plugin, name="remoteclip-contract-test")
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(root / "rs-embed"))
    try:
        with offline_hub(root / "hub"):
            yield TestRemoteCLIP
    finally:
        mp.undo()
        pm.unregister(plugin)
        from rs_embed_core.runner import clear_model_cache

        clear_model_cache()


def test_embedder_contract_through_the_public_api(registered_b32):
    report = check_embedder_contract(registered_b32, provider=FakeProvider())
    assert report.pooled_dim == 512
    assert report.grid_shapes == ((768, 7, 7), (768, 7, 7))
    assert "batch == single (grid)" in report.checks


def test_embed_text_in_chunks_equals_one_pass(tmp_path, monkeypatch):
    path = random_weights_file(rcm.CLIP(TINY.params), tmp_path / "RemoteCLIP-ViT-B-32.pt", seed=2)
    spec = weights_spec_for(rc.REPO_ID, "5" * 40, path.name, path)
    build_hf_cache(tmp_path / "hub", rc.REPO_ID, "5" * 40, {path.name: path})
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs-embed"))
    prompts = [f"a satellite image of field {i}" for i in range(7)]
    with offline_hub(tmp_path / "hub"):
        emb = TinyRemoteCLIP(attrs.evolve(TINY, weights=spec))
        whole = emb.embed_text(prompts)
        monkeypatch.setattr(rc, "TEXT_BATCH", 3)
        chunked = emb.embed_text(prompts)
        assert whole.shape == (7, 16) and whole.dtype == np.float32
        np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)
        np.testing.assert_allclose(emb.embed_text(prompts[2]), whole[2:3], rtol=0, atol=1e-6)
        assert emb.embed_text([]).shape == (0, 16)


def test_listing_models_does_not_import_torch():
    """The card and hook live in a torch-free module; the network is imported on load()."""
    import subprocess
    import sys

    code = ("import sys, rs_embed_remoteclip, rs_embed; assert 'remoteclip' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
