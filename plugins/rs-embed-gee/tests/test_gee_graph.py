"""What the provider asks Earth Engine for: the serialised graphs the real client POSTs."""

from __future__ import annotations

import pytest

from rs_embed_core.collections import CLOUD_SCORE_PLUS_COLLECTION, SCL_NOT_CLEAR
from rs_embed_core.errors import DataNotFoundError, SpecError
from rs_embed_core.specs import SensorSpec, TemporalSpec
from rs_embed_gee.fake import (
    L8,
    S2,
    arg,
    calls,
    constant,
    constants,
    month_scenes,
    quick_retry,
    s1_scenes,
    sample_grid,
)

GRID = sample_grid()


def names(expression):
    return {f for f, _ in calls(expression)}


def test_scene_listing_filters_collection_window_roi_and_limit(fake, provider, req):
    provider.fetch(req())
    (listing,) = fake.of("compute")
    e = listing.body["expression"]
    assert sorted(constants(e, "ImageCollection.load", "id")) == sorted([S2, CLOUD_SCORE_PLUS_COLLECTION])
    assert constants(e, "DateRange", "start") == ["2022-06-01"] and constants(e, "DateRange", "end") == ["2022-07-01"]
    assert constants(e, "GeometryConstructors.Rectangle", "coordinates") == [list(GRID.bounds)]
    assert constants(e, "GeometryConstructors.Rectangle", "geodesic") == [False]
    assert constants(e, "Projection", "crs") == ["EPSG:32651"]
    assert constants(e, "Collection.limit", "limit") == [provider.max_scenes]
    assert constants(e, "Collection.limit", "key") == ["system:time_start"]
    # per-image clear fraction over the ROI in the grid's CRS, and the scene cloud property
    assert "Image.reduceRegion" in names(e) and "Reducer.mean" in names(e)
    assert "CLOUDY_PIXEL_PERCENTAGE" in constants(e, "Element.get", "property")


def test_pixels_request_the_exact_grid_in_npy_with_named_bands(fake, provider, req):
    provider.fetch(req())
    (px,) = fake.of("computePixels")
    body = px.body
    assert body["fileFormat"] == "NPY"
    assert body["grid"] == {
        "dimensions": {"width": 64, "height": 48},
        "affineTransform": {"scaleX": 10.0, "shearX": 0.0, "translateX": 356450.0,
                            "shearY": 0.0, "scaleY": -10.0, "translateY": 3453380.0},
        "crsCode": "EPSG:32651",
    }
    assert body["bandIds"] == ["f0_c0", "f0_c1", "f0_c2", "f0_valid"]
    e = body["expression"]
    assert ["B4", "B3", "B2"] in constants(e, "Image.select", "bandSelectors")
    assert {"reduce.median", "Image.toFloat", "Image.unmask"} <= names(e)


def test_cloud_score_plus_mask_with_default_and_given_threshold(fake, provider, req):
    provider.fetch(req())
    e = fake.of("computePixels")[0].body["expression"]
    assert CLOUD_SCORE_PLUS_COLLECTION in constants(e, "ImageCollection.load", "id")
    gte = [a for f, a in calls(e) if f == "Image.gte"]
    assert len(gte) == 1
    threshold = arg(e, gte[0]["image2"])
    assert constant(arg(e, threshold["functionInvocationValue"]["arguments"]["value"])) == 0.6
    assert "Image.updateMask" in names(e) and "Filter.equals" in names(e)  # joined on system:index
    # a masked stand-in under the score: an image without a published score is masked, not an error
    assert {"ImageCollection.fromImages", "ImageCollection.merge", "ImageCollection.mosaic"} <= names(e)
    provider.fetch(req(SensorSpec(S2, ("B4",), 10, cloud_threshold=0.8)))
    e = fake.of("computePixels")[-1].body["expression"]
    gte = [a for f, a in calls(e) if f == "Image.gte"][0]
    assert constant(arg(e, arg(e, gte["image2"])["functionInvocationValue"]["arguments"]["value"])) == 0.8


