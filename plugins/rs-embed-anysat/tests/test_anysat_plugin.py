"""AnySat: card, request checks before any fetch, release layout, network invariants, the public API,
strict loading, contract (batch == single), export beside another model.

No reference implementation installs here (the authors' code is torch.hub-only), so the network is
checked against published facts: the release checkpoint's key layout and parameter count, iRPE's
bucket function, the L-TAE date code, and invariants of the architecture (locality and position-
independence of the patch stage, frame-order invariance of the L-TAE, grid and dense order).
tests/test_anysat_reference.py compares with the authors' code wherever it is importable.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import attrs
import numpy as np
import pytest
import torch

from rs_embed_core.card import Step, WeightsSpec
from rs_embed_core.embedder import BatchContext
from rs_embed_core.errors import SpecError, UnknownBandError, WeightsError
from rs_embed_core.grid import GridSpec, grid_for
from rs_embed_core.nn import date_code, days_of_year, irpe_buckets
from rs_embed_core.preprocess import apply_chain
from rs_embed_core.providers import FetchRequest
from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing import (
    FakeProvider,
    check_embedder_contract,
    check_strict_loading,
    random_weights,
    registered,
)

import rs_embed_anysat as ra
import rs_embed_anysat_model as ram

WHEN = TemporalSpec.range("2022-01-01", "2023-01-01")
S2 = SensorSpec(ra.S2_L2A, ra.S2_BANDS, 10, frames=8)
ROI = PointBuffer(2.35, 48.85, 120)  # 24 px at 10 m: the default input, no resampling
SMALL_PARAMS = {**ra.VARIANTS[0].params, "embed_dim": 64, "depth": 1, "heads": 2}
PLACEHOLDER = WeightsSpec("g-astruc/AnySat", "0" * 40, "models/AnySat.pth", "0" * 64, "mit")
SMALL = ra.Variant("small", pooled_dim=64, grid_dim=64, weights=PLACEHOLDER, params=SMALL_PARAMS)
SMALL_DENSE = attrs.evolve(SMALL, name="small-dense", grid_dim=128,
                           params={**SMALL_PARAMS, "patch_size_m": 20, "grid": "dense"})


class SmallAnySat(ra.AnySat):
    card = attrs.evolve(ra.AnySat.card, id="anysat_small_test", aliases=(), variants=(SMALL, SMALL_DENSE),
                        default_variant="small")


@pytest.fixture
def small_registered():
    with registered(SmallAnySat):
        yield SmallAnySat


def _net(params=SMALL_PARAMS, seed=0) -> ram.AnySatEncoder:
    torch.manual_seed(seed)
    net = ram.AnySatEncoder(params).eval()
    with torch.no_grad():  # a random-looking encoder (default inits leave norms at identity, iRPE at zero)
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _series(b=2, t=5, size=12, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, 10, size, size, generator=g), torch.randint(0, 365, (b, t), generator=g).float()


# ----------------------------------------------------------------------------- card and tables


def test_card_variants_default_and_no_pinned_weights():
    card = ra.AnySat.card
    json.dumps(card.describe())
    assert card.default_variant == "base" and card.variant().params["patch_size_m"] == 10
    assert [(v.name, v.pooled_dim, v.grid_dim, v.params["patch_size_m"], v.params["grid"]) for v in card.variants] == [
        ("base", 768, 768, 10, "patch"), ("base-p20", 768, 768, 20, "patch"), ("base-p40", 768, 768, 40, "patch"),
        ("base-dense", 768, 1536, 20, "dense")]
    assert all(v.weights is None for v in card.variants)  # no verifiable sha256: weights= yours
    assert (card.input.collection, card.input.bands, card.input.image_size, card.input.frames) == (
        "COPERNICUS/S2_SR_HARMONIZED", ra.S2_BANDS, 24, 8)
    assert [s.name for s in card.preprocessing] == ["normalize", "fill_invalid", "resize"]
    assert card.preprocessing[0].params["mean"][0] == pytest.approx(4304.33, abs=0.01)
    assert "Astruc" in card.citation and "weights=" in card.notes


def test_module_hook_registers_the_embedder():
    got: list[type] = []
    ra.register_embedders(register=got.append)
    assert got == [ra.AnySat]


def test_release_layout_and_published_parameter_count():
    with torch.device("meta"):
        sd = ram.AnySatEncoder(ra.AnySat.card.variant().params).state_dict()
    assert round(sum(t.numel() for t in sd.values()) / 1e6, 1) == ra.PUBLISHED_PARAMS_M
    assert {k.split(".")[0] for k in sd if k.startswith("projector_")} == {f"projector_{m}" for m in ra.MODALITIES}
    assert sd["projector_s2.patch_embed.inconv.0.weight"].shape == (96, 10)  # 10 bands -> D/8
    assert sd["projector_s2.patch_embed.inconv.17.weight"].shape == (768,)  # the 5th GroupNorm
    assert sd["projector_s2.patch_embed.in_norm.weight"].shape == (768,)
    assert "projector_s1.patch_embed.in_norm.weight" not in sd  # in_norm only for s2
    assert sd["projector_l8.patch_embed.inconv.0.weight"].shape == (96, 11)
    assert sd["projector_s2.patch_embed.attention_heads.Q"].shape == (16, 8)
    assert sd["projector_naip.patch_embed.weight"].shape == (768, 4, 8, 8)
    assert sd["spatial_encoder.predictor_blocks.5.attn.rpe_k.lookup_table_weight"].shape == (1, 64, 8)
    assert sd["blocks.5.attn.qkv.weight"].shape == (2304, 768)
    assert sd["blocks.6.attn.q_learned"].shape == (1, 1, 768) and sd["blocks.6.attn.wk.bias"].shape == (768,)
    assert "blocks.7.norm1.weight" not in sd and sd["projector_s2.pad_parameter"].shape == ()


def test_irpe_buckets_follow_the_piecewise_euclidean_index():
    # distances 0..4 on a row: exact up to alpha 1.9, then alpha + log(d/alpha)/log(8) (beta - alpha), rounded:
    # 2 -> 1.95 -> 2, 3 -> 2.32 -> 2, 4 -> 2.58 -> 3; shifted by int(beta) = 3
    b = irpe_buckets(1, 5, skip=1)
    assert b.shape == (6, 6) and b[0].tolist() == [7] * 6 and b[:, 0].tolist() == [7] * 6
    assert b[1, 1:].tolist() == [3, 4, 5, 5, 6]
    far = irpe_buckets(1, 40, skip=0)
    assert far.max().item() == 6 and far.min().item() == 3  # clipped at beta; distances are never negative
    diag = irpe_buckets(3, 3, skip=0)
    assert diag[0, 4].item() == 4 and diag[0, 8].item() == 5  # sqrt 2 -> 1, sqrt 8 -> 3 -> 2.32 -> 2


def test_date_code_is_the_ltae_sinusoid():
    days = torch.tensor([[0.0, 100.0]])
    code = date_code(days, 4, 367, repeat=2)
    w = 367 ** 0.5
    want = [math.sin(100), math.cos(100), math.sin(100 / w), math.cos(100 / w)] * 2
    assert code.shape == (1, 2, 8)
    assert torch.allclose(code[0, 1], torch.tensor(want), atol=1e-6)
    assert code[0, 0].tolist() == [0.0, 1.0, 0.0, 1.0] * 2


def test_days_of_year_count_from_zero():
    times = ((dt.datetime(2022, 1, 1, 12), dt.date(2021, 12, 31), dt.date(2020, 12, 31)),)
    assert days_of_year(times, "AnySat") == [[0, 364, 365]]
    with pytest.raises(SpecError, match="date of every frame .its day of year"):
        days_of_year(((dt.date(2022, 1, 1), None),), "AnySat")


@pytest.mark.parametrize("h, w, patch, match", [
    (24, 24, 15, "multiple of 10 m"), (24, 24, 0, "multiple of 10 m"), (24, 20, 10, "square"),
    (25, 25, 20, "not a multiple of 2"),
])
def test_geometry_is_checked(h, w, patch, match):
    with pytest.raises(SpecError, match=match):
        ra.check_geometry(h, w, patch)


def test_geometry_gives_pixels_per_patch():
    assert [ra.check_geometry(24, 24, p) for p in (10, 20, 40, 120, 240)] == [1, 2, 4, 12, 24]


# ----------------------------------------------------------------------------- refused before any fetch


@pytest.mark.parametrize("kw, err, match", [
    (dict(sensor=SensorSpec("COPERNICUS/S2_HARMONIZED", ra.S2_BANDS, 10, frames=8)), SpecError, "one Sentinel-2"),
    (dict(sensor=SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"), 10, frames=8)), SpecError, "one Sentinel-2"),
    (dict(sensor=(S2, SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"), 10, frames=8))), SpecError, "one Sentinel-2"),
    (dict(sensor=SensorSpec(ra.S2_L2A, ra.S2_BANDS + ("B1",), 10, frames=8)), UnknownBandError, "B1"),
    (dict(sensor=SensorSpec(ra.S2_L2A, ra.S2_BANDS[::-1], 10, frames=8)), SpecError, "in that order"),
    (dict(sensor=SensorSpec(ra.S2_L2A, ra.S2_BANDS[:4], 10, frames=8)), SpecError, "exactly the ten bands"),
    (dict(variant="small-dense", preprocessing=[("resize", {"size": 25})]), SpecError, "not a multiple of 2"),
])
def test_bad_requests_fail_before_any_fetch(small_registered, kw, err, match):
    from rs_embed import get_embedding

    provider = FakeProvider()
    with pytest.raises(err, match=match):
        get_embedding("anysat_small_test", ROI, WHEN, backend=provider, **kw)
    assert provider.calls == 0


def test_no_weights_is_a_weights_error_before_any_fetch_naming_the_file():
    from rs_embed import get_embedding

    provider = FakeProvider()
    with registered(ra.AnySat), pytest.raises(WeightsError) as err:
        get_embedding("anysat", ROI, WHEN, backend=provider)
    assert provider.calls == 0
    assert "g-astruc/AnySat" in str(err.value) and "models/AnySat.pth" in str(err.value)
    assert "weights=" in str(err.value)


def test_forward_refuses_frames_without_dates_and_other_bands():
    emb = SmallAnySat(SMALL)
    emb.model = _net()
    grid = GridSpec("EPSG:32631", 450000.0, 5410000.0, 10.0, 24, 24)
    ctx = BatchContext(grids=(grid,), centers_lonlat=((2.35, 48.85),), times=((dt.date(2022, 3, 1), None),),
                       temporal=WHEN, sensor=S2, want="grid", band_names=ra.S2_BANDS)
    with pytest.raises(SpecError, match="date of every frame"):
        emb.forward(torch.zeros(1, 2, 10, 24, 24), ctx)
    with pytest.raises(SpecError, match="bands"):
        emb.forward(torch.zeros(1, 2, 4, 24, 24), attrs.evolve(ctx, band_names=("B2", "B3", "B4", "B8")))


# ----------------------------------------------------------------------------- the network's invariants


def test_output_shapes_for_each_patch_size_in_metres():
    net = _net()
    x, days = _series(size=24)
    with torch.inference_mode():
        for patch_m, n in ((10, 24), (20, 12), (40, 6), (80, 3), (240, 1)):
            tile, grid, dense = net.embed_series(x, days, "s2", ra.check_geometry(24, 24, patch_m), dense=True)
            assert tile.shape == (2, 64) and grid.shape == (2, 64, n, n) and dense.shape == (2, 128, 24, 24)
            assert torch.isfinite(tile).all() and torch.isfinite(dense).all()


def test_patch_stage_is_local_and_in_spatial_order():
    """Changing pixels of the patch at row 1, column 3 (from the north-west) moves that patch token only."""
    net = _net()
    x, days = _series(size=12)
    y = x.clone()
    y[:, :, :, 2:4, 6:8] += 1.0
    with torch.inference_mode():
        a, sa = net.patch_tokens(x, days, "s2", 2)
        b, sb = net.patch_tokens(y, days, "s2", 2)
    changed = (a - b).abs().amax(dim=(0, 3)) > 1e-6
    assert changed.nonzero().tolist() == [[1, 3]]
    assert ((sa - sb).abs().amax(dim=(0, 3, 4, 5)) > 1e-6).nonzero().tolist() == [[1, 3]]


def test_patch_token_does_not_depend_on_where_the_patch_lies():
    """Positions inside a patch are relative to it: the same pixels give the same token anywhere."""
    net = _net()
    x, days = _series(size=12)
    x[:, :, :, 8:12, 4:8] = x[:, :, :, 0:4, 0:4]  # patch (0, 0) copied to patch (2, 1) at 40 m
    with torch.inference_mode():
        tokens, _ = net.patch_tokens(x, days, "s2", 4)
    assert torch.allclose(tokens[:, 0, 0], tokens[:, 2, 1], atol=1e-5)
    assert not torch.allclose(tokens[:, 0, 0], tokens[:, 1, 1], atol=1e-3)


def test_ltae_sees_dated_frames_as_a_set():
    """Permuting frames together with their dates changes nothing; moving a date does."""
    net = _net()
    x, days = _series(size=6, t=6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.inference_mode():
        base = net.embed_series(x, days, "s2", 2)[0]
        shuffled = net.embed_series(x[:, perm], days[:, perm], "s2", 2)[0]
        redated = net.embed_series(x, days + 60, "s2", 2)[0]
    assert torch.allclose(base, shuffled, atol=1e-5)
    assert not torch.allclose(base, redated, atol=1e-3)


def test_dense_is_the_patch_token_beside_each_pixels_sub_patch_token():
    net = _net()
    x, days = _series(size=12)
    with torch.inference_mode():
        _, grid, dense = net.embed_series(x, days, "s2", 3, dense=True)
        _, subs = net.patch_tokens(x, days, "s2", 3)
    r, c = 7, 4  # patch (2, 1), sub-patch (1, 1)
    assert torch.equal(dense[:, :64, r, c], grid[:, :, 2, 1])
    assert torch.allclose(dense[:, 64:, r, c], subs[:, 2, 1, 1, 1])


def test_items_of_a_batch_are_independent():
    net = _net()
    x, days = _series(b=3, size=12)
    with torch.inference_mode():
        tile, grid, _ = net.embed_series(x, days, "s2", 2)
        one = net.embed_series(x[1:2], days[1:2], "s2", 2)
    assert torch.allclose(tile[1:2], one[0], atol=1e-5) and torch.allclose(grid[1:2], one[1], atol=1e-5)


def test_image_modalities_and_modis_are_refused_by_the_series_path():
    net = _net()
    x, days = _series(size=12)
    for modality in ("aerial", "modis", "l7"):
        with pytest.raises(SpecError, match="10 m time series"):
            net.patch_tokens(x, days, modality, 2)


# ----------------------------------------------------------------------------- loading and the public API


def test_strict_loading_release_layout(tmp_path):
    report = check_strict_loading(SmallAnySat, "small", tmp_path)
    assert {"fitting file loads", "extra key refused", "missing key refused", "wrong shape refused"} <= set(
        report.checks)


def test_embedder_contract_on_random_weights(small_registered, tmp_path):
    with random_weights("anysat_small_test", "small", tmp_path, seed=0):
        report = check_embedder_contract("anysat_small_test", variant="small", provider=FakeProvider())
    assert report.pooled_dim == 64 and report.grid_shapes == ((64, 24, 24), (64, 24, 24))
    assert "batch == single (grid)" in report.checks


def test_public_api_is_the_network_on_the_chain_output_with_frame_dates(small_registered, tmp_path):
    from rs_embed import get_embedding
    from rs_embed_core.runner import load_embedder

    provider = FakeProvider()
    with random_weights("anysat_small_test", "small-dense", tmp_path, seed=1):
        emb = get_embedding("anysat_small_test", ROI, WHEN, OutputSpec.grid(), backend=provider, device="cpu",
                            variant="small-dense")
        pooled = get_embedding("anysat_small_test", ROI, WHEN, backend=provider, device="cpu",
                               variant="small-dense")
        net = load_embedder(SmallAnySat, SmallAnySat.card.variant("small-dense"), "cpu").model
    raster = provider.fetch(FetchRequest(grid_for(ROI, 10.0), WHEN, S2))
    pre = apply_chain(raster, ra.AnySat.card.preprocessing)
    days = [t.timetuple().tm_yday - 1 for t in raster.times]
    assert len(days) == 8 and days == sorted(days) and days[0] < 30 and days[-1] > 330  # 8 bins of 2022
    with torch.inference_mode():
        tile, _, dense = net.embed_series(torch.from_numpy(pre.data)[None], torch.tensor([days]).float(), "s2", 2,
                                          dense=True)
    assert emb.data.shape == (128, 24, 24)
    np.testing.assert_allclose(emb.data, dense[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pooled.data, tile[0].numpy(), rtol=1e-5, atol=1e-5)
    assert emb.meta["model_extra"]["days_of_year"] == days and emb.meta["model_extra"]["patch_size_m"] == 20
    assert emb.grid.res == pytest.approx(10.0)  # dense: one cell per Sentinel-2 pixel


def test_export_with_another_model_equals_get_embeddings_batch(small_registered, tmp_path):
    rs_embed_baseline = pytest.importorskip("rs_embed_baseline")
    from rs_embed import export_batch, get_embeddings_batch, load_export

    rois = [ROI, PointBuffer(2.36, 48.85, 120)]
    with registered(rs_embed_baseline.Mosaiks), random_weights("anysat_small_test", "small", tmp_path / "w", seed=3):
        res = export_batch(rois, WHEN, ["anysat_small_test", "mosaiks"], tmp_path / "out",
                           backend=FakeProvider(), device="cpu")
        ref = get_embeddings_batch("anysat_small_test", rois, WHEN, backend=FakeProvider(), device="cpu")
    assert (res.ok, res.failed) == (4, 0)
    got = load_export(tmp_path / "out").embeddings
    np.testing.assert_allclose(got["anysat_small_test"], np.stack([e.data for e in ref]), rtol=1e-5, atol=1e-6)
    assert got["mosaiks"].shape[0] == 2


def test_listing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rs_embed_anysat, rs_embed; assert 'anysat' in rs_embed.list_models(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_tiled_large_roi_stitches_patch_grids(small_registered, tmp_path):
    from rs_embed import get_embedding

    with random_weights("anysat_small_test", "small", tmp_path, seed=5):
        emb = get_embedding("anysat_small_test", PointBuffer(2.35, 48.85, 240), WHEN, OutputSpec.grid(),
                            backend=FakeProvider(), device="cpu", input_prep="tile")
    assert emb.data.shape == (64, 48, 48) and np.isfinite(emb.data).all()  # 2 x 2 tiles of 24 px
    assert emb.grid.shape == (48, 48) and emb.grid.res == pytest.approx(10.0)  # one 10 m patch per cell
