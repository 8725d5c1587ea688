"""gse through the Earth Engine provider on the loopback fake server: what is read (collection, year,
grid), what comes back (mean of valid pixels, georeferenced grid), and what is refused before any call."""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed import BBox, OutputSpec, PointBuffer, SensorSpec, TemporalSpec, export_batch, get_embedding
from rs_embed_core.errors import SpecError
from rs_embed_core.grid import grid_for
from rs_embed_gee import GEEAuthError, GEEProvider
from rs_embed_gee.expressions import band_id
from rs_embed_gee.fake import constants, valid_of, value_of

from rs_embed_gse import CARD

GSE = CARD.input.collection

ROI = PointBuffer(121.5, 31.2, 200)  # 40 x 40 pixels at 10 m


def expected_pixels(spatial):
    """The fake's pixels for the request grid of `spatial` at 10 m: (64, H, W) values and the (H, W) mask."""
    grid = grid_for(spatial, 10.0)
    x0, y0 = int(round(grid.x0 / 10.0)), int(round(grid.y0 / 10.0))
    gx = np.arange(x0, x0 + grid.width)[None, :].repeat(grid.height, 0)
    gy = np.arange(y0, y0 - grid.height, -1)[:, None].repeat(grid.width, 1)
    data = np.stack([value_of(band_id(0, c), gx, gy) for c in range(64)])
    return grid, data, valid_of(gx, gy) > 0.5


def gse_windows(fake):
    """(start, end) of every scene listing the fake answered for the Satellite Embedding collection."""
    out = []
    for r in fake.of("compute"):
        e = r.body["expression"]
        if GSE in constants(e, "ImageCollection.load", "id"):
            out.append((constants(e, "DateRange", "start")[0][:10], constants(e, "DateRange", "end")[0][:10]))
    return out


def test_pooled_is_the_mean_of_the_valid_product_pixels(provider, fake):
    emb = get_embedding("gse", ROI, TemporalSpec.year(2022), backend=provider)
    grid, data, valid = expected_pixels(ROI)
    want = (data * valid).sum(axis=(1, 2), dtype=np.float64) / valid.sum()
    assert emb.data.shape == (64,)
    np.testing.assert_allclose(emb.data, want, rtol=1e-6)
    assert emb.meta["model"] == "gse" and emb.meta["source"]["collection"] == GSE
    assert emb.meta["source"]["image_ids"] == ["gse_2022_51N"]  # only that year's image
    assert gse_windows(fake) == [("2022-01-01", "2023-01-01")]
    assert 0.7 < emb.meta["valid_fraction"] < 0.9


def test_grid_is_the_product_on_the_request_utm_grid(provider):
    emb = get_embedding("gse_annual", ROI, TemporalSpec.year(2022), output=OutputSpec.grid(), backend=provider)
    grid, data, valid = expected_pixels(ROI)
    assert emb.grid == grid and emb.grid.crs == "EPSG:32651" and emb.grid.res == 10.0
    assert emb.data.shape == (64, grid.height, grid.width)
    np.testing.assert_array_equal(emb.data[:, valid], data[:, valid])
    assert np.isnan(emb.data[:, ~valid]).all()  # no valid product pixel under the cell: NaN, and its mask says so
    np.testing.assert_array_equal(emb.valid, valid.astype(np.float32))


def test_a_window_inside_a_year_selects_that_years_image(provider, fake):
    emb = get_embedding("gse", ROI, TemporalSpec.range("2021-06-01", "2021-09-01"), backend=provider)
    assert emb.meta["source"]["image_ids"] == ["gse_2021_51N"]
    assert gse_windows(fake) == [("2021-01-01", "2022-01-01")]


@pytest.mark.parametrize("temporal, match", [
    (TemporalSpec.range("2021-06-01", "2022-06-01"), r"spans the years 2021-2022.*2017-2025"),
    (TemporalSpec.year(2015), r"no year 2015; available: 2017-2025"),
])
def test_bad_years_are_refused_before_any_call(provider, fake, temporal, match):
    with pytest.raises(SpecError, match=match):
        get_embedding("gse", ROI, temporal, backend=provider)
    assert fake.requests == []


def test_sensor_or_preprocessing_for_a_product_is_refused_before_any_call(provider, fake):
    with pytest.raises(SpecError, match="takes no sensor="):
        get_embedding("gse", ROI, TemporalSpec.year(2022), backend=provider,
                      sensor=SensorSpec(GSE, ("A00", "A01"), 10))
    with pytest.raises(SpecError, match="takes no preprocessing="):
        get_embedding("gse", ROI, TemporalSpec.year(2022), backend=provider, preprocessing=[("clip", {})])
    assert fake.requests == []


def test_no_earth_engine_sign_in_is_the_gee_providers_auth_error(fake, plugins):
    with pytest.raises(GEEAuthError, match="earthengine authenticate"):
        get_embedding("gse", ROI, TemporalSpec.year(2022), backend=GEEProvider(project="p", url=fake.url))
    assert fake.requests == []


def test_roi_across_a_utm_zone_boundary_is_one_grid_in_the_centre_zone(provider, fake):
    roi = BBox(119.99, 30.0, 120.01, 30.01)  # zones 50 and 51 meet at 120 E
    emb = get_embedding("gse", roi, TemporalSpec.year(2022), output=OutputSpec.grid(), backend=provider)
    assert emb.grid == grid_for(roi, 10.0)
    pixels = [r.body["grid"] for r in fake.of("computePixels")]
    assert {p["crsCode"] for p in pixels} == {emb.grid.crs}  # asked on the request grid, not resampled here


def test_export_mixes_the_product_with_a_model_and_reads_it_once_per_roi(provider, fake, tmp_path):
    rois = [ROI, PointBuffer(120.5, 30.2, 200)]
    export_batch(spatials=rois, names=["a", "b"], temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
                 models=["gse", "spectral_stats"], out=str(tmp_path / "x"), layout="combined", backend=provider)
    assert len(gse_windows(fake)) == 2  # one scene listing (and one read) per ROI
    gse_reads = [r for r in fake.of("computePixels") if GSE in constants(r.body["expression"], "ImageCollection.load", "id")]
    assert len(gse_reads) == 2


def test_passes_the_embedder_contract(provider):
    from rs_embed_core.testing import check_embedder_contract

    report = check_embedder_contract("gse", provider=provider, temporal=TemporalSpec.year(2022),
                                     spatials=[ROI, PointBuffer(120.5, 30.2, 150)])
    assert report.checks


def test_a_year_without_an_image_over_the_roi_is_a_data_not_found_error(provider):
    from rs_embed_core.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError, match="no GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL image over the ROI"):
        get_embedding("gse", ROI, TemporalSpec.year(2023), backend=provider)  # the fake has 2021 and 2022 only