def test_scl_qa60_and_landsat_qa_pixel_masks(fake, provider, req):
    provider.fetch(req(SensorSpec(S2, ("B4",), 10, cloud_mask="scl")))
    e = fake.of("computePixels")[-1].body["expression"]
    assert ["SCL"] in constants(e, "Image.select", "bandSelectors")
    assert constants(e, "Image.remap", "from") == [list(SCL_NOT_CLEAR)]
    assert CLOUD_SCORE_PLUS_COLLECTION not in constants(e, "ImageCollection.load", "id")
    fake.scenes[S2] += month_scenes(year=2021)  # QA60 is empty on Earth Engine from 2022-01-25 to 2024-02-28
    provider.fetch(req(SensorSpec(S2, ("B4",), 10, cloud_mask="qa60"), temporal=TemporalSpec.range("2021-06-01",
                                                                                                "2021-07-01")))
    e = fake.of("computePixels")[-1].body["expression"]
    assert ["QA60"] in constants(e, "Image.select", "bandSelectors")
    provider.fetch(req(SensorSpec(L8, ("SR_B4",), 30)))  # True -> the collection's default
    e = fake.of("computePixels")[-1].body["expression"]
    assert ["QA_PIXEL"] in constants(e, "Image.select", "bandSelectors")
    masks = [a for f, a in calls(e) if f == "Image.bitwiseAnd"]
    assert len(masks) == 1  # bits 0-4: fill, dilated cloud, cirrus, cloud, shadow
    assert "Image.updateMask" in names(e)
    provider.fetch(req(SensorSpec(S2, ("B4",), 10, cloud_mask=False)))
    e = fake.of("computePixels")[-1].body["expression"]
    assert "Image.updateMask" not in names(e) and "Image.remap" not in names(e)


def test_max_cloud_fraction_filters_scenes_by_metadata(fake, provider, req):
    provider.fetch(req(SensorSpec(S2, ("B4",), 10, max_cloud_fraction=0.2)))
    e = fake.of("compute")[-1].body["expression"]
    # the client writes lte(p, v) as not(greaterThan(p, v))
    assert "Filter.not" in names(e)
    assert constants(e, "Filter.greaterThan", "leftField") == ["CLOUDY_PIXEL_PERCENTAGE"]
    assert constants(e, "Filter.greaterThan", "rightValue") == [20.0]
    provider.fetch(req(SensorSpec(S2, ("B4",), 10)))
    assert "Filter.greaterThan" not in names(fake.of("compute")[-1].body["expression"])


@pytest.mark.parametrize("composite, function", [("median", "reduce.median"), ("mosaic", "ImageCollection.mosaic")])
def test_composite_of_the_listed_ids(fake, provider, composite, function, req):
    r = provider.fetch(req(SensorSpec(S2, ("B4",), 10, composite=composite)))
    e = fake.of("computePixels")[-1].body["expression"]
    assert function in names(e)
    ids = [s.id for s in fake.scenes[S2]]
    assert constants(e, "Filter.listContains", "rightValue") == [ids] or ids in [
        constant(arg(e, a.get("leftValue"))) for f, a in calls(e) if f == "Filter.listContains"]
    assert r.meta["image_ids"] == ids
    if composite == "mosaic":  # oldest first, so the latest image ends on top
        assert "system:time_start" in constants(e, "Collection.limit", "key")


def test_least_cloudy_asks_for_the_scene_with_the_clearest_roi(fake, provider, req):
    fake.scenes[S2][2].clear = 0.95  # clearer than all others (the last has 0.8)
    r = provider.fetch(req(SensorSpec(S2, ("B4",), 10, composite="least_cloudy")))
    e = fake.of("computePixels")[-1].body["expression"]
    chosen = fake.scenes[S2][2].id
    lists = [constant(arg(e, a[k])) for f, a in calls(e) if f == "Filter.listContains" for k in a]
    assert [chosen] in lists
    assert r.meta["image_ids"] == [chosen]
    assert r.times == (fake.scenes[S2][2].time,)


