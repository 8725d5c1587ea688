import datetime as dt

import pytest

from rs_embed_core.convert import from_json, to_json
from rs_embed_core.errors import SpecError, UnknownBandError
from rs_embed_core.specs import (
    BBox, OutputSpec, PointBuffer, SensorSpec, Spatial, TemporalSpec, check_input_prep,
)


@pytest.mark.parametrize("lon,lat", [(181, 0), (-180.5, 0), (0, 91), (0, -90.01), (0, 85)])
def test_point_rejects_out_of_range(lon, lat):
    with pytest.raises(SpecError):
        PointBuffer(lon, lat, 100)


@pytest.mark.parametrize("buf", [0, -5, float("nan"), float("inf"), "x"])
def test_point_rejects_bad_buffer(buf):
    with pytest.raises(SpecError):
        PointBuffer(10, 10, buf)


def test_point_positional_like_the_docs():
    p = PointBuffer(121.5, 31.2, 2048)
    assert (p.lon, p.lat, p.buffer_m) == (121.5, 31.2, 2048.0)


@pytest.mark.parametrize("box", [(1, 0, 1, 1), (0, 1, 1, 1), (0, 2, 1, 1), (0, 0, 200, 1)])
def test_bbox_rejects_min_ge_max_and_range(box):
    with pytest.raises(SpecError):
        BBox(*box)


def test_temporal_half_open_and_year():
    t = TemporalSpec.range("2022-06-01", "2022-09-01")
    assert t.contains(dt.date(2022, 6, 1)) and t.contains(dt.date(2022, 8, 31))
    assert not t.contains(dt.date(2022, 9, 1))
    y = TemporalSpec.year(2020)
    assert (y.start, y.end) == (dt.date(2020, 1, 1), dt.date(2021, 1, 1))


@pytest.mark.parametrize("a,b", [("2022-09-01", "2022-09-01"), ("2022-09-02", "2022-09-01"), ("2022-13-01", "2023-01-01"), ("june", "july")])
def test_temporal_rejects(a, b):
    with pytest.raises(SpecError):
        TemporalSpec.range(a, b)


def test_sensor_unknown_band_for_known_collection():
    with pytest.raises(UnknownBandError, match="B99"):
        SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B99"), 10)
    # a collection we do not know (user data) defers the band check to the provider
    SensorSpec("my/drone", ("red", "nir"), 0.5)


@pytest.mark.parametrize("scale", [0, -10])
def test_sensor_rejects_non_positive_scale(scale):
    with pytest.raises(SpecError):
        SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4",), scale)


def test_sensor_rejects_bad_composite_and_empty_bands():
    with pytest.raises(SpecError):
        SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4",), 10, composite="mean-ish")
    with pytest.raises(SpecError):
        SensorSpec("COPERNICUS/S2_SR_HARMONIZED", (), 10)
    with pytest.raises(SpecError):
        SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B4"), 10)


def test_output_spec():
    assert OutputSpec.pooled().mode == "pooled"
    assert OutputSpec.pooled("max").pooling == "max"
    assert OutputSpec.grid().mode == "grid"
    with pytest.raises(SpecError):
        OutputSpec.pooled("median")


def test_input_prep():
    assert check_input_prep("resize") == "resize"
    with pytest.raises(SpecError, match="tile"):
        check_input_prep("tile")
    with pytest.raises(SpecError):
        check_input_prep("squash")


@pytest.mark.parametrize("obj,cls", [
    (PointBuffer(121.5, 31.2, 2048), Spatial),
    (BBox(1, 2, 3, 4), Spatial),
    (TemporalSpec.range("2022-06-01", "2022-09-01"), TemporalSpec),
    (SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B3", "B2"), 10, composite="mosaic"), SensorSpec),
    (OutputSpec.pooled("max"), OutputSpec),
])
def test_json_round_trip(obj, cls):
    assert from_json(to_json(obj), cls) == obj


def test_json_structure_validates():
    with pytest.raises(SpecError):
        from_json('{"type": "point_buffer", "lon": 500, "lat": 0, "buffer_m": 1}', Spatial)
    with pytest.raises(SpecError):
        from_json('{"type": "circle"}', Spatial)
