"""What the user asks for: where, when, which sensor, which output.

All specs are frozen attrs classes validated at construction, so a bad request fails with a
SpecError before any network or model work. Geometry is in true ground metres: a spec plus a
GSD resolves to a GridSpec in the ROI's local UTM zone (see grid.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from attrs import field, frozen

from .collections import known_collection
from .errors import SpecError, UnknownBandError


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool):  # True/False are ints in Python, never coordinates
        raise SpecError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise SpecError(f"{name} must be finite, got {value!r}")
    return v


def _check_lon(name: str, v: float) -> None:
    if not -180.0 <= v <= 180.0:
        raise SpecError(f"{name}={v} is outside [-180, 180]")


def _check_lat(name: str, v: float) -> None:
    if not -90.0 <= v <= 90.0:
        raise SpecError(f"{name}={v} is outside [-90, 90]")


@frozen
class PointBuffer:
    """A square ROI centred on (lon, lat) reaching `buffer_m` ground metres to each side."""

    lon: float = field(converter=lambda v: _finite("lon", v))
    lat: float = field(converter=lambda v: _finite("lat", v))
    buffer_m: float = field(converter=lambda v: _finite("buffer_m", v))

    def __attrs_post_init__(self) -> None:
        _check_lon("lon", self.lon)
        _check_lat("lat", self.lat)
        if abs(self.lat) > 84.0:  # UTM stops at 84 degrees; polar ROIs would need UPS
            raise SpecError(f"lat={self.lat}: polar ROIs (|lat| > 84) are not supported (no UTM zone)")
        if self.buffer_m <= 0:
            raise SpecError(f"buffer_m must be > 0, got {self.buffer_m}")

    @property
    def center(self) -> tuple[float, float]:
        return (self.lon, self.lat)


@frozen
class BBox:
    """A lon/lat box (WGS 84), minlat < maxlat.

    minlon > maxlon means the box crosses the antimeridian (BBox(179, 0, -179, 1) is 2 degrees
    wide): the ROI's UTM grid does not care, and providers receive that grid.
    """

    minlon: float = field(converter=lambda v: _finite("minlon", v))
    minlat: float = field(converter=lambda v: _finite("minlat", v))
    maxlon: float = field(converter=lambda v: _finite("maxlon", v))
    maxlat: float = field(converter=lambda v: _finite("maxlat", v))

    def __attrs_post_init__(self) -> None:
        for n in ("minlon", "maxlon"):
            _check_lon(n, getattr(self, n))
        for n in ("minlat", "maxlat"):
            _check_lat(n, getattr(self, n))
        if self.minlon == self.maxlon:
            raise SpecError(f"BBox needs minlon != maxlon (minlon > maxlon crosses the antimeridian), got {self.minlon}")
        if self.minlat >= self.maxlat:
            raise SpecError(f"BBox needs minlat < maxlat, got {self.minlat} >= {self.maxlat}")
        if max(abs(self.minlat), abs(self.maxlat)) > 84.0:
            raise SpecError("polar ROIs (|lat| > 84) are not supported (no UTM zone)")

    @property
    def crosses_antimeridian(self) -> bool:
        return self.minlon > self.maxlon

    @property
    def width_deg(self) -> float:
        return self.maxlon - self.minlon + (360.0 if self.crosses_antimeridian else 0.0)

    @property
    def center(self) -> tuple[float, float]:
        lon = self.minlon + self.width_deg / 2
        return (lon - 360.0 if lon > 180.0 else lon, (self.minlat + self.maxlat) / 2)


Spatial = PointBuffer | BBox


def _to_date(v: object) -> dt.date:
    if isinstance(v, dt.datetime):  # an aware datetime is read in UTC, not in its own zone
        return (v.astimezone(dt.timezone.utc) if v.tzinfo is not None else v).date()
    if isinstance(v, dt.date):
        return v
    if isinstance(v, str):
        try:
            return dt.date.fromisoformat(v.strip())
        except ValueError:
            raise SpecError(f"not an ISO date (YYYY-MM-DD): {v!r}") from None
    raise SpecError(f"expected a date or 'YYYY-MM-DD' string, got {v!r}")


@frozen
class TemporalSpec:
    """A half-open date window [start, end). It is a window, not a promise of a single scene."""

    start: dt.date = field(converter=_to_date)
    end: dt.date = field(converter=_to_date)

    def __attrs_post_init__(self) -> None:
        if self.end <= self.start:
            raise SpecError(f"TemporalSpec needs end > start (half-open window), got {self.start} .. {self.end}")

    @classmethod
    def range(cls, start: str | dt.date, end: str | dt.date) -> TemporalSpec:
        return cls(start, end)

    @classmethod
    def year(cls, year: int) -> TemporalSpec:
        if isinstance(year, bool):
            raise SpecError(f"not a valid year: {year!r}")
        try:
            y = int(year)
            return cls(dt.date(y, 1, 1), dt.date(y + 1, 1, 1))
        except (TypeError, ValueError, OverflowError):
            raise SpecError(f"not a valid year: {year!r}") from None

    def contains(self, when: dt.date | dt.datetime) -> bool:
        d = _to_date(when)
        return self.start <= d < self.end


Composite = Literal["median", "mosaic", "least_cloudy", "none"]
_COMPOSITES = ("median", "mosaic", "least_cloudy", "none")
CLOUD_MASKS = ("cloud_score_plus", "scl", "qa60", "qa_pixel", "fmask")


def _bands(v: object) -> tuple[str, ...]:
    if isinstance(v, str):
        v = (v,)
    try:
        out = tuple(str(b) for b in v)  # type: ignore[union-attr]
    except TypeError:
        raise SpecError(f"bands must be a sequence of names, got {v!r}") from None
    if not out:
        raise SpecError("bands must not be empty")
    if len(set(out)) != len(out):
        raise SpecError(f"bands has duplicates: {out}")
    return out


@frozen
class SensorSpec:
    """Which pixels to fetch: collection, bands, ground sampling distance, compositing, clouds.

    Every provider reads these fields the same way:
    composite: "median" (per-pixel median of the clear observations), "mosaic" (most recent
    clear pixel wins), "least_cloudy" (the one scene with the most clear pixels over the ROI)
    or "none" (every acquisition day is a frame).
    frames: split the window into this many equal temporal bins and composite each one, giving
    `frames` frames in time order; a bin without any clear observation is an all-invalid frame
    (reported in the Raster's meta as "empty_frames"), never back-filled from another bin.
    Ignored with composite="none".
    cloud_mask: True = the provider's default per-pixel mask for the collection, False = none,
    or a method name in CLOUD_MASKS ("cloud_score_plus", "scl", "qa60", "qa_pixel", "fmask").
    cloud_threshold: the method's threshold (Cloud Score+: clear where cs >= threshold), None =
    the provider's documented default.
    max_cloud_fraction: skip whole scenes whose cloud fraction (metadata) exceeds this.
    fill_value: the value invalid pixels hold in the delivered Raster.
    """

    collection: str
    bands: tuple[str, ...] = field(converter=_bands)
    scale_m: float = field(converter=lambda v: _finite("scale_m", v))
    composite: str = "median"
    cloud_mask: bool | str = True
    max_cloud_fraction: float | None = None
    fill_value: float = 0.0
    frames: int = 1
    cloud_threshold: float | None = None

    def __attrs_post_init__(self) -> None:
        if not self.collection:
            raise SpecError("collection must be a non-empty id")
        if self.scale_m <= 0:
            raise SpecError(f"scale_m must be > 0, got {self.scale_m}")
        if self.composite not in _COMPOSITES:
            raise SpecError(f"composite must be one of {_COMPOSITES}, got {self.composite!r}")
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or not 1 <= self.frames <= 366:
            raise SpecError(f"frames must be an int in 1..366, got {self.frames!r}")
        if not (isinstance(self.cloud_mask, bool) or self.cloud_mask in CLOUD_MASKS):
            raise SpecError(f"cloud_mask must be True, False or one of {CLOUD_MASKS}, got {self.cloud_mask!r}")
        if self.cloud_threshold is not None and not 0.0 <= _finite("cloud_threshold", self.cloud_threshold) <= 1.0:
            raise SpecError(f"cloud_threshold must be in [0, 1], got {self.cloud_threshold!r}")
        if self.max_cloud_fraction is not None and not 0.0 <= self.max_cloud_fraction <= 1.0:
            raise SpecError(f"max_cloud_fraction must be in [0, 1], got {self.max_cloud_fraction}")
        coll = known_collection(self.collection)
        if coll is not None:
            unknown = [b for b in self.bands if b not in coll.band_names]
            if unknown:
                raise UnknownBandError(
                    f"{self.collection} has no band(s) {unknown}; it has {list(coll.band_names)}"
                )


OutputMode = Literal["pooled", "grid"]
Pooling = Literal["model", "mean", "max"]


@frozen
class OutputSpec:
    """pooled: one (D,) vector per ROI; grid: a (D, h, w) georeferenced token grid.

    pooling="model" takes the model's own pooled output as its card declares (e.g. CLIP's
    projected image embedding); "mean" / "max" pool the token grid spatially.
    """

    mode: str = "pooled"
    pooling: str = "model"

    def __attrs_post_init__(self) -> None:
        if self.mode not in ("pooled", "grid"):
            raise SpecError(f"output mode must be 'pooled' or 'grid', got {self.mode!r}")
        if self.pooling not in ("model", "mean", "max"):
            raise SpecError(f"pooling must be 'model', 'mean' or 'max', got {self.pooling!r}")

    @classmethod
    def pooled(cls, pooling: str = "model") -> OutputSpec:
        return cls("pooled", pooling)

    @classmethod
    def grid(cls) -> OutputSpec:
        return cls("grid", "model")


INPUT_PREPS = ("resize",)


def check_input_prep(input_prep: str) -> str:
    if input_prep == "tile":
        raise SpecError("input_prep='tile' is not available yet; use input_prep='resize'")
    if input_prep not in INPUT_PREPS:
        raise SpecError(f"input_prep must be one of {INPUT_PREPS}, got {input_prep!r}")
    return input_prep
