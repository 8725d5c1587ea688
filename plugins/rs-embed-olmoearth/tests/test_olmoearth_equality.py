"""Our OlmoEarth path equals the authors' package called directly, on one shared random state dict.

Ours: raw digital numbers -> the card's chain -> the plugin's forward (their encoder class, our
weights loaded from an offline Hub cache through rs-embed's pinned path). Theirs, built here
independently of the plugin: `OlmoEarthPretrain_v1(...)` with `load_state_dict` (their loader's
semantics), their `Normalizer` for the version, a MaskedOlmoEarthSample with (day, month - 1, year)
timestamps and the documented token mask, `encoder(..., patch_size, input_res)` one item at a time,
and their `pool_unmasked_tokens`. fp32, max |diff| <= 1e-5 on pooled and grid outputs.
"""

from __future__ import annotations

import datetime as dt
import warnings

import attrs
import numpy as np
import pytest
import torch

pytest.importorskip("olmoearth_pretrain_minimal")

from olmoearth_pretrain_minimal import Normalizer, OlmoEarthPretrain_v1  # noqa: E402
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.flexi_vit import PoolingType  # noqa: E402
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality  # noqa: E402
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import (  # noqa: E402
    MaskedOlmoEarthSample,
    MaskValue,
)

from rs_embed_core.embedder import BatchContext  # noqa: E402
from rs_embed_core.grid import GridSpec  # noqa: E402
from rs_embed_core.preprocess import apply_chain  # noqa: E402
from rs_embed_core.raster import Raster  # noqa: E402
from rs_embed_core.specs import SensorSpec  # noqa: E402
from rs_embed_core.testing import build_hf_cache, offline_hub, weights_spec_for  # noqa: E402
from rs_embed_core.weights import CACHE_ENV  # noqa: E402

import rs_embed_olmoearth as ro  # noqa: E402

TOL = 1e-5
B, T, S, P = 3, 4, 64, 4  # items, frames, pixels a side, patch size
TIMES = tuple(dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=45 * k + 22) for k in range(T))
SENSOR = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ro.BANDS, 10, frames=T)


def _random_state_dict(reference: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Their own init, every floating tensor perturbed (LayerNorms and biases matter too)."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
            for k, v in reference.state_dict().items()}


def _inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw S2 DNs (B, T, 12, S, S) in the card's band order and valid masks (B, T, S, S).

    Item 0 is clear; item 1 has an empty temporal bin (frame 2) and a cloud covering 2 x 3 patches
    in frame 0; item 2 has a 1-patch corner never observed and a frame-3 cloud covering half a patch.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(300, 5000, size=(B, T, 12, 8, 8))
    data = np.repeat(np.repeat(coarse, 8, axis=3), 8, axis=4) + rng.normal(0, 150, size=(B, T, 12, S, S))
    valid = np.ones((B, T, S, S), bool)
    valid[1, 2] = False
    valid[1, 0, 8:16, 20:32] = False
    valid[2, :, :4, :4] = False
    valid[2, 3, 40:44, 40:42] = False
    data[~np.broadcast_to(valid[:, :, None], data.shape)] = 0.0  # the provider's fill value
    return data.astype(np.float32), valid


