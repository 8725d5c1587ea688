"""Which STAC collection and which asset serve each core collection and band, per catalog.

Core collection ids and band names are the ones in `rs_embed_core.collections` (Earth Engine
names); a `CollectionMap` says how one STAC catalog serves one of them. The two presets are
facts about public catalogs, with where each came from:

- Earth Search v1 (Element 84, https://earth-search.aws.element84.com/v1): Sentinel-2 L2A comes
  from `sentinel-2-c1-l2a` (ESA's reprocessed Collection 1: the -1000 DN offset is not pre-applied
  and raster:bands scale/offset are right), the collection Element 84 names as the replacement
  of the legacy `sentinel-2-l2a`, whose `earthsearch:boa_offset_applied` flag is wrong on some
  items (Element84/earth-search#66, #71: flag false, offset already removed, so shifting again
  sends half the values negative). Both name assets by common name (coastal, blue, ..., nir08,
  swir16, scl; checked on published c1 item JSON, e.g. S2B_T38XNF_20250422T091553_L2A); c1
  hrefs are public https COGs on e84-earth-search-sentinel-data.s3.us-west-2.amazonaws.com.
  Collection 1 still has gaps where the reprocessing has not been published (much of 2022 in
  places, early years; Element84/earth-search#29, #70): a window there finds fewer scenes or
  none. The legacy collection stays available as the opt-in EARTH_SEARCH_S2_LEGACY mapping,
  with the offset sanity check on. `landsat-c2-l2` uses the same common names plus lwir11 and
  qa_pixel, but its hrefs point into the requester-pays bucket s3://usgs-landsat, so reading
  them needs AWS credentials (Element84/earth-search and odc-stac usage notes).
- Planetary Computer (https://planetarycomputer.microsoft.com/api/stac/v1): `sentinel-2-l2a`
  assets are B01..B12, B8A and SCL (published item JSON); `landsat-c2-l2` uses the common
  names above; `sentinel-1-rtc` has vv/vh (and hh/hv) gamma0 terrain-corrected backscatter in
  linear power. Blob hrefs need a SAS token (signing.py).

Not verified live from this repository (no network in its test environment); the opt-in live
test checks them when RS_EMBED_STAC_LIVE=1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

from rs_embed_core.collections import known_collection
from rs_embed_core.errors import SpecError

# Per-pixel cloud masks this provider can compute: method -> the core band that carries it.
MASK_BANDS: dict[str, str] = {"scl": "SCL", "qa_pixel": "QA_PIXEL"}
TRANSFORMS = ("dn", "db")  # "db": linear power -> 10*log10 (Sentinel-1 RTC served as dB like Earth Engine)


def _assets(v: Any) -> dict[str, str]:
    if not isinstance(v, Mapping) or not v:
        raise SpecError(f"assets must be a non-empty mapping {{band name: asset key}}, got {v!r}")
    out = {}
    for band, key in v.items():
        if not isinstance(band, str) or not band or not isinstance(key, str) or not key:
            raise SpecError(f"assets entries must be non-empty strings (band -> asset key), got {band!r}: {key!r}")
        out[band] = key
    return out


def norm_platform(value: object) -> str:
    """'landsat-8', 'LANDSAT_8' and 'Landsat 8' all become 'landsat8'."""
    return re.sub(r"[^a-z0-9]", "", str(value).lower())


@frozen
class CollectionMap:
    """How one catalog serves one core collection.

    stac_collection: the catalog's collection id. assets: core band name -> asset key.
    platforms / id_prefixes: keep only items whose `platform` (normalised, see norm_platform)
    is listed or whose id starts with a listed prefix (one STAC collection holding several
    satellites, e.g. landsat-c2-l2); both empty keeps every item.
    require: property -> accepted values; an item with the property set to another value is
    dropped (e.g. Landsat tier T1). transform: "dn" keeps digital numbers; "db" converts linear
    power to decibels. requester_pays: s3:// hrefs are read with AWS_REQUEST_PAYER=requester.
    verify_offset: before shifting a scene's DN by a negative offset, check that the shift does not send
    many valid pixels negative (pixels.offset_check); if it would, the offset was already removed and the
    scene is kept as read (meta says so). needs: what reading this collection needs, shown in errors.
    """

    stac_collection: str
    assets: dict[str, str] = field(converter=_assets)
    platforms: tuple[str, ...] = field(default=(), converter=lambda v: tuple(norm_platform(p) for p in v))
    id_prefixes: tuple[str, ...] = field(default=(), converter=tuple)
    require: dict[str, tuple[str, ...]] = field(factory=dict, converter=lambda v: {k: tuple(x) for k, x in v.items()})
    transform: str = "dn"
    requester_pays: bool = False
    verify_offset: bool = False
    needs: str | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.stac_collection, str) or not self.stac_collection:
            raise SpecError(f"stac_collection must be a non-empty id, got {self.stac_collection!r}")
        if self.transform not in TRANSFORMS:
            raise SpecError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")

    def mask_methods(self) -> tuple[str, ...]:
        """The cloud-mask methods whose QA band this mapping serves, default first."""
        return tuple(m for m, band in MASK_BANDS.items() if band in self.assets)


def as_collection_map(value: CollectionMap | tuple[str, Mapping[str, str]]) -> CollectionMap:
    """A CollectionMap, or the short form (stac collection id, {band name: asset key})."""
    if isinstance(value, CollectionMap):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return CollectionMap(value[0], value[1])
    raise SpecError(
        f"a collection mapping is CollectionMap(...) or (stac_collection, {{band: asset key}}), got {value!r}"
    )


@frozen
class Catalog:
    """A STAC API and what it serves.

    signer: "planetary-computer" signs Azure blob hrefs with SAS tokens; None reads hrefs as
    they are. cloud_query: send the item-level cloud filter to the server as a STAC `query`
    (`eo:cloud_cover`); it is applied on the client either way. unavailable: core collection
    id -> why this catalog does not serve it (shown in the error).
    """

    name: str
    url: str
    collections: dict[str, CollectionMap] = field(
        converter=lambda v: {str(k): as_collection_map(m) for k, m in dict(v).items()}
    )
    signer: str | None = None
    cloud_query: bool = False
    unavailable: dict[str, str] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise SpecError(f"a STAC API url starts with http:// or https://, got {self.url!r}")
        if not self.collections:
            raise SpecError("a STAC catalog needs at least one collection mapping {core id: (stac id, {band: asset})}")
        if self.signer not in (None, "planetary-computer"):
            raise SpecError(f"signer must be None or 'planetary-computer', got {self.signer!r}")
        for cid, cmap in self.collections.items():
            coll = known_collection(cid)
            if coll is not None:
                unknown = [b for b in cmap.assets if b not in coll.band_names]
                if unknown:
                    raise SpecError(f"{self.name}: {cid} has no band(s) {unknown}; it has {list(coll.band_names)}")


S2_L2A = "COPERNICUS/S2_SR_HARMONIZED"
L8_L2 = "LANDSAT/LC08/C02/T1_L2"
L9_L2 = "LANDSAT/LC09/C02/T1_L2"
S1_GRD = "COPERNICUS/S1_GRD"

# Sentinel-2 L2A: core band -> Earth Search v1 common-name asset key.
_S2_EARTH_SEARCH = {
    "B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "rededge1", "B6": "rededge2",
    "B7": "rededge3", "B8": "nir", "B8A": "nir08", "B9": "nir09", "B11": "swir16", "B12": "swir22", "SCL": "scl",
}
# Sentinel-2 L2A on Planetary Computer: ESA band ids with two digits.
_S2_PLANETARY = {
    "B1": "B01", "B2": "B02", "B3": "B03", "B4": "B04", "B5": "B05", "B6": "B06", "B7": "B07", "B8": "B08",
    "B8A": "B8A", "B9": "B09", "B11": "B11", "B12": "B12", "SCL": "SCL",
}
# Landsat 8/9 collection 2 level 2 (both catalogs use the same common-name keys).
_LANDSAT = {
    "SR_B1": "coastal", "SR_B2": "blue", "SR_B3": "green", "SR_B4": "red", "SR_B5": "nir08", "SR_B6": "swir16",
    "SR_B7": "swir22", "ST_B10": "lwir11", "QA_PIXEL": "qa_pixel",
}
_T1 = {"landsat:collection_category": ("T1",)}


def _landsat(n: int, requester_pays: bool) -> CollectionMap:
    return CollectionMap("landsat-c2-l2", _LANDSAT, platforms=(f"landsat-{n}",), id_prefixes=(f"LC0{n}_",),
                         require=_T1, requester_pays=requester_pays)


# Opt-in: StacProvider("earth-search", collections={S2_L2A: EARTH_SEARCH_S2_LEGACY}) for scenes Collection 1 lacks.
EARTH_SEARCH_S2_LEGACY = CollectionMap("sentinel-2-l2a", _S2_EARTH_SEARCH, verify_offset=True)

EARTH_SEARCH = Catalog(
    "earth-search",
    "https://earth-search.aws.element84.com/v1",
    {
        S2_L2A: CollectionMap("sentinel-2-c1-l2a", _S2_EARTH_SEARCH),
        L8_L2: _landsat(8, requester_pays=True),
        L9_L2: _landsat(9, requester_pays=True),
    },
    cloud_query=True,
    unavailable={
        S1_GRD: "Earth Search's sentinel-1-grd assets are uncalibrated GRD in radar geometry in a requester-pays "
        "bucket; use backend='stac:planetary-computer' (sentinel-1-rtc, served in dB)",
    },
)

PLANETARY_COMPUTER = Catalog(
    "planetary-computer",
    "https://planetarycomputer.microsoft.com/api/stac/v1",
    {
        S2_L2A: CollectionMap("sentinel-2-l2a", _S2_PLANETARY),
        L8_L2: _landsat(8, requester_pays=False),
        L9_L2: _landsat(9, requester_pays=False),
        S1_GRD: CollectionMap("sentinel-1-rtc", {"VV": "vv", "VH": "vh", "HH": "hh", "HV": "hv"}, transform="db",
                              needs="a Planetary Computer subscription key in $PC_SDK_SUBSCRIPTION_KEY (the "
                              "sentinel-1-rtc assets are not served to anonymous SAS tokens in practice; "
                              "the collection's own example asks for one)"),
    },
    signer="planetary-computer",
    cloud_query=True,
)

PRESETS: dict[str, Catalog] = {c.name: c for c in (EARTH_SEARCH, PLANETARY_COMPUTER)}
