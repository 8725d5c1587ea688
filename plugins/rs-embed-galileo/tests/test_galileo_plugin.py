"""Galileo card, channel groups, chain, side inputs, masks, bad input, strict loading, the contract."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.embedder import BatchContext
from rs_embed_core.errors import SpecError, UnknownBandError, WeightsError
from rs_embed_core.grid import GridSpec, grid_for
from rs_embed_core.nn.geo_time import lonlat_to_xyz
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.providers import FetchRequest
from rs_embed_core.raster import Raster
from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing import (
    FakeProvider,
    build_hf_cache,
    check_embedder_contract,
    check_strict_loading,
    fake_hub_lfs,
    file_sha256,
    offline_hub,
    random_state,
    random_weights,
    registered,
    weights_spec_for,
)
from rs_embed_core.weights import CACHE_ENV

import rs_embed_galileo as rg
import rs_embed_galileo_model as rgm

NANO = rg.Galileo.card.variant("nano")
SMALL_PARAMS = {**NANO.params, "embedding_size": 32, "depth": 1, "num_heads": 2}
SMALL = attrs.evolve(NANO, name="small", pooled_dim=32, grid_dim=32, params=SMALL_PARAMS)
WHEN = TemporalSpec.year(2022)
S2 = SensorSpec(rg.S2_COLLECTION, rg.S2_BANDS, 10, frames=12)
S1 = SensorSpec(rg.S1_COLLECTION, rg.S1_BANDS, 10, frames=12)
ROI = PointBuffer(11.6, 48.1, 160)  # 32 px at 10 m: the default input without resampling
LAYOUT = json.loads((Path(__file__).parent / "nano_encoder_layout.json").read_text())


class SmallGalileo(rg.Galileo):
    card = attrs.evolve(rg.Galileo.card, id="galileo_small_test", aliases=(), variants=(SMALL,),
                        default_variant="small")


@pytest.fixture
def small_registered():
    with registered(SmallGalileo):
        yield SmallGalileo


def _state(params: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        keys = {k: v.shape for k, v in rgm.Galileo(params).state_dict().items()}
    return random_state(keys, seed)


def _net(params: dict, seed: int = 0) -> rgm.Galileo:
    net = rgm.Galileo(params).eval()
    net.load_state_dict(_state(params, seed), strict=True)
    return net


def test_card_variants_weights_and_chain():
    card = rg.Galileo.card
    json.dumps(card.describe())
    assert [v.name for v in card.variants] == ["nano", "tiny", "base"] and card.variant().name == "nano"
    assert [(v.pooled_dim, v.params["depth"], v.params["num_heads"]) for v in card.variants] == [
        (128, 4, 8), (192, 12, 3), (768, 12, 12)]
    w = NANO.weights
    assert (w.repo_id, w.revision, w.filename, w.license) == (
        "nasaharvest/galileo", "f039dd5dde966a931baeda47eb680fa89b253e4e", "models/nano/encoder.pt", "mit")
    assert len(w.sha256) == 64
    for size in ("tiny", "base"):  # no published digest: pinned by the commit, digest read from it
        t = card.variant(size).weights
        assert (t.repo_id, t.revision, t.filename, t.license) == (w.repo_id, w.revision, f"models/{size}/encoder.pt", "mit")
        assert re.fullmatch(r"[0-9a-f]{40}", t.revision) and t.digest_from_revision
        assert card.describe()["variants"][card.variants.index(card.variant(size))]["weights"]["sha256"] is None
    assert card.input.collection == "COPERNICUS/S2_HARMONIZED" and card.input.frames == 12
    assert [s.name for s in card.preprocessing] == ["galileo_select", "galileo_normalize", "resize"]


def test_module_hooks_register_embedder_and_steps():
    got: list = []
    rg.register_embedders(register=got.append)
    steps: dict = {}
    rg.register_preprocessors(register=steps.__setitem__)
    assert got == [rg.Galileo] and steps == {"galileo_select": rg.galileo_select,
                                              "galileo_normalize": rg.galileo_normalize}


def test_normalisation_is_the_authors_std_normalizer():
    # config/normalization.json "13": B2 mean 1395.3408730676722, std 917.7041440370853; VV -11.7287.../4.8871...
    assert rg.SHIFT["B2"] == pytest.approx(1395.3408730676722 - 2 * 917.7041440370853)
    assert rg.DIV["B2"] == pytest.approx(4 * 917.7041440370853)
    assert rg.SHIFT["VV"] == pytest.approx(-11.728724389184965 - 2 * 4.887145774840316)
    assert (rg.SHIFT["NDVI"], rg.DIV["NDVI"]) == (0.0, 1.0)
    assert list(rg.SHIFT) == list(rg.SPACE_TIME_BANDS)


def test_published_key_layout_nano_and_full_size_scaling():
    """The authors' nano encoder.pt key list (names and shapes, recorded from their file) is exactly this
    network's; tiny and base have the same keys with the widths of their configs."""
    for v in rg.Galileo.card.variants:
        d = v.params["embedding_size"]
        scale = {128: d, 512: 4 * d, 32: d // 4}  # width, MLP width, quarter width; no other dim is one of these
        per_block = {k.split(".", 2)[2]: s for k, s in LAYOUT.items() if k.startswith("blocks.0.")}
        want = {k: [scale.get(n, n) for n in s] for k, s in LAYOUT.items() if not k.startswith("blocks.")}
        want.update({f"blocks.{i}.{k}": [scale.get(n, n) for n in s]
                     for i in range(v.params["depth"]) for k, s in per_block.items()})
        with torch.device("meta"):
            got = {k: list(t.shape) for k, t in rgm.Galileo(v.params).state_dict().items()}
        assert got == want, v.name


def test_galileo_select_order_fill_and_ndvi():
    rng = np.random.default_rng(0)
    bands = ("B12",) + tuple(b for b in rg.S2_BANDS if b != "B12") + ("VH", "VV")  # any order in
    data = rng.uniform(100, 5000, (2, len(bands), 4, 4)).astype(np.float32)
    valid = np.ones((2, 4, 4), bool)
    valid[0, 0, 0] = valid[1, 3, 3] = False
    raster = Raster(data, bands, GridSpec("EPSG:32632", 690000.0, 5340000.0, 10.0, 4, 4), (None, None), valid)
    out = rg.galileo_select(raster)
    assert out.bands == rg.SPACE_TIME_BANDS
    b4 = data[:, bands.index("B4")]
    mean_b4 = b4[valid].mean()
    assert out.data[0, 4, 0, 0] == pytest.approx(mean_b4, rel=1e-5)  # filled with the item's valid mean
    nir, red = out.data[:, 8], out.data[:, 4]
    np.testing.assert_allclose(out.data[:, -1], (nir - red) / (nir + red), rtol=1e-5)
    norm = rg.galileo_normalize(out, rg.SHIFT, rg.DIV)
    np.testing.assert_allclose(norm.data[:, 2], (out.data[:, 2] - rg.SHIFT["B2"]) / rg.DIV["B2"], rtol=1e-5)
    np.testing.assert_array_equal(norm.data[:, -1], out.data[:, -1])  # NDVI passes through


@pytest.mark.parametrize("bands, err, match", [
    (("B2", "B3"), SpecError, "whole"),                # a partial S2_RGB group
    (("B2", "B3", "B4", "QA60"), UnknownBandError, "QA60"),
    (("VV",), SpecError, "whole"),
])
def test_select_refuses_bands_it_cannot_take(bands, err, match):
    raster = Raster(np.zeros((1, len(bands), 2, 2), np.float32), bands,
                    GridSpec("EPSG:32632", 0.0, 0.0, 10.0, 2, 2), (None,), np.ones((1, 2, 2), bool))
    with pytest.raises(err, match=match):
        rg.galileo_select(raster)


@pytest.mark.parametrize("sensor, err, match", [
    (SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B2", "SR_B3", "SR_B4"), 30), SpecError, "no Galileo channel group"),
    (SensorSpec(rg.S2_COLLECTION, ("B2", "B3"), 10, frames=12), SpecError, "whole"),
    (SensorSpec(rg.S2_COLLECTION, ("B2", "B3", "B4", "B1"), 10, frames=12), UnknownBandError, "B1"),
    (SensorSpec(rg.S2_COLLECTION, rg.S2_BANDS, 10, frames=25), SpecError, "1..24 frames"),
    ((S2, SensorSpec(rg.S1_COLLECTION, rg.S1_BANDS, 10, frames=6)), SpecError, "same frames"),
])
def test_bad_requests_are_refused_before_any_fetch_or_weights(small_registered, sensor, err, match):
    from rs_embed import get_embedding

    provider = FakeProvider(bands=rg.S2_BANDS + rg.S1_BANDS + ("B1", "SR_B2", "SR_B3", "SR_B4"))
    with pytest.raises(err, match=match):
        get_embedding("galileo_small_test", ROI, WHEN, backend=provider, sensor=sensor)
    assert provider.calls == 0


def test_missing_weights_refused_before_fetch_and_named(tmp_path, monkeypatch):
    from rs_embed import get_embedding

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    provider = FakeProvider(bands=rg.S2_BANDS)
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError, match="not recorded on this machine") as err:
        get_embedding("galileo", ROI, WHEN, backend=provider, variant="base", device="cpu")
    assert rg.REPO_ID in str(err.value) and "models/base/encoder.pt" in str(err.value) and "weights=" in str(err.value)
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError) as err:
        get_embedding("galileo", ROI, WHEN, backend=provider, device="cpu")
    assert rg.REPO_ID in str(err.value) and "models/nano/encoder.pt" in str(err.value)
    assert provider.calls == 0


