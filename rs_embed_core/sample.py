"""A synthetic Sentinel-2 L2A-like scene, so the offline demo needs no download.

Two 12 km x 12 km sites (UTM 51N, 10 m pixels) centred on the seed doc's example points, three
summer dates, the twelve Sentinel-2 L2A bands (B1..B12 with B8A, no B10) as reflectance x 10000
(like COPERNICUS/S2_SR_HARMONIZED), so every Sentinel-2 model runs on it.
The landscape is drawn from a seed with numpy only: a rotated grid of crop fields whose crops
green up at different rates (rice flooded in June, maize peaking in July, harvested fallow...),
a river, a lake and fish ponds, urban blocks with streets and roof materials, highways, forested
hills. July is cloudy: cloud blobs are written as nodata (0) with a haze rim, so compositing
matters. The pixels are made up; they only need to look and behave like a real scene.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
from attrs import frozen

BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
DATES = (dt.date(2022, 6, 15), dt.date(2022, 7, 20), dt.date(2022, 8, 25))
CLOUDY_DATE = DATES[1]
CRS = "EPSG:32651"
GSD = 10.0
SIZE = 1200  # pixels a side: 12 km at 10 m
NODATA = 0

# (name, lon, lat): points inside the sites whose surroundings are, by construction, of that kind
SAMPLE_POINTS: tuple[tuple[str, float, float], ...] = (
    ("shanghai_urban", 121.4900, 31.2100),
    ("shanghai_river", 121.5150, 31.1850),
    ("hangzhou_crops", 120.4800, 30.1800),
    ("hangzhou_lake", 120.5300, 30.2200),
)


@frozen
class Site:
    name: str
    lon: float
    lat: float


SITES = (Site("shanghai", 121.5, 31.2), Site("hangzhou", 120.5, 30.2))

# surface reflectance (B2, B3, B4, B8, B11, B12) of the materials the scene is painted with
_SPECTRA = {
    "water_turbid": (0.075, 0.095, 0.085, 0.045, 0.018, 0.012),
    "water_clear": (0.045, 0.055, 0.035, 0.020, 0.010, 0.008),
    "pond": (0.050, 0.080, 0.050, 0.040, 0.015, 0.010),
    "concrete": (0.130, 0.140, 0.150, 0.210, 0.250, 0.230),
    "roof_dark": (0.070, 0.075, 0.080, 0.120, 0.140, 0.130),
    "roof_bright": (0.240, 0.260, 0.280, 0.320, 0.360, 0.330),
    "roof_blue": (0.160, 0.150, 0.110, 0.160, 0.170, 0.150),
    "asphalt": (0.070, 0.080, 0.090, 0.120, 0.150, 0.140),
    "grass": (0.040, 0.075, 0.060, 0.300, 0.210, 0.120),
    "forest": (0.025, 0.050, 0.030, 0.310, 0.150, 0.070),
    "soil": (0.090, 0.120, 0.160, 0.230, 0.310, 0.260),
    "wet_soil": (0.060, 0.080, 0.105, 0.150, 0.200, 0.170),
    "flooded": (0.050, 0.065, 0.055, 0.070, 0.040, 0.030),
    "canopy": (0.030, 0.070, 0.035, 0.460, 0.220, 0.100),
}
_MATERIALS = tuple(_SPECTRA)
_M = {name: i for i, name in enumerate(_MATERIALS)}
_PAINTED_NM = (490.0, 560.0, 665.0, 842.0, 1610.0, 2190.0)  # the bands _SPECTRA gives
_CENTRE_NM = (443.0, 490.0, 560.0, 665.0, 705.0, 740.0, 783.0, 842.0, 865.0, 945.0, 1610.0, 2190.0)  # BANDS


def _all_bands(six: tuple[float, ...]) -> list[float]:
    """A material's reflectance in every band of BANDS, interpolated over wavelength from the six
    painted ones (flat below 490 nm; B9 sits in a water-vapour absorption band: 0.8x)."""
    out = np.interp(_CENTRE_NM, _PAINTED_NM, six)
    out[BANDS.index("B9")] *= 0.8
    return [float(v) for v in out]


_TABLE = np.array([_all_bands(_SPECTRA[m]) for m in _MATERIALS], np.float32)  # (materials, bands)

# crop -> (canopy cover on each date, soil/water under the canopy on each date)
_CROPS = {
    "rice": ((0.12, 0.55, 0.92), ("flooded", "flooded", "wet_soil")),
    "maize": ((0.25, 0.80, 0.70), ("soil", "soil", "soil")),
    "soybean": ((0.40, 0.72, 0.55), ("soil", "wet_soil", "soil")),
    "fallow": ((0.05, 0.20, 0.35), ("soil", "soil", "soil")),  # wheat harvested in late May
    "orchard": ((0.60, 0.65, 0.65), ("soil", "soil", "soil")),
    "fishpond": ((0.0, 0.0, 0.0), ("pond", "pond", "pond")),
}
_CROP_NAMES = tuple(_CROPS)
_CROP_MIX = {"shanghai": (0.45, 0.15, 0.15, 0.15, 0.10, 0.0), "hangzhou": (0.40, 0.15, 0.12, 0.12, 0.11, 0.10)}

# within-field texture: canopy-cover and brightness amplitudes, feature size in pixels. There is
# no per-pixel sensor noise: it would double the compressed size and nothing here needs it.
_COVER_TEXTURE, _TEXTURE, _TEXTURE_CELL = 0.03, 0.02, 12.0

# each pixel is either a crop field (changes with the date) or a static material
_FIELD, _STATIC = 0, 1


def make_sample_scene(out_dir: str | os.PathLike[str], seed: int = 0) -> list[Path]:
    """Write the 2 sites x 3 dates GeoTIFFs into `out_dir`; return their paths (site, then date order).

    Deterministic for a seed; files are written to a temporary name then renamed, so a reader
    never sees a half-written scene.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s, site in enumerate(SITES):
        x0, y0 = _site_origin(site)
        layout = _layout(site, x0, y0, np.random.default_rng([seed, s]))
        for d, date in enumerate(DATES):
            rng = np.random.default_rng([seed, s, d + 1])
            dn = _render(layout, d, rng, cloudy=date == CLOUDY_DATE)
            path = out / f"S2_synthetic_{site.name}_{date.isoformat()}.tif"
            _write(path, dn, x0, y0, date, site)
            paths.append(path)
    return paths


