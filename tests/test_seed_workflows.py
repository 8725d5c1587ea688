"""The user documentation's calls (shared/seed-workflows.md), as written, with backend="gee" swapped
for the local sample scene (Earth Engine is not reachable here) and RemoteCLIP on random weights
served from an offline Hugging Face cache (the real checkpoint cannot be downloaded here)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rs_embed_remoteclip")
pytest.importorskip("torch")

from rs_embed import (  # noqa: E402
    OutputSpec, PointBuffer, SensorSpec, SpecError, TemporalSpec, get_embedding, get_embeddings_batch,
    inspect_gee_patch, inspect_provider_patch,
)
from rs_embed_core.providers.local import LocalProvider  # noqa: E402
from rs_embed_core.sample import make_sample_scene  # noqa: E402
from rs_embed_core.testing import random_weights  # noqa: E402


@pytest.fixture(scope="module")
def local(tmp_path_factory, random_weights_cache):
    root = tmp_path_factory.mktemp("seed")
    make_sample_scene(root / "scene")
    with random_weights("remoteclip", None, random_weights_cache):  # built once a session (root conftest.py)
        yield LocalProvider(root / "scene")


def test_single_embedding(local):
    emb = get_embedding(
        "remoteclip",
        spatial=PointBuffer(lon=121.5, lat=31.2, buffer_m=2048),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        output=OutputSpec.pooled(),
        backend=local,
        device="auto",
    )
    assert emb.data.shape == (512,) and np.isfinite(emb.data).all()
    assert emb.meta["model"] == "remoteclip" and emb.meta["variant"] == "ViT-B-32"
    assert emb.meta["valid_fraction"] > 0.9


def test_batch_embeddings_for_one_model(local):
    spatials = [
        PointBuffer(121.5, 31.2, 2048),
        PointBuffer(120.5, 30.2, 2048),
    ]
    embs = get_embeddings_batch(
        "remoteclip",
        spatials=spatials,
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        output=OutputSpec.pooled(),
        backend=local,
    )
    assert [e.data.shape for e in embs] == [(512,), (512,)]
    assert not np.allclose(embs[0].data, embs[1].data)  # two different places
    single = get_embedding("remoteclip", spatials[1], TemporalSpec.range("2022-06-01", "2022-09-01"),
                           OutputSpec.pooled(), backend=local)
    np.testing.assert_allclose(single.data, embs[1].data, rtol=1e-5, atol=1e-5)


def test_grid_output_is_a_7x7_georeferenced_token_grid(local):
    emb = get_embedding("remoteclip", spatial=PointBuffer(121.5, 31.2, 2048),
                        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
                        output=OutputSpec.grid(), backend=local)
    assert emb.data.shape == (768, 7, 7)
    assert emb.grid.crs == "EPSG:32651" and emb.grid.shape == (7, 7)
    assert emb.grid.res == pytest.approx(4100 / 7)  # 410 px x 10 m footprint, 7 cells


def test_inspect_inputs_before_modeling(local, tmp_path):
    report = inspect_provider_patch(
        spatial=PointBuffer(121.5, 31.2, 2048),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        sensor=SensorSpec(
            collection="COPERNICUS/S2_SR_HARMONIZED",
            bands=("B4", "B3", "B2"),
            scale_m=10,
        ),
        backend=local,
    )
    assert list(report["bands"]) == ["B4", "B3", "B2"] and report["grid"]["shape"] == [410, 410]
    assert 0 < report["bands"]["B4"]["median"] < 10000
    alias = inspect_gee_patch(
        spatial=PointBuffer(121.5, 31.2, 2048),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        sensor=SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B4", "B3", "B2"), scale_m=10),
        backend=local,
    )
    assert alias["bands"] == report["bands"]


def test_large_roi_with_tiling(local):
    emb = get_embedding(
        "remoteclip",
        spatial=PointBuffer(121.5, 31.2, 8000),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        output=OutputSpec.grid(),
        backend=local,
        input_prep="tile",
    )
    from rs_embed_core.grid import grid_for

    roi = grid_for(PointBuffer(121.5, 31.2, 8000), 10)  # 1600 x 1600 px
    assert emb.data.shape == (768, 50, 50)  # 64 tiles of 224 px, 32 px tokens, cropped to the ROI
    assert (emb.grid.x0, emb.grid.y0, emb.grid.res) == (roi.x0, roi.y0, 320.0)
    t = emb.meta["tiling"]
    assert (t["tile_size"], t["tiles"], t["input_size"]) == (224, 64, [1600, 1600])
    # the 16 km ROI reaches past the 12 km sample scene: the cells outside it say so (valid 0, NaN), no others
    seen = emb.valid > 0
    assert np.isfinite(emb.data[:, seen]).all() and np.isnan(emb.data[:, ~seen]).all()
    assert emb.meta["valid_fraction"] == 0.5625 and 0.5 < seen.mean() < 0.6