def _missing(valid: np.ndarray) -> np.ndarray:
    """The documented token mask, written out independently: no valid pixel in (frame, patch), but
    some valid pixel of that patch in another frame."""
    out = np.zeros((B, T, S // P, S // P), bool)
    for b in range(B):
        for i in range(S // P):
            for j in range(S // P):
                seen = [valid[b, t, i * P:(i + 1) * P, j * P:(j + 1) * P].any() for t in range(T)]
                for t in range(T):
                    out[b, t, i, j] = not seen[t] and any(seen)
    return out


@pytest.fixture(scope="module", params=["v1", "v1.1", "v1.2"])
def pair(request, tmp_path_factory):
    """(their model, our embedder) for the nano size of one version, sharing a random state dict."""
    version = request.param
    root = tmp_path_factory.mktemp(f"olmoearth-{version}")
    torch.manual_seed(0)
    ref = OlmoEarthPretrain_v1(model_size="nano", model_version=version)
    sd = _random_state_dict(ref.model)
    ref.model.load_state_dict(sd, strict=True)
    ref.eval()

    variant = ro.OlmoEarth.card.variant(f"{version}-nano")
    rev = "6" * 40
    path = root / "weights.pth"
    torch.save(sd, path)
    spec = weights_spec_for(variant.weights.repo_id, rev, "weights.pth", path)
    build_hf_cache(root / "hub", variant.weights.repo_id, rev, {"weights.pth": path})
    path.unlink()
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(root / "rs-embed"))
    try:
        with offline_hub(root / "hub"):
            ours = ro.OlmoEarth(attrs.evolve(variant, weights=spec), "cpu")
            ours.load()
    finally:
        mp.undo()
    return version, ref, ours


def _ours(ours: ro.OlmoEarth, data: np.ndarray, valid: np.ndarray, res: float = 10.0, want: str = "grid",
          times: tuple[dt.datetime, ...] = TIMES):
    grid = GridSpec("EPSG:32633", 500000.0, 4500000.0, res, S, S)
    prepped = [apply_chain(Raster(data[b], ro.BANDS, grid, times, valid[b]), ro.OlmoEarth.card.preprocessing)
               for b in range(len(data))]
    x = torch.from_numpy(np.stack([p.data for p in prepped]))
    ctx = BatchContext(grids=tuple(p.grid for p in prepped), centers_lonlat=((15.0, 40.0),) * len(data),
                       times=tuple(p.times for p in prepped), temporal=None, sensor=SENSOR,  # type: ignore[arg-type]
                       want=want, band_names=prepped[0].bands, valid=np.stack([p.valid for p in prepped]))
    with torch.inference_mode():
        return ours.forward(x, ctx)


def _theirs(ref, version: str, data: np.ndarray, valid: np.ndarray, input_res: float = 10.0):
    """Their package on the same raw input: Normalizer, sample, encoder per item, their pooling."""
    normalizer = Normalizer(std_multiplier=2.0, model_type=version)
    raw = np.where(valid[:, :, None], data, np.nan).transpose(0, 3, 4, 1, 2)  # (B, H, W, T, C), invalid = NaN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "bands were missing and set to 0"
        x = torch.from_numpy(normalizer.normalize(Modality.SENTINEL2_L2A, raw).astype(np.float32))
    days = torch.tensor([[[t.day, t.month - 1, t.year] for t in TIMES]] * len(data), dtype=torch.long)
    missing = torch.from_numpy(_missing(valid))
    band_sets = ref.model.encoder.patch_embeddings.tokenization_config.get_num_bandsets("sentinel2_l2a")
    pixel = missing.repeat_interleave(P, 2).repeat_interleave(P, 3).permute(0, 2, 3, 1)  # (B, H, W, T)
    mask = torch.where(pixel, MaskValue.MISSING.value, MaskValue.ONLINE_ENCODER.value)[..., None]
    mask = mask.expand(-1, -1, -1, -1, band_sets).contiguous()
    pooled, grids = [], []
    with torch.inference_mode():
        for b in range(len(data)):
            sample = MaskedOlmoEarthSample(timestamps=days[b:b + 1], sentinel2_l2a=x[b:b + 1],
                                           sentinel2_l2a_mask=mask[b:b + 1])
            tm = ref.model.encoder(sample, patch_size=P, input_res=input_res, fast_pass=False)["tokens_and_masks"]
            pooled.append(tm.pool_unmasked_tokens(PoolingType.MEAN, spatial_pooling=False)[0])
            if not missing[b].any():  # their spatial pooling is defined for unmasked inputs
                grids.append(tm.pool_unmasked_tokens(PoolingType.MEAN, spatial_pooling=True)[0].permute(2, 0, 1))
            else:
                keep = (tm.sentinel2_l2a_mask[0] == MaskValue.ONLINE_ENCODER.value).float()[..., None]
                cell = (tm.sentinel2_l2a[0] * keep).sum(dim=(2, 3)) / keep.sum(dim=(2, 3))
                grids.append(cell.permute(2, 0, 1))
    return torch.stack(pooled), torch.stack(grids), missing


def test_chain_equals_their_normalizer():
    data, valid = _inputs(1)
    grid = GridSpec("EPSG:32633", 500000.0, 4500000.0, 10.0, S, S)
    ours = apply_chain(Raster(data[1], ro.BANDS, grid, TIMES, valid[1]), ro.OlmoEarth.card.preprocessing).data
    raw = np.where(valid[1][:, None], data[1], np.nan).transpose(0, 2, 3, 1)  # (T, H, W, C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        theirs = Normalizer(std_multiplier=2.0, model_type="v1.2").normalize(Modality.SENTINEL2_L2A, raw)
    np.testing.assert_allclose(ours, theirs.transpose(0, 3, 1, 2), rtol=0, atol=2e-6)
    assert [b.removeprefix("B").lstrip("0") for b in Modality.SENTINEL2_L2A.band_order] == \
        [b.removeprefix("B") for b in ro.BANDS]


def test_equals_the_package_with_empty_frames_and_clouds(pair):
    version, ref, ours = pair
    data, valid = _inputs(0)
    out = _ours(ours, data, valid)
    pooled, grid, missing = _theirs(ref, version, data, valid)
    assert missing[1, 2].all() and missing[1, 0].sum() == 6 and not missing[0].any()
    assert not missing[2, :, 0, 0].any()  # never observed: stays visible (fill values)
    assert missing[2, 3].sum() == 0  # half a patch clouded: still visible
    assert out.pooled.shape == (B, 128) and out.grid.shape == (B, 128, S // P, S // P)
    assert float((out.pooled - pooled).abs().max()) <= TOL
    assert float((out.grid - grid).abs().max()) <= TOL
    assert float(pooled.std()) > 0.1 and float(grid.std()) > 0.1


def test_masks_dates_and_pixel_size_change_the_result(pair):
    """What the plugin adds matters: ignoring the mask, shifting the dates or the GSD changes outputs."""
    version, ref, ours = pair
    data, valid = _inputs(0)
    base = _ours(ours, data, valid).pooled
    unmasked = _ours(ours, data, np.ones_like(valid)).pooled
    coarse = _ours(ours, data, valid, res=20.0).pooled
    assert float((base[1] - unmasked[1]).abs().max()) > 1e-3 and float((base[0] - unmasked[0]).abs().max()) <= TOL
    assert float((base - coarse).abs().max()) > 1e-3
    theirs20, _, _ = _theirs(ref, version, data, valid, input_res=20.0)
    assert float((coarse - theirs20).abs().max()) <= TOL  # the grid's pixel size is their input_res
    shifted = _ours(ours, data, valid, times=tuple(t + dt.timedelta(days=92) for t in TIMES)).pooled  # other months
    assert float((base - shifted).abs().max()) > 1e-3


def test_single_equals_batch_with_masked_items(pair):
    _, _, ours = pair
    data, valid = _inputs(2)
    batch = _ours(ours, data, valid)
    for b in range(B):
        one = _ours(ours, data[b:b + 1], valid[b:b + 1])
        assert float((one.pooled[0] - batch.pooled[b]).abs().max()) <= TOL
        assert float((one.grid[0] - batch.grid[b]).abs().max()) <= TOL


def test_pooled_request_skips_the_grid(pair):
    _, _, ours = pair
    data, valid = _inputs(3)
    out = _ours(ours, data[:1], valid[:1], want="pooled")
    assert out.grid is None and out.pooled.shape == (1, 128)