# ---------------------------------------------------------------- geometry helpers


def _site_origin(site: Site) -> tuple[float, float]:
    """Top-left corner (UTM metres) of the 12 km square centred on the site, on the 10 m lattice."""
    from pyproj import Transformer

    cx, cy = Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(site.lon, site.lat)
    half = SIZE * GSD / 2
    return round((cx - half) / GSD) * GSD, round((cy + half) / GSD) * GSD


def _pixel(lon: float, lat: float, x0: float, y0: float) -> tuple[float, float]:
    """(col, row) of a lon/lat in a site's pixel grid."""
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(lon, lat)
    return (x - x0) / GSD - 0.5, (y0 - y) / GSD - 0.5


def _smooth(rng: np.random.Generator, cell: float, n: int = SIZE) -> np.ndarray:
    """Unit-variance smooth noise with features about `cell` pixels wide (smoothstep-interpolated lattice)."""
    k = int(n / cell) + 3
    lattice = rng.standard_normal((k, k)).astype(np.float32)

    def weights() -> np.ndarray:
        p = np.arange(n) / cell + 1.0
        i0 = np.floor(p).astype(int)
        w = p - i0
        w = w * w * (3 - 2 * w)
        m = np.zeros((n, k), np.float32)
        m[np.arange(n), i0] = 1 - w
        m[np.arange(n), i0 + 1] = w
        return m

    f = weights() @ lattice @ weights().T
    return (f - f.mean()) / f.std()


