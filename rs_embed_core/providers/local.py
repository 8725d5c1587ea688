"""The `local` provider: GeoTIFF / COG / VRT files read onto the request grid.

Every file, whatever its CRS, is read through a rasterio WarpedVRT built on the request's
GridSpec, so the pixels come out exactly on the lattice the runner asked for. An alpha band is
always added to the warp: GDAL then folds nodata, internal masks, source alpha and "outside the
source" into one validity band, which is more reliable than reading per-band masks of a VRT.
Headers are cached (keyed by mtime and size) so `check` and the spatial/temporal selection stay
cheap; pixel datasets are opened per call, which keeps concurrent fetches thread-safe.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import numbers
import os
import re
import threading
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from attrs import frozen

from ..errors import DataNotFoundError, ProviderError, SpecError, UnknownBandError
from ..grid import GridSpec
from ..hookspecs import hookimpl
from ..raster import Raster, true_fraction
from ..specs import SensorSpec
from . import FetchRequest
from .composite import composite_scenes
from .reading import network_env, read_warped

ENV_VAR = "RS_EMBED_LOCAL_PATH"
COLLECTION_TAG = "RS_EMBED_COLLECTION"
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt")
RESAMPLING = ("nearest", "bilinear", "cubic", "average")

# YYYY-MM-DD, YYYY_MM_DD or YYYYMMDD (same separator twice), not inside a longer run of digits
_NAME_DATE = re.compile(r"(?<!\d)(\d{4})([-_]?)(\d{2})\2(\d{2})(?!\d)")
# TIFFTAG_DATETIME "YYYY:MM:DD HH:MM:SS"; ACQUISITION_DATE usually ISO
_TAG_DATE = re.compile(r"(\d{4})[-:_/]?(\d{2})[-:_/]?(\d{2})(?:[ T](\d{2}):?(\d{2})(?::?(\d{2}))?)?")
_DATE_TAGS = ("TIFFTAG_DATETIME", "ACQUISITION_DATE")


# ---------------------------------------------------------------- small parsers


def _to_datetime(value: object, what: str) -> dt.datetime:
    if isinstance(value, dt.datetime):  # frame times are naive UTC
        return value if value.tzinfo is None else value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return _to_datetime(dt.datetime.fromisoformat(value.strip()), what)
        except ValueError:
            pass
    raise SpecError(f"{what}: expected a date, datetime or 'YYYY-MM-DD' string, got {value!r}")


def _valid_date(y: str, m: str, d: str, *hms: str | None) -> dt.datetime | None:
    try:
        year = int(y)
        if not 1950 <= year <= 2100:  # guards against ids like 12345678 read as dates
            return None
        return dt.datetime(year, int(m), int(d), *(int(v) for v in hms if v))
    except ValueError:
        return None


def date_from_name(name: str) -> dt.datetime | None:
    """The first plausible date written in a file name, or None."""
    for m in _NAME_DATE.finditer(name):
        when = _valid_date(m.group(1), m.group(3), m.group(4))
        if when is not None:
            return when
    return None


def _date_from_tags(tags: Mapping[str, str]) -> dt.datetime | None:
    for key in _DATE_TAGS:
        raw = tags.get(key)
        if raw:
            m = _TAG_DATE.search(raw)
            if m:
                when = _valid_date(*m.groups())
                if when is not None:
                    return when
    return None


def _fmt_date(when: dt.datetime | None) -> str | None:
    if when is None:
        return None
    return when.date().isoformat() if when.time() == dt.time(0) else when.isoformat()


# ---------------------------------------------------------------- file headers


@frozen
class _FileInfo:
    """What `check` and the selection need from one file, read from its header only."""

    path: str
    crs: str
    bounds: tuple[float, float, float, float]  # native CRS
    lonlat: tuple[float, float, float, float] | None  # WGS 84 box, for a robust first overlap test
    count: int
    bands: dict[str, tuple[str, int]]  # name -> (file, 1-based index): a scene of per-band files spans files
    positional: bool  # names are "1", "2", ... (no descriptions, no band_map)
    notes: tuple[str, ...]  # band_map entries this file cannot serve
    date: dt.datetime | None
    date_source: str | None  # "dates", "name", "tag" or None
    collection: str | None  # RS_EMBED_COLLECTION tag
    scene: str | None = None  # single-band file named like "<scene>_<band>.<ext>": the scene it belongs to
    band_rank: float = 0.0  # among files of one band of one scene, the lower wins (finer resolution)


# Band names in file names (single-band files): Landsat Collection 2 ("..._SR_B4.TIF", "..._B4.TIF",
# "..._QA_PIXEL.TIF") and Sentinel-2 ("..._B04_10m.jp2", "..._B8A.tif", "..._SCL_20m.jp2"). "B04" is named "B4".
BAND_PATTERNS = (
    re.compile(r"_(?P<band>(?:SR|ST)_B\d{1,2}|QA_PIXEL|QA_RADSAT|SR_QA_AEROSOL|B\d{1,2})(?=\.[A-Za-z0-9]+$)"),
    re.compile(r"(?:^|_)(?P<band>B\d{1,2}A?|SCL|AOT|WVP)(?:_(?P<res>\d{1,3})m)?(?=\.[A-Za-z0-9]+$)"),
)


def band_from_name(name: str, patterns: tuple[re.Pattern[str], ...] = BAND_PATTERNS
                   ) -> tuple[str, str, float] | None:
    """(band, scene key, rank) of a per-band file name, or None. The scene key is the name without
    the band token (and resolution), so the bands of one scene share it."""
    for pat in patterns:
        m = pat.search(name)
        if m is not None:
            band = re.sub(r"^B0(\d)$", r"B\1", m.group("band"))
            res = m.groupdict().get("res")
            key = (name[: m.start()] + name[m.end():]).rsplit(".", 1)[0]
            return band, key, float(res) if res else 0.0
    return None


def _is_remote(p: str) -> bool:
    return p.startswith("/vsi") or "://" in p


def _expand(item: str | os.PathLike[str]) -> list[str]:
    """One user path entry -> the raster files it names (sorted for folders and globs)."""
    raw = os.path.expanduser(os.fspath(item))
    if _is_remote(raw):
        return [raw]
    if any(c in raw for c in "*?["):
        hits = sorted(h for h in glob.glob(raw) if os.path.isfile(h))
        if not hits:
            raise DataNotFoundError(f"local provider: the pattern {raw!r} matches no file")
        return [os.path.abspath(h) for h in hits]
    if os.path.isdir(raw):
        hits = sorted(
            os.path.join(raw, n) for n in os.listdir(raw)
            if n.lower().endswith(RASTER_SUFFIXES) and os.path.isfile(os.path.join(raw, n))
        )
        if not hits:
            raise DataNotFoundError(
                f"local provider: the folder {raw!r} holds no {'/'.join(RASTER_SUFFIXES)} file "
                "(it is not searched recursively)"
            )
        return [os.path.abspath(h) for h in hits]
    if os.path.isfile(raw):
        return [os.path.abspath(raw)]
    raise DataNotFoundError(f"local provider: the path {raw!r} does not exist")


# ---------------------------------------------------------------- the provider


class _UnreadableFile(ProviderError):
    """A file that does not open as a raster (0 bytes, not a GeoTIFF): skipped while others are readable."""



class LocalProvider:
    """Serve pixels from local (or GDAL-readable remote) rasters.

    paths: a file, a folder (its *.tif/*.tiff/*.vrt, not recursive), a glob pattern, or a list
    of these; None reads $RS_EMBED_LOCAL_PATH.
    collection: the one collection these files hold; None lets each file's RS_EMBED_COLLECTION
    tag decide, and untagged files serve any collection (bands matched by name).
    band_map: {name: 1-based index or band description}; when given, these are the only band
    names offered. Otherwise bands are named by their descriptions, or "1", "2", ... by position.
    dates: {path or file name: date}, overriding the date in the file name and the date tags.
    band_pattern: a regular expression with a named group "band" that finds the band name in the
    file names of a scene distributed as one file per band (e.g. r"_(?P<band>[A-Z0-9]+)\\.tif$"),
    tried before the built-in Landsat / Sentinel-2 patterns; the rest of the name keys the scene.
    nodata: a value that marks missing pixels in every band (files without a nodata tag, e.g.
    Landsat L1 fill 0), or {band name: value}; it replaces the file's own nodata and masks for
    those bands. A pixel is valid only where every asked band is valid (per-band masks, so bands
    whose fill collars differ do not pass fill values to a model).
    """

    name = "local"

    def __init__(
        self,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
        *,
        collection: str | None = None,
        band_map: Mapping[str, int | str] | None = None,
        dates: Mapping[str, Any] | None = None,
        resampling: str = "bilinear",
        nodata: float | Mapping[str, float] | None = None,
        band_pattern: str | None = None,
        max_concurrency: int = 4,
    ) -> None:
        if paths is None or (isinstance(paths, str) and not paths.strip()):
            env = os.environ.get(ENV_VAR, "").strip()
            if not env:
                raise SpecError(
                    "the local provider needs to know where your rasters are: pass LocalProvider('/path/to/dir'), "
                    f"use backend='local:/path/to/dir', or set the environment variable {ENV_VAR}"
                )
            paths = env
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if isinstance(paths, (bytes, Mapping)) or not isinstance(paths, Iterable):
            raise SpecError(f"LocalProvider takes a path (file, folder or glob) or a list of paths, got {paths!r}")
        paths = list(paths)
        if not all(isinstance(p, (str, os.PathLike)) for p in paths):
            raise SpecError(f"LocalProvider takes a path (file, folder or glob) or a list of paths, got {paths!r}")
        self.paths: tuple[str, ...] = tuple(os.fspath(p) for p in paths)
        if not self.paths:
            raise SpecError("LocalProvider got an empty list of paths")
        self.collection = collection or None
        self.band_map = self._check_band_map(band_map)
        self.dates = self._check_dates(dates)
        if resampling not in RESAMPLING:
            raise SpecError(f"resampling must be one of {RESAMPLING}, got {resampling!r}")
        self.resampling = resampling
        if nodata is not None and not isinstance(nodata, Mapping):
            if isinstance(nodata, bool) or not isinstance(nodata, numbers.Real):
                raise SpecError(f"nodata must be a number or {{band: number}}, got {nodata!r}")
        elif isinstance(nodata, Mapping) and not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) for v in nodata.values()):
            raise SpecError(f"nodata values must be numbers, got {dict(nodata)!r}")
        self.nodata = nodata
        patterns = BAND_PATTERNS
        if band_pattern is not None:
            try:
                user = re.compile(band_pattern)
            except re.error as exc:
                raise SpecError(f"band_pattern is not a valid regular expression: {exc}") from None
            if "band" not in user.groupindex:
                raise SpecError(f"band_pattern needs a named group (?P<band>...), got {band_pattern!r}")
            patterns = (user, *BAND_PATTERNS)
        self.band_patterns: tuple[re.Pattern[str], ...] = patterns
        if int(max_concurrency) < 1:
            raise SpecError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
        self.max_concurrency = int(max_concurrency)
        self._lock = threading.Lock()
        self._headers: dict[str, tuple[tuple[int, int] | None, _FileInfo]] = {}
        self._warned: set[str] = set()  # unreadable files already named in a warning

    # reads are GDAL decoding + numpy compositing: fetch and prepare run in worker processes
    # (rs_embed_core.workers), which get this provider by fork, or pickled under "spawn"
    parallel = "processes"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalProvider({list(self.paths)!r}, collection={self.collection!r})"

    # ------------------------------------------------------------ options

    @staticmethod
    def _check_band_map(band_map: Mapping[str, int | str] | None) -> dict[str, int | str] | None:
        if band_map is None:
            return None
        if not isinstance(band_map, Mapping) or not band_map:
            raise SpecError(
                f"band_map must be a non-empty mapping {{name: 1-based index or description}}, got {band_map!r}"
            )
        out: dict[str, int | str] = {}
        for name, ref in band_map.items():
            if isinstance(ref, numbers.Integral) and not isinstance(ref, bool) and ref >= 1:
                out[str(name)] = int(ref)
            elif isinstance(ref, str) and ref:
                out[str(name)] = ref
            else:
                raise SpecError(f"band_map[{name!r}] must be a 1-based band index or a band description, got {ref!r}")
        return out

    @staticmethod
    def _check_dates(dates: Mapping[str, Any] | None) -> dict[str, dt.datetime]:
        if dates is None:
            return {}
        if not isinstance(dates, Mapping):
            raise SpecError(f"dates must be a mapping {{path or file name: date}}, got {dates!r}")
        out: dict[str, dt.datetime] = {}
        for key, value in dates.items():
            k = os.path.expanduser(os.fspath(key))
            if os.sep in k and not _is_remote(k):
                k = os.path.abspath(k)
            out[k] = _to_datetime(value, f"dates[{key!r}]")
        return out

    # ------------------------------------------------------------ headers

    def _files(self) -> list[str]:
        seen: dict[str, None] = {}
        for item in self.paths:
            for f in _expand(item):
                seen.setdefault(f, None)
        return list(seen)

    def _info(self, path: str) -> _FileInfo:
        stamp: tuple[int, int] | None = None
        if not _is_remote(path):
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._headers.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        info = self._read_header(path)
        with self._lock:
            self._headers[path] = (stamp, info)
        return info

    def _read_header(self, path: str) -> _FileInfo:
        import rasterio
        from rasterio.enums import ColorInterp
        from rasterio.errors import RasterioError, RasterioIOError
        from rasterio.warp import transform_bounds

        try:
            with rasterio.Env(**network_env()), rasterio.open(path) as src:
                if src.crs is None:
                    raise ProviderError(f"local provider: {path} has no CRS, so it cannot be placed on a map grid")
                descriptions = list(src.descriptions)
                interp = list(src.colorinterp)
                tags = src.tags()
                crs = src.crs.to_string()
                bounds = tuple(src.bounds)
                count = src.count
        except RasterioIOError as exc:
            raise _UnreadableFile(f"local provider: cannot read {path}: {exc}") from None

        try:
            lonlat = tuple(transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21))
        except RasterioError:
            lonlat = None
        data_idx = [i + 1 for i in range(count) if interp[i] != ColorInterp.alpha]
        bands: dict[str, int] = {}
        notes: list[str] = []
        positional = False
        if self.band_map is not None:
            for name, ref in self.band_map.items():
                if isinstance(ref, int):
                    if ref <= count:
                        bands[name] = (path, ref)
                    else:
                        notes.append(f"band_map[{name!r}]={ref} but {os.path.basename(path)} has {count} band(s)")
                else:
                    if ref in descriptions:
                        bands[name] = (path, descriptions.index(ref) + 1)
                    else:
                        named = [d for d in descriptions if d]
                        notes.append(
                            f"band_map[{name!r}]={ref!r} but {os.path.basename(path)} has band descriptions {named}"
                        )
        else:
            for i in data_idx:
                d = descriptions[i - 1]
                bands.setdefault(d if d else str(i), (path, i))
            positional = all(not descriptions[i - 1] for i in data_idx)

        scene, rank = None, 0.0
        named = band_from_name(os.path.basename(path), self.band_patterns) \
            if self.band_map is None and len(data_idx) == 1 else None
        if named is not None:  # one band of a scene distributed as one file per band
            band, scene, rank = named
            bands, positional = {band: (path, data_idx[0])}, False
        date, source = self._date_for(path, tags)
        return _FileInfo(
            path=path, crs=crs, bounds=bounds, lonlat=lonlat, count=count, bands=bands, positional=positional,
            notes=tuple(notes), date=date, date_source=source, collection=tags.get(COLLECTION_TAG) or None,
            scene=scene, band_rank=rank,
        )

    def _date_for(self, path: str, tags: Mapping[str, str]) -> tuple[dt.datetime | None, str | None]:
        for key in (path, os.path.basename(path)):
            if key in self.dates:
                return self.dates[key], "dates"
        when = date_from_name(os.path.basename(path))
        if when is not None:
            return when, "name"
        when = _date_from_tags(tags)
        return (when, "tag") if when is not None else (None, None)

    # ------------------------------------------------------------ selection (headers only)

    def _scenes(self, infos: list[_FileInfo]) -> list[_FileInfo]:
        """Per-band files of one scene (same scene key, CRS and date) merged into one entry."""
        groups: dict[tuple[Any, ...], list[_FileInfo]] = {}
        out: list[_FileInfo] = []
        for i in infos:
            if i.scene is None:
                out.append(i)
            else:
                groups.setdefault((os.path.dirname(i.path), i.scene, i.crs, i.date), []).append(i)
        for members in groups.values():
            bands: dict[str, tuple[str, int]] = {}
            for m in sorted(members, key=lambda m: (m.band_rank, m.path)):  # finest resolution first
                for name, src in m.bands.items():
                    bands.setdefault(name, src)
            first = members[0]
            lefts, bottoms, rights, tops = zip(*(m.bounds for m in members))
            out.append(attrs.evolve(first, path=os.path.join(os.path.dirname(first.path), first.scene or ""),
                                    bounds=(min(lefts), min(bottoms), max(rights), max(tops)), bands=bands,
                                    count=len(bands)))
        return out

    def _readable(self, files: list[str]) -> list[_FileInfo]:
        """Headers of the files that open; the others (0-byte, not a raster) are skipped with one warning
        naming them, and are an error only when no readable file is left."""
        infos, bad = [], []
        for f in files:
            try:
                infos.append(self._info(f))
            except _UnreadableFile as exc:
                bad.append((f, str(exc)))
        if bad and not infos:
            raise ProviderError(f"local provider: none of its {len(files)} file(s) can be read: "
                                + "; ".join(why for _, why in bad[:4]) + (" ..." if len(bad) > 4 else ""))
        new = [f for f, _ in bad if f not in self._warned]
        if new:
            with self._lock:
                self._warned.update(new)
            warnings.warn(f"local provider: skipping {len(new)} unreadable file(s): "
                          + ", ".join(os.path.basename(f) for f in new[:8]) + (" ..." if len(new) > 8 else ""),
                          stacklevel=4)
        return infos

    def _candidates(self, sensor: SensorSpec) -> list[_FileInfo]:
        """The scenes (files, or groups of per-band files) that can serve this collection and every requested band."""
        files = self._files()
        if self.dates:  # a dates= key that names no file would silently leave that file undated
            known = set(files) | {os.path.basename(f) for f in files}
            unmatched = [k for k in self.dates if k not in known]
            if unmatched:
                raise SpecError(
                    f"dates= names {unmatched}, which match no file of this provider (keys are full paths or file "
                    f"names); files: {[os.path.basename(f) for f in files[:8]]}{' ...' if len(files) > 8 else ''}"
                )
        infos = self._scenes(self._readable(files))
        served = [i for i in infos if (self.collection or i.collection) in (None, sensor.collection)]
        if not served:
            if self.collection:
                why = f"it was configured with LocalProvider(collection={self.collection!r})"
            else:
                tagged = sorted({i.collection for i in infos if i.collection})
                why = f"its files are tagged {COLLECTION_TAG}={tagged}"
            raise SpecError(
                f"the local provider cannot serve collection {sensor.collection!r}: {why}. "
                "Ask for that collection, or configure LocalProvider(collection=...) to match."
            )
        want = list(sensor.bands)
        usable = [i for i in served if all(b in i.bands for b in want)]
        if usable:
            return usable
        available = list(dict.fromkeys(b for i in served for b in i.bands))
        missing = [b for b in want if any(b not in i.bands for i in served)]
        msg = (
            f"the local files have no band(s) {missing} (asked for {want} of {sensor.collection!r}); "
            f"bands available: {available}"
        )
        if len({tuple(i.bands) for i in served}) > 1:
            msg += "; no single file has all the asked bands"
        if any(i.positional for i in served):
            msg += (
                ". Files without band descriptions name their bands by position ('1', '2', ...): pass "
                "LocalProvider(..., band_map={'B4': 1, 'B3': 2, ...}) to give them names"
            )
        notes = sorted({n for i in served for n in i.notes})
        if notes:
            msg += ". " + "; ".join(notes[:5])
        raise UnknownBandError(msg)

    def check(self, sensor: SensorSpec) -> None:
        """Fail early (headers only) if these files cannot serve `sensor`."""
        self._candidates(sensor)

    # ------------------------------------------------------------ fetch

    def fetch(self, request: FetchRequest) -> Raster:
        from rasterio.warp import transform_bounds

        grid, sensor, window = request.grid, request.sensor, request.temporal
        infos = self._candidates(sensor)

        roi, roi_lonlat = grid.bounds, grid.footprint_lonlat()

        def overlaps(i: _FileInfo) -> bool:
            # lon/lat first: projecting the ROI into a far-away file's CRS can fail or blow up. The ROI's
            # longitudes are continuous (they may pass +/-180): try the box shifted by a turn both ways.
            if i.lonlat is not None and not any(
                    _overlaps((roi_lonlat[0] + d, roi_lonlat[1], roi_lonlat[2] + d, roi_lonlat[3]), i.lonlat)
                    for d in (0.0, -360.0, 360.0)):
                return False
            if i.crs == grid.crs:  # the file's own CRS: no projection (0.05 ms per file and ROI)
                return _overlaps(roi, i.bounds)
            left, bottom, right, top = transform_bounds(grid.crs, i.crs, *roi, densify_pts=21)
            if left > right:  # across the antimeridian of a geographic CRS: two boxes
                return any(_overlaps(b, i.bounds) for b in ((left, bottom, 180.0, top), (-180.0, bottom, right, top)))
            return _overlaps((left, bottom, right, top), i.bounds)

        over = [i for i in infos if overlaps(i)]
        if not over:
            lines = []
            for i in infos[:5]:
                native = f"{i.crs} {_fmt_bounds(i.bounds, 1)}"
                lines.append(f"{os.path.basename(i.path)}: lon/lat {_fmt_bounds(i.lonlat or ())} ({native})")
            more = f" and {len(infos) - 5} more" if len(infos) > 5 else ""
            raise DataNotFoundError(
                f"ROI outside the raster: the request covers lon/lat {_fmt_bounds(roi_lonlat)} "
                f"({grid.crs} {_fmt_bounds(roi, 1)}), which no local file intersects. Files: "
                + "; ".join(lines) + more
            )

        chosen = [i for i in over if i.date is None or window.contains(i.date)]
        if not chosen:
            dates = sorted({i.date.date().isoformat() for i in over if i.date is not None})
            raise DataNotFoundError(
                f"no local file over this ROI is dated inside [{window.start}, {window.end}) (half-open); "
                f"dates available there: {', '.join(dates)}"
            )
        _refuse_band_files(chosen)
        # oldest first, undated before dated, so "most recent wins" can simply paint in order
        chosen.sort(key=lambda i: (i.date is not None, i.date or dt.datetime.min))

        stack = np.empty((len(chosen), len(sensor.bands), grid.height, grid.width), np.float32)
        valid = np.empty((len(chosen), grid.height, grid.width), bool)
        nodata = self._nodata_for(sensor.bands)
        for k, info in enumerate(chosen):
            by_file: dict[str, list[int]] = {}
            for c, b in enumerate(sensor.bands):
                by_file.setdefault(info.bands[b][0], []).append(c)
            ok_bands = np.empty((len(sensor.bands), grid.height, grid.width), bool)
            for path, chans in by_file.items():
                stack[k, chans], ok_bands[chans] = read_warped(
                    path, grid, [info.bands[sensor.bands[c]][1] for c in chans], resampling=self.resampling,
                    nodata=None if nodata is None else [nodata[c] for c in chans])
            valid[k] = ok_bands.all(axis=0)  # a pixel is valid only where every asked band is

        scenes = [
            {"path": i.path, "date": _fmt_date(i.date), "date_source": i.date_source, "undated": i.date is None,
             "valid_fraction": true_fraction(valid[k])}
            for k, i in enumerate(chosen)
        ]
        data, ok, times, comp = composite_scenes(stack, valid, [i.date for i in chosen], sensor, window)
        meta = {
            "provider": self.name,
            **comp,
            "resampling": self.resampling,
            "scenes": scenes,
            "undated": [i.path for i in chosen if i.date is None],
            "valid_fraction": true_fraction(ok),
        }
        return Raster(data, tuple(sensor.bands), grid, times, ok, meta)

    def _nodata_for(self, bands: tuple[str, ...]) -> list[float | None] | None:
        if self.nodata is None:
            return None
        if isinstance(self.nodata, Mapping):
            return [None if self.nodata.get(b) is None else float(self.nodata[b]) for b in bands]
        return [float(self.nodata)] * len(bands)

    def source_token(self, request: FetchRequest) -> str:
        """Which version of which files would serve `request` (paths, sizes, mtimes, ctimes; no reads):
        the runner's raster cache keys on it, so a rewritten file is read again."""
        parts = []
        for f in self._files():
            if _is_remote(f):
                parts.append(f)
                continue
            st = os.stat(f)
            parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def _refuse_band_files(chosen: list[_FileInfo]) -> None:
    """Single-band files on one footprint and date whose bands have no names are most likely different
    bands of one scene: compositing them would mix bands into one. Refuse, saying how to name them."""
    same: dict[tuple[Any, ...], list[str]] = {}
    for i in chosen:
        if i.positional and i.count == 1 and i.scene is None:
            same.setdefault((i.crs, tuple(round(v, 3) for v in i.bounds), i.date), []).append(i.path)
    for paths in same.values():
        if len(paths) > 1:
            names = ", ".join(os.path.basename(p) for p in paths[:4]) + (" ..." if len(paths) > 4 else "")
            raise SpecError(
                f"{len(paths)} single-band files cover the same footprint on the same date ({names}): they look "
                "like different bands of one scene, and compositing them would mix bands. Name the bands from the "
                "file names with LocalProvider(..., band_pattern=r'_(?P<band>[A-Za-z0-9]+)\\.tif$') (Landsat "
                "'_SR_B4.TIF' and Sentinel-2 '_B04_10m.jp2' names are recognised by default), or give each "
                "file its own date."
            )


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _fmt_bounds(b: tuple[float, ...], digits: int = 5) -> str:
    return "(" + ", ".join(f"{v:.{digits}f}" for v in b) + ")"


@hookimpl
def register_providers(register):
    register("local", LocalProvider)
