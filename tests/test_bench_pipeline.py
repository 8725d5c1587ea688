"""bench/bench_pipeline.py's smallest piece, (d), on a tiny scene: the benchmark's "few lines a user would
write" must compute the same composite as the local provider, or its ratio compares different work."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_pipeline.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_pipeline", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_scene(out: Path, bench) -> list[Path]:
    """Three dated 12-band uint16 files, 300 x 300 px at 10 m on the UTM 51N lattice; nodata holes on two dates."""
    from affine import Affine

    rng = np.random.default_rng(1)
    x0, y0, n = 350_000.0, 3_460_000.0, 300
    paths = []
    for k, date in enumerate(("2022-06-15", "2022-07-20", "2022-08-25")):
        dn = rng.integers(1, 10_000, size=(len(bench.BANDS), n, n), dtype=np.uint16)
        if k:  # overlapping clouds on the last two dates: pixels with 1, 2 and 3 valid dates
            dn[:, 40 + 60 * (k - 1): 160 + 60 * (k - 1), 30 + 50 * (k - 1): 200 + 60 * (k - 1)] = 0
        path = out / f"tiny_{date}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=len(bench.BANDS), dtype="uint16",
                           crs="EPSG:32651", transform=Affine(10.0, 0, x0, 0, -10.0, y0), nodata=0) as dst:
            dst.write(dn)
            for i, b in enumerate(bench.BANDS, start=1):
                dst.set_band_description(i, b)
            dst.update_tags(RS_EMBED_COLLECTION=bench.COLLECTION)
        paths.append(path)
    return paths


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # rasterio's from_bounds on affine 3
def test_read_comparison_times_the_same_composite(tmp_path):
    bench = _bench()
    files = _tiny_scene(tmp_path, bench)
    rois = bench.scene_rois(files, 2)
    assert rois == bench.scene_rois(files, 2)  # deterministic
    res = bench.read_comparison(files, rois)
    assert res["rois"] == 2 and res["provider_ms"] > 0 and res["user_ms"] > 0 and res["user_unmasked_ms"] > 0
    assert res["mask_mismatch_px"] == 0
    assert res["max_rel_diff"] <= 1e-6
    # the masked version really masks: the plain median differs where a date is nodata
    with rasterio.open(files[0]) as a, rasterio.open(files[1]) as b, rasterio.open(files[2]) as c:
        from rs_embed_core.grid import grid_for

        grid = grid_for(rois[0], 10.0)
        med, ok = bench.user_composite([a, b, c], grid)
        plain, _ = bench.user_composite([a, b, c], grid, masked=False)
    assert grid.shape == (256, 256) and ok.all()
    assert not np.allclose(med, plain)