def test_tiny_default_weights_verified_against_the_commits_lfs_digest_then_offline(tmp_path, monkeypatch):
    """tiny's default spec (pinned commit, digest from it) on a random file with the authors' layout: the first
    load reads the LFS sha256 from the (faked) Hub metadata, later offline loads through the public API use the
    recorded digest, and changed bytes at the same pin are refused."""
    from rs_embed import get_embedding

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    w = rg.Galileo.card.variant("tiny").weights
    sd = _state(rg.Galileo.card.variant("tiny").params, seed=6)
    path = tmp_path / "wd" / w.repo_id.replace("/", "__") / w.filename
    path.parent.mkdir(parents=True)
    torch.save(sd, path)
    monkeypatch.setenv("RS_EMBED_WEIGHTS_DIR", str(tmp_path / "wd"))
    with fake_hub_lfs({(w.repo_id, w.revision, w.filename): file_sha256(path)}) as calls:
        rg.Galileo(rg.Galileo.card.variant("tiny"), "cpu").load()
    assert calls == [(w.repo_id, w.revision, w.filename)]
    build_hf_cache(tmp_path / "hub", w.repo_id, w.revision, {w.filename: path})
    provider = FakeProvider(bands=rg.S2_BANDS)
    with offline_hub(tmp_path / "hub"):  # no Hub, no weights folder: the Hub cache copy, the recorded digest
        emb = get_embedding("galileo", ROI, WHEN, backend=provider, variant="tiny", device="cpu")
    assert emb.data.shape == (192,) and np.isfinite(emb.data).all()
    assert emb.meta["weights"]["revision"] == w.revision and emb.meta["weights"]["sha256"] == file_sha256(path)
    shutil.rmtree(tmp_path / "rs" / "converted")  # else the verified conversion is used and the .pt not read
    torch.save({**sd, "norm.weight": torch.ones(192)}, tmp_path / "changed.pt")
    build_hf_cache(tmp_path / "hub2", w.repo_id, w.revision, {w.filename: tmp_path / "changed.pt"})
    with offline_hub(tmp_path / "hub2"), pytest.raises(WeightsError, match="sha256 mismatch"):
        rg.Galileo(rg.Galileo.card.variant("tiny"), "cpu").load()