def test_least_cloudy_tie_takes_the_latest(fake, provider, req):
    for s in fake.scenes[S2]:
        s.clear = 0.5
    r = provider.fetch(req(SensorSpec(S2, ("B4",), 10, composite="least_cloudy")))
    assert r.meta["image_ids"] == [fake.scenes[S2][-1].id]


def test_check_refuses_masks_and_thresholds_the_collection_lacks(provider, fake, req):
    with pytest.raises(SpecError, match="not available"):
        provider.check(SensorSpec(L8, ("SR_B4",), 30, cloud_mask="scl"))
    with pytest.raises(SpecError, match="cloud_score_plus' only"):
        provider.check(SensorSpec(S2, ("B4",), 10, cloud_mask="scl", cloud_threshold=0.5))
    with pytest.raises(SpecError, match="not available"):
        provider.check(SensorSpec("COPERNICUS/S1_GRD", ("VV",), 10, cloud_mask="qa60"))
    provider.check(SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"), 10))  # SAR: no mask by default
    assert fake.requests == []  # nothing reached the server


def test_sentinel1_keeps_images_with_every_asked_polarisation(fake, provider, req):
    fake.scenes["COPERNICUS/S1_GRD"] = s1_scenes()
    r = provider.fetch(req(SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH", "angle"), 10, composite="mosaic")))
    e = fake.of("compute")[-1].body["expression"]
    assert sorted(constants(e, "Filter.listContains", "rightValue")) == ["VH", "VV"]
    assert constants(e, "Filter.listContains", "leftField") == ["transmitterReceiverPolarisation"] * 2
    assert "Image.updateMask" not in names(e)  # SAR: no cloud mask
    # the single-polarisation and the EW image are not mosaicked in
    ids = [s.id for s in fake.scenes["COPERNICUS/S1_GRD"]]
    assert r.meta["image_ids"] == [ids[0], ids[1], ids[4]]


def test_sentinel1_mosaics_one_instrument_mode_and_resolution(fake, req):
    """The catalogue warns that a mosaic needs a homogeneous set: IW at 10 m by default, orbit pass optional."""
    fake.scenes["COPERNICUS/S1_GRD"] = scenes = s1_scenes()
    ids = [s.id for s in scenes]
    vv = SensorSpec("COPERNICUS/S1_GRD", ("VV",), 10, composite="mosaic")
    r = fake.provider(retry=quick_retry()).fetch(req(vv))
    assert r.meta["scene_properties"] == {"instrumentMode": "IW", "resolution_meters": 10}
    assert r.meta["image_ids"] == [ids[0], ids[1], ids[3], ids[4]]  # not the EW 40 m image
    e = fake.of("compute")[-1].body["expression"]
    assert sorted(constants(e, "Filter.equals", "leftField")) == ["instrumentMode", "resolution_meters"]
    r = fake.provider(retry=quick_retry(), s1_orbit_pass="DESCENDING").fetch(req(vv))
    assert r.meta["image_ids"] == [ids[1], ids[4]]
    assert r.meta["scene_properties"]["orbitProperties_pass"] == "DESCENDING"
    hh = SensorSpec("COPERNICUS/S1_GRD", ("HH",), 10, composite="mosaic")
    with pytest.raises(DataNotFoundError):  # the only HH image is EW 40 m
        fake.provider(retry=quick_retry()).fetch(req(hh))
    r = fake.provider(retry=quick_retry(), s1_instrument_mode="EW", s1_resolution_m=40).fetch(req(hh))
    assert r.meta["image_ids"] == [ids[2]]
    for bad in ({"s1_instrument_mode": "XX"}, {"s1_resolution_m": 20}, {"s1_orbit_pass": "up"}):
        with pytest.raises(SpecError, match=next(iter(bad))):
            fake.provider(**bad)
