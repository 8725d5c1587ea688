"""A synthetic Copernicus-Embed file of the real layout (global 0.25 degree EPSG:4326 lattice, 721 x 1440
cells, 768 float32 bands, 0 = no data) in an offline Hugging Face dataset cache. It is written sparse:
only a few patches of cells hold random vectors, so the file stays small."""

from __future__ import annotations

import numpy as np
import pytest

import rs_embed_copernicus_embed as ce
from rs_embed_core.fetching import raster_cache
from rs_embed_core.plugins import load_plugins, pm
from rs_embed_core.testing import build_hf_cache, file_sha256, offline_hub
from rs_embed_core.card import WeightsSpec

HEIGHT, WIDTH = 721, 1440
ORIGIN = (-180.125, 90.125)  # top-left corner: cell centres on multiples of 0.25 degree
# (row0, col0, rows, cols) of the patches that hold data: Shanghai, both edges of the map at the equator
PATCHES = {"shanghai": (230, 1205, 8, 8), "east_edge": (356, 1436, 8, 4), "west_edge": (356, 0, 8, 4)}


@pytest.fixture(scope="session")
def embed_map(tmp_path_factory):
    """(path, {patch: (row0, col0, values (768, rows, cols))}) of the synthetic map."""
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path_factory.mktemp("copernicus") / "embed_map_310k.tif"
    rng = np.random.default_rng(0)
    patches = {}
    profile = dict(driver="GTiff", dtype="float32", width=WIDTH, height=HEIGHT, count=ce.DIM, crs="EPSG:4326",
                   transform=from_origin(ORIGIN[0], ORIGIN[1], 0.25, 0.25), tiled=True, blockxsize=16,
                   blockysize=16, interleave="pixel", sparse_ok=True, nodata=None)
    with rasterio.open(path, "w", **profile) as dst:
        for name, (r0, c0, h, w) in PATCHES.items():
            values = rng.uniform(-1, 1, (ce.DIM, h, w)).astype(np.float32)
            dst.write(values, window=rasterio.windows.Window(c0, r0, w, h))
            patches[name] = (r0, c0, values)
    return path, patches


@pytest.fixture
def hub(embed_map, tmp_path):
    """An offline Hub cache holding the synthetic file under the real repository and revision; the
    WeightsSpec pins its own sha256 (the real file's differs)."""
    path, _ = embed_map
    spec = WeightsSpec(ce.MAP_FILE.repo_id, ce.MAP_FILE.revision, ce.MAP_FILE.filename, file_sha256(path),
                       ce.MAP_FILE.license, repo_type="dataset")
    build_hf_cache(tmp_path / "hf", spec.repo_id, spec.revision, {spec.filename: path}, repo_type="dataset")
    with offline_hub(tmp_path / "hf"):
        yield spec


@pytest.fixture
def plugin():
    load_plugins()
    added = not pm.is_registered(ce)
    if added:
        pm.register(ce, name="copernicus-embed-test")
    raster_cache.clear()
    yield ce
    raster_cache.clear()
    if added:
        pm.unregister(ce)


@pytest.fixture
def provider(hub, plugin):
    return ce.CopernicusEmbedProvider(map_file=hub)