def test_nano_pinned_path_loads_a_pt_file_with_the_published_layout(tmp_path, monkeypatch):
    """The Hub path as production runs it (pinned revision and filename under models/nano, .pt opened with
    weights_only, converted, strict) on a random file with the authors' nano keys; ".backbone" infixes dropped."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    sd = random_state({k: tuple(s) for k, s in LAYOUT.items()}, seed=3)
    sd = {k.replace("blocks.", "blocks.backbone.", 1) if k.startswith("blocks.0.") else k: v for k, v in sd.items()}
    path = tmp_path / "encoder.pt"
    torch.save(sd, path)
    rev = "3" * 40
    build_hf_cache(tmp_path / "hub", rg.REPO_ID, rev, {NANO.weights.filename: path})
    spec = weights_spec_for(rg.REPO_ID, rev, NANO.weights.filename, path)
    emb = rg.Galileo(attrs.evolve(NANO, weights=spec), "cpu")
    with offline_hub(tmp_path / "hub"):
        emb.load()
    got = emb.model.state_dict()
    assert torch.equal(got["blocks.0.attn.q.weight"], sd["blocks.backbone.0.attn.q.weight"])
    assert torch.equal(got["norm.weight"], sd["norm.weight"])


def test_full_size_base_loads_strictly_from_a_user_file_and_runs(tmp_path, monkeypatch):
    """Full-size base: a random file with every key of the layout, through weights= (your own file)."""
    from rs_embed_core.weights import local_weights

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "rs"))
    base = rg.Galileo.card.variant("base")
    path = tmp_path / "encoder.pt"
    torch.save(_state(base.params, seed=4), path)
    emb = rg.Galileo(attrs.evolve(base, weights=local_weights(str(path), base)), "cpu")
    emb.load()
    path.unlink()
    assert sum(p.numel() for p in emb.model.parameters()) > 80_000_000
    pixels = {"S2_RGB": torch.randn(1, 2, 3, 32, 32)}
    with torch.inference_mode():
        pooled, grid = emb.model(pixels, torch.ones(1, 2, 4, 4, dtype=torch.bool), torch.tensor([[5, 6]]),
                                 torch.tensor([[1.0, 0.0, 0.0]]), 8, torch.tensor([10.0], dtype=torch.float64))
    assert pooled.shape == (1, 768) and grid.shape == (1, 768, 4, 4) and torch.isfinite(grid).all()


def _inputs(b=2, t=3, hw=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    groups = {"S2_RGB": torch.randn(b, t, 3, hw, hw, generator=g), "NDVI": torch.randn(b, t, 1, hw, hw, generator=g)}
    return groups, torch.tensor([[0, 5, 11], [3, 4, 7]])[:b, :t], lonlat_to_xyz(torch.tensor([11.6, -70.6])[:b],
                                                                               torch.tensor([48.1, -33.4])[:b])


def test_masked_tokens_do_not_influence_and_batch_equals_items():
    net = _net(SMALL_PARAMS, seed=1)
    groups, months, loc = _inputs()
    vis = torch.ones(2, 3, 4, 4, dtype=torch.bool)
    vis[0, 1] = False  # item 0: frame 1 empty
    vis[1, :, 2, 3] = False  # item 1: one patch masked in every frame
    res = torch.tensor([10.0, 20.0], dtype=torch.float64)
    with torch.inference_mode():
        pooled, grid = net(groups, vis, months, loc, 8, res)
        noisy = {k: v.clone() for k, v in groups.items()}
        noisy["S2_RGB"][0, 1] += 100.0  # pixels of the masked frame
        noisy["S2_RGB"][1, :, :, 16:24, 24:32] -= 50.0  # pixels of the masked patch
        p2, g2 = net(noisy, vis, months, loc, 8, res)
        torch.testing.assert_close(p2, pooled, rtol=0, atol=1e-5)
        torch.testing.assert_close(g2, grid, rtol=0, atol=1e-5)
        for i in range(2):
            pi, gi = net({k: v[i:i + 1] for k, v in groups.items()}, vis[i:i + 1], months[i:i + 1], loc[i:i + 1], 8,
                         res[i:i + 1])
            torch.testing.assert_close(pi[0], pooled[i], rtol=0, atol=1e-5)
            torch.testing.assert_close(gi[0], grid[i], rtol=0, atol=1e-5)
        # months, location and pixel size are inputs: each changes the embedding
        for other in (net(groups, vis, (months + 3) % 12, loc, 8, res)[0], net(groups, vis, months, -loc, 8, res)[0],
                      net(groups, vis, months, loc, 8, res * 4)[0]):
            assert (other - pooled).abs().max() > 1e-4


def test_grid_is_row_major_north_up():
    """With no blocks every grid cell sees only its own patch: perturbing the top-right patch's pixels
    changes grid[:, 0, -1] alone (the grid is in spatial order, row 0 north)."""
    net = _net({**SMALL_PARAMS, "depth": 0}, seed=2)
    groups, months, loc = _inputs(b=1)
    vis = torch.ones(1, 3, 4, 4, dtype=torch.bool)
    res = torch.tensor([10.0], dtype=torch.float64)
    with torch.inference_mode():
        _, grid = net(groups, vis, months, loc, 8, res)
        moved = {k: v.clone() for k, v in groups.items()}
        moved["S2_RGB"][..., 0:8, 24:32] += 5.0
        _, grid2 = net(moved, vis, months, loc, 8, res)
    changed = (grid2 - grid).abs().amax(dim=1)[0] > 1e-6
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 3] = True
    assert torch.equal(changed, expected)


def test_patch_size_flexibility_upsampled_input_runs_at_any_patch_size():
    net = _net(SMALL_PARAMS, seed=3)
    groups, months, loc = _inputs(b=1, hw=16)
    vis4 = torch.ones(1, 3, 4, 4, dtype=torch.bool)
    with torch.inference_mode():
        pooled, grid = net(groups, vis4, months, loc, 4, torch.tensor([20.0], dtype=torch.float64))
    assert grid.shape == (1, 32, 4, 4) and torch.isfinite(pooled).all()


def test_side_inputs_reach_the_network_through_the_public_api(small_registered, tmp_path):
    """grid == the network on the same preprocessed pixels with the frames' months, the ROI's location and
    the grid's pixel size; masks from empty frames."""
    from rs_embed import get_embedding
    from rs_embed_core.runner import load_embedder

    provider = FakeProvider(bands=rg.S2_BANDS)
    with random_weights("galileo_small_test", "small", tmp_path, seed=1):
        emb = get_embedding("galileo_small_test", ROI, WHEN, OutputSpec.grid(), backend=provider, device="cpu")
        net = load_embedder(SmallGalileo, SmallGalileo.card.variant("small"), "cpu").model
    raster = provider.fetch(FetchRequest(grid_for(ROI, 10.0), WHEN, SensorSpec(rg.S2_COLLECTION, rg.S2_BANDS, 10,
                                                                                frames=12)))
    pre = apply_chain(raster, rg.Galileo.card.preprocessing)
    assert pre.bands == rg.S2_BANDS + ("NDVI",) and pre.data.shape == (12, 11, 32, 32)
    x = torch.from_numpy(pre.data)[None]
    groups = {g: x[:, :, [pre.bands.index(b) for b in dict(rg.SPACE_TIME_GROUPS)[g]]]
              for g in ("S2_RGB", "S2_Red_Edge", "S2_NIR_10m", "S2_NIR_20m", "S2_SWIR", "NDVI")}
    months = torch.tensor([[t.month - 1 for t in raster.times]])
    assert emb.meta["model_extra"]["months"] == months[0].tolist()
    assert emb.meta["model_extra"]["masked_tokens"] == 0
    loc = lonlat_to_xyz(torch.tensor([ROI.lon], dtype=torch.float64), torch.tensor([ROI.lat], dtype=torch.float64))
    with torch.inference_mode():
        expected = net(groups, torch.ones(1, 12, 4, 4, dtype=torch.bool), months, loc.float(), 8,
                       torch.tensor([10.0], dtype=torch.float64))[1][0].numpy()
    assert emb.data.shape == (32, 4, 4)
    np.testing.assert_allclose(emb.data, expected, rtol=1e-5, atol=1e-5)


