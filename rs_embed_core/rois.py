"""Reading ROI lists (CSV or GeoJSON) into named spatial specs, for the CLI and scripts.

CSV: a header with `lon,lat` (optional `buffer_m`, `name`) or `minlon,minlat,maxlon,maxlat`
(optional `name`). GeoJSON: Point features become PointBuffers (buffer from the feature's
`buffer_m` property or the default), Polygon/MultiPolygon features become their lon/lat BBox.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .errors import SpecError
from .specs import BBox, PointBuffer

NamedROI = tuple[str, PointBuffer | BBox]


def read_rois(path: str | Path, default_buffer_m: float | None = None) -> list[NamedROI]:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"ROI file not found: {p}")
    suffix = p.suffix.lower()
    if suffix in (".geojson", ".json"):
        try:
            doc = json.loads(p.read_text())
        except ValueError as exc:
            raise SpecError(f"{p.name} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise SpecError(f"{p.name}: expected a GeoJSON object (FeatureCollection, Feature or geometry), "
                            f"got a {type(doc).__name__}")
        return _from_geojson(doc, default_buffer_m, p)
    if suffix in (".csv", ".txt"):
        try:
            return _from_csv(p, default_buffer_m)
        except UnicodeDecodeError as exc:
            raise SpecError(f"{p.name} is not a UTF-8 text CSV file ({exc.reason} at byte {exc.start})") from None
    if suffix == ".parquet":
        return _from_parquet(p, default_buffer_m)
    raise SpecError(f"ROI file must be .csv, .geojson/.json or .parquet, got {p.name}")


def _point(lon: Any, lat: Any, buffer_m: Any, default: float | None, where: str) -> PointBuffer:
    if buffer_m in (None, ""):
        if default is None:
            raise SpecError(f"{where}: no buffer_m given and no default buffer (use --buffer-m)")
        buffer_m = default
    try:
        return PointBuffer(float(lon), float(lat), float(buffer_m))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {exc}") from None


def _from_parquet(p: Path, default: float | None) -> list[NamedROI]:
    """A table with the CSV columns (lon, lat[, buffer_m][, name] or minlon..maxlat[, name])."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SpecError("reading .parquet ROI files needs pyarrow: pip install pyarrow") from None
    try:
        rows = pq.read_table(p).to_pylist()
    except Exception as exc:  # pyarrow's errors for a broken file
        raise SpecError(f"{p.name}: cannot read it as Parquet: {exc}") from None
    return _from_rows(p, [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in rows], default)


def _from_csv(p: Path, default: float | None) -> list[NamedROI]:
    with p.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return _from_rows(p, rows, default)


def _from_rows(p: Path, rows: list[dict[str, Any]], default: float | None) -> list[NamedROI]:
    if not rows:
        raise SpecError(f"{p}: no rows")
    cols = {c.strip().lower() for c in rows[0].keys() if c}
    out: list[NamedROI] = []
    for i, raw in enumerate(rows, start=1):
        row = {k.strip().lower(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k}
        where = f"{p.name} row {i}"
        name = row.get("name") or f"roi_{i}"
        if {"lon", "lat"} <= cols:
            out.append((name, _point(row["lon"], row["lat"], row.get("buffer_m"), default, where)))
        elif {"minlon", "minlat", "maxlon", "maxlat"} <= cols:
            try:
                out.append((name, BBox(*(float(row[k]) for k in ("minlon", "minlat", "maxlon", "maxlat")))))
            except ValueError as exc:
                raise SpecError(f"{where}: {exc}") from None
        else:
            raise SpecError(f"{p.name}: header needs lon,lat or minlon,minlat,maxlon,maxlat; got {sorted(cols)}")
    return out


def _coords_bounds(coords: Any, where: str) -> tuple[float, float, float, float]:
    flat: list[tuple[float, float]] = []

    def walk(c: Any) -> None:
        if not isinstance(c, list):
            raise SpecError(f"{where}: coordinates must be nested lists of [lon, lat], got {c!r}")
        if c and isinstance(c[0], (int, float)) and not isinstance(c[0], bool):
            if len(c) < 2:
                raise SpecError(f"{where}: a position needs [lon, lat], got {c!r}")
            flat.append((float(c[0]), float(c[1])))
        else:
            for x in c:
                walk(x)

    walk(coords)
    if not flat:
        raise SpecError(f"{where}: the polygon has no coordinates")
    xs, ys = zip(*flat)
    return min(xs), min(ys), max(xs), max(ys)


def _from_geojson(doc: dict[str, Any], default: float | None, p: Path) -> list[NamedROI]:
    feats = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
    if not isinstance(feats, list):
        raise SpecError(f"{p.name}: 'features' must be a list")
    out: list[NamedROI] = []
    for i, feat in enumerate(feats, start=1):
        if not isinstance(feat, dict):
            raise SpecError(f"{p.name} feature {i}: expected a GeoJSON object, got {feat!r}")
        geom = feat.get("geometry") if feat.get("type") == "Feature" else feat
        props = feat.get("properties") or {}
        name = str(props.get("name") or feat.get("id") or f"roi_{i}")
        where = f"{p.name} feature {i}"
        gtype = (geom or {}).get("type")
        if gtype == "Point":
            c = geom.get("coordinates")
            if not isinstance(c, list) or len(c) < 2:
                raise SpecError(f"{where}: a Point needs coordinates [lon, lat], got {c!r}")
            out.append((name, _point(c[0], c[1], props.get("buffer_m"), default, where)))
        elif gtype in ("Polygon", "MultiPolygon"):
            try:
                out.append((name, BBox(*_coords_bounds(geom.get("coordinates"), where))))
            except SpecError as exc:
                raise SpecError(f"{where}: {exc}" if where not in str(exc) else str(exc)) from None
        else:
            raise SpecError(f"{where}: geometry type {gtype!r} is not supported (Point, Polygon, MultiPolygon)")
    if not out:
        raise SpecError(f"{p}: no features")
    return out