def _rotated(cols: np.ndarray, rows: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.deg2rad(angle_deg)
    return cols * np.cos(a) + rows * np.sin(a), -cols * np.sin(a) + rows * np.cos(a)


def _cells(coord: np.ndarray, rng: np.random.Generator, lo: int, hi: int) -> np.ndarray:
    """Index of the strip each pixel falls in, strips lo..hi pixels wide."""
    start, stop = float(coord.min()) - hi, float(coord.max()) + hi
    cuts = start + np.cumsum(rng.integers(lo, hi + 1, size=int((stop - start) / lo) + 2))
    return np.searchsorted(cuts, coord)


def _edges(ids: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour lies in another cell."""
    e = np.zeros(ids.shape, bool)
    e[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    e[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return e


# ---------------------------------------------------------------- layout (date-independent)


@frozen
class _Layout:
    layer: np.ndarray  # (H, W) _FIELD / _STATIC
    material: np.ndarray  # (H, W) index into _MATERIALS for static pixels
    crop: np.ndarray  # (H, W) index into _CROP_NAMES for field pixels
    jitter: np.ndarray  # (H, W) per-field canopy offset
    texture: np.ndarray  # (H, W) within-field texture
    cloud: np.ndarray  # (H, W) cloud score (> 0 is cloud on the cloudy date)


def _layout(site: Site, x0: float, y0: float, rng: np.random.Generator) -> _Layout:
    n = SIZE
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float32)
    pts = {name: _pixel(lon, lat, x0, y0) for name, lon, lat in SAMPLE_POINTS if name.startswith(site.name)}

    def dist(p: tuple[float, float]) -> np.ndarray:
        return np.hypot(cols - p[0], rows - p[1])

    # crop fields: a rotated grid of parcels; some parcel edges are farm roads, the others ditches
    u, v = _rotated(cols, rows, rng.uniform(-20, 20))
    iu, iv = _cells(u, rng, 18, 45), _cells(v, rng, 10, 28)
    field = iu * (int(iv.max()) + 1) + iv
    n_fields = int(field.max()) + 1
    crop = rng.choice(len(_CROP_NAMES), size=n_fields, p=_CROP_MIX[site.name])[field]
    jitter = rng.normal(0.0, 0.06, size=n_fields).astype(np.float32)[field]
    layer = np.full((n, n), _FIELD, np.int8)
    material = np.full((n, n), _M["grass"], np.int8)
    edges = _edges(field)
    farm_road = edges & (_edges(iu) & (iu % 4 == 0))
    layer[edges] = _STATIC
    material[edges] = _M["grass"]
    material[farm_road] = _M["concrete"]

    def paint(mask: np.ndarray, mat: str | np.ndarray) -> None:
        layer[mask] = _STATIC
        material[mask] = _M[mat] if isinstance(mat, str) else mat[mask]

    # urban fabric: blocks of mixed roofs separated by streets, with parks
    if site.name == "shanghai":
        urban_score = 1.3 - dist(pts["shanghai_urban"]) / 450.0 + 0.45 * _smooth(rng, 90)
    else:  # villages scattered over the farmland, kept off the crop sample point
        urban_score = 0.45 * _smooth(rng, 45) - 0.42 - np.maximum(0, 1 - dist(pts["hangzhou_crops"]) / 160.0)
    urban = urban_score > 0
    bu, bv = _rotated(cols, rows, rng.uniform(-10, 10))
    ju, jv = _cells(bu, rng, 7, 18), _cells(bv, rng, 7, 18)
    blocks = ju * (int(jv.max()) + 1) + jv
    roofs = np.array([_M["concrete"], _M["roof_dark"], _M["roof_bright"], _M["roof_blue"], _M["grass"]], np.int8)
    roof = roofs[rng.choice(len(roofs), size=int(blocks.max()) + 1, p=(0.40, 0.27, 0.13, 0.10, 0.10))][blocks]
    paint(urban, roof)
    paint(urban & _edges(blocks), "asphalt")
    parks = urban & (_smooth(rng, 25) > 1.5)
    paint(parks, "grass")
    paint(parks & (_smooth(rng, 6) > 0.3), "forest")

    # forested hills (Hangzhou's western hills)
    if site.name == "hangzhou":
        hills = 0.5 * _smooth(rng, 120) + 0.4 - 1.6 * (cols + rows) / n > 0  # towards the north-west corner
        hills &= dist(pts["hangzhou_crops"]) > 200
        paint(hills, "forest")

    # a meandering river through the site; a lake around the lake sample point
    if site.name == "shanghai":  # a Huangpu-like river through the river sample point
        anchor, width, angle = pts["shanghai_river"], 38.0, 75.0
    else:  # a wide Qiantang-like river crossing the site, 3 km from the crop sample point
        anchor, width, angle = (n * 0.82, n * 0.80), 95.0, 35.0
    a_, b_ = _rotated(cols - anchor[0], rows - anchor[1], angle)
    phase = rng.uniform(0, 2 * np.pi)
    amp, wavelength = rng.uniform(40, 80), rng.uniform(600, 900)
    offset = b_ - amp * (np.sin(2 * np.pi * a_ / wavelength + phase) - np.sin(phase))
    river = np.abs(offset) < width / 2 * (1 + 0.08 * _smooth(rng, 30))
    paint(river, "water_turbid")
    if "hangzhou_lake" in pts:
        lake = dist(pts["hangzhou_lake"]) / 85.0 + 0.12 * _smooth(rng, 20) < 1.0
        paint(lake, "water_clear")

    # highways, 2-3 px wide, painted last so they bridge the water
    for _ in range(3):
        a = rng.uniform(0, np.pi)
        p = rng.uniform(0.2, 0.8) * n
        line = np.abs(cols * np.cos(a) + rows * np.sin(a) - (p * np.cos(a) + p * np.sin(a))) < rng.uniform(1.0, 1.6)
        paint(line, "asphalt")

    cloud = 1.1 * _smooth(rng, 110) + 0.35 * _smooth(rng, 25) - 1.0
    return _Layout(layer, material, crop.astype(np.int8), jitter, _smooth(rng, _TEXTURE_CELL), cloud)


# ---------------------------------------------------------------- rendering (per date)


def _render(layout: _Layout, d: int, rng: np.random.Generator, *, cloudy: bool) -> np.ndarray:
    """DN (bands, H, W) uint16 for date index `d`; cloud pixels are NODATA on the cloudy date."""
    n = SIZE
    refl = _TABLE[layout.material].transpose(2, 0, 1).copy()  # (bands, H, W)

    # seasonal change of natural vegetation (slightly greener through the summer)
    veg = np.isin(layout.material, (_M["grass"], _M["forest"])) & (layout.layer == _STATIC)
    for nir in ("B8", "B8A"):
        refl[BANDS.index(nir)][veg] *= 1.0 + 0.04 * d

    # crops: canopy cover on this date mixed over its soil or water background
    fields = layout.layer == _FIELD
    cover = np.array([_CROPS[c][0][d] for c in _CROP_NAMES], np.float32)[layout.crop]
    cover = np.clip(cover + layout.jitter + _COVER_TEXTURE * layout.texture, 0.0, 0.97)
    cover[layout.crop == _CROP_NAMES.index("fishpond")] = 0.0
    background = np.array([_M[_CROPS[c][1][d]] for c in _CROP_NAMES], np.int8)[layout.crop]
    under = _TABLE[background].transpose(2, 0, 1)
    mixed = cover[None] * _TABLE[_M["canopy"]][:, None, None] + (1 - cover[None]) * under
    refl[:, fields] = mixed[:, fields]

    # texture and a per-date atmosphere gain per band
    refl *= 1.0 + _TEXTURE * layout.texture[None]
    refl *= (1.0 + rng.normal(0.0, 0.012, size=(len(BANDS), 1, 1))).astype(np.float32)

    if cloudy:  # a bright haze rim around the clouds, which themselves become nodata
        haze = np.clip((layout.cloud + 0.35) / 0.35, 0.0, 1.0)
        refl += haze[None] * np.array(_all_bands((0.10, 0.09, 0.08, 0.06, 0.04, 0.03)), np.float32)[:, None, None]

    # B11 and B12 are 20 m bands: average 2 x 2 blocks, as an upsampled 20 m product would look
    for b in (4, 5):
        coarse = refl[b].reshape(n // 2, 2, n // 2, 2).mean(axis=(1, 3))
        refl[b] = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)

    dn = np.clip(np.rint(refl * 10000.0), 1, 10000).astype(np.uint16)  # 0 is reserved for nodata
    if cloudy:
        dn[:, layout.cloud > 0] = NODATA
    return dn


def _write(path: Path, dn: np.ndarray, x0: float, y0: float, date: dt.date, site: Site) -> None:
    import rasterio
    from affine import Affine

    tmp = path.with_name(path.name + ".part")
    profile = dict(
        driver="GTiff", width=SIZE, height=SIZE, count=len(BANDS), dtype="uint16", crs=CRS,
        transform=Affine(GSD, 0.0, x0, 0.0, -GSD, y0), nodata=NODATA,
        compress="deflate", predictor=2, zlevel=6, tiled=True, blockxsize=256, blockysize=256, interleave="band",
    )
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(dn)
        for i, band in enumerate(BANDS, start=1):
            dst.set_band_description(i, band)
        dst.update_tags(
            RS_EMBED_COLLECTION=COLLECTION,
            ACQUISITION_DATE=date.isoformat(),
            SITE=site.name,
            DESCRIPTION="synthetic Sentinel-2 L2A-like scene made by rs_embed_core.sample (not real imagery)",
        )
    os.replace(tmp, path)