def test_sentinel1_alone_and_with_sentinel2(small_registered, tmp_path):
    from rs_embed import get_embedding

    provider = FakeProvider(bands=rg.S2_BANDS + rg.S1_BANDS)
    when = TemporalSpec.range("2022-01-01", "2022-04-01")
    with random_weights("galileo_small_test", "small", tmp_path, seed=2):
        s1 = get_embedding("galileo_small_test", ROI, when, backend=provider, device="cpu",
                           sensor=SensorSpec(rg.S1_COLLECTION, rg.S1_BANDS, 10, frames=3))
        both = get_embedding("galileo_small_test", ROI, when, backend=provider, device="cpu",
                             sensor=(SensorSpec(rg.S2_COLLECTION, rg.S2_BANDS, 10, frames=3),
                                     SensorSpec(rg.S1_COLLECTION, rg.S1_BANDS, 10, frames=3)))
    assert s1.meta["model_extra"]["groups"] == ["S1"]
    assert both.meta["model_extra"]["groups"] == [g for g, _ in rg.SPACE_TIME_GROUPS]
    assert s1.data.shape == both.data.shape == (32,) and np.abs(s1.data - both.data).max() > 1e-4


def test_forward_needs_frame_dates():
    emb = SmallGalileo(SMALL)
    grid = GridSpec("EPSG:32632", 690000.0, 5340000.0, 10.0, 32, 32)
    ctx = BatchContext(grids=(grid,), centers_lonlat=((11.6, 48.1),), times=((dt.datetime(2022, 1, 15), None),),
                       temporal=WHEN, sensor=S2, want="pooled", band_names=("B2", "B3", "B4"))
    with pytest.raises(SpecError, match="date of every frame"):
        emb.forward(torch.zeros(1, 2, 3, 32, 32), ctx)


def test_strict_loading_refuses_files_that_do_not_fit(tmp_path):
    report = check_strict_loading(SmallGalileo, "small", tmp_path)
    assert {"extra key refused", "missing key refused", "wrong shape refused"} <= set(report.checks)


def test_embedder_contract_on_random_weights(small_registered, tmp_path):
    with random_weights("galileo_small_test", "small", tmp_path, seed=0):
        report = check_embedder_contract("galileo_small_test", variant="small",
                                         provider=FakeProvider(bands=rg.S2_BANDS))
    assert report.pooled_dim == 32 and all(s[0] == 32 for s in report.grid_shapes)
    assert "batch == single (grid)" in report.checks


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_galileo, rs_embed; assert 'galileo' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_export_with_another_model_equals_single_calls(small_registered, tmp_path):
    pytest.importorskip("rs_embed_baseline")
    from rs_embed import export_batch, get_embedding
    from rs_embed_core.export import load_export

    provider = FakeProvider(bands=rg.S2_BANDS)
    rois = [ROI, PointBuffer(11.62, 48.1, 160)]
    when = TemporalSpec.range("2022-03-01", "2022-06-01")
    with random_weights("galileo_small_test", "small", tmp_path / "w", seed=5):
        export_batch(spatials=rois, names=["a", "b"], temporal=when, models=["galileo_small_test", "mosaiks"],
                     out=tmp_path / "x", layout="combined", backend=provider, format="npz", device="cpu")
        single = get_embedding("galileo_small_test", rois[1], when, backend=provider, device="cpu")
    got = load_export(tmp_path / "x")
    assert set(got.embeddings) == {"galileo_small_test", "mosaiks"}
    assert list(got.status["galileo_small_test"]) == ["ok", "ok"]
    np.testing.assert_allclose(got.embeddings["galileo_small_test"][1], single.data, rtol=1e-5, atol=1e-6)


class _CloudyProvider(FakeProvider):
    """FakeProvider whose frame 1 is empty (an empty temporal bin) and whose top-left patch is clouded in frame 0."""

    def fetch(self, request):  # type: ignore[no-untyped-def]
        raster = super().fetch(request)
        valid = raster.valid.copy()
        valid[1] = False
        valid[0, :8, :8] = False
        return raster.replace(valid=valid, data=np.where(valid[:, None], raster.data, 0.0).astype(np.float32))


def test_empty_frames_and_clouded_patches_become_masked_tokens_through_the_api(small_registered, tmp_path):
    from rs_embed import get_embedding
    from rs_embed_core.runner import load_embedder

    provider = _CloudyProvider(bands=rg.S2_BANDS)
    sensor = SensorSpec(rg.S2_COLLECTION, rg.S2_BANDS, 10, frames=3)
    when = TemporalSpec.range("2022-01-01", "2022-04-01")
    with random_weights("galileo_small_test", "small", tmp_path, seed=6):
        emb = get_embedding("galileo_small_test", ROI, when, backend=provider, sensor=sensor, device="cpu",
                            on_low_valid="allow")
        net = load_embedder(SmallGalileo, SmallGalileo.card.variant("small"), "cpu").model
    assert emb.meta["model_extra"]["masked_tokens"] == 16 + 1  # frame 1 (4 x 4 patches) + one patch of frame 0
    raster = provider.fetch(FetchRequest(grid_for(ROI, 10.0), when, sensor))
    pre = apply_chain(raster, rg.Galileo.card.preprocessing)
    x = torch.from_numpy(pre.data)[None]
    groups = {g: x[:, :, [pre.bands.index(b) for b in dict(rg.SPACE_TIME_GROUPS)[g]]]
              for g in ("S2_RGB", "S2_Red_Edge", "S2_NIR_10m", "S2_NIR_20m", "S2_SWIR", "NDVI")}
    visible = torch.ones(1, 3, 4, 4, dtype=torch.bool)
    visible[0, 1] = False
    visible[0, 0, 0, 0] = False
    loc = lonlat_to_xyz(torch.tensor([ROI.lon]), torch.tensor([ROI.lat]))
    months = torch.tensor([[t.month - 1 for t in raster.times]])
    with torch.inference_mode():
        expected = net(groups, visible, months, loc, 8, torch.tensor([10.0], dtype=torch.float64))[0][0].numpy()
    np.testing.assert_allclose(emb.data, expected, rtol=1e-5, atol=1e-5)
