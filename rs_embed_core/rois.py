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
        return _from_geojson(json.loads(p.read_text()), default_buffer_m, p)
    if suffix in (".csv", ".txt"):
        return _from_csv(p, default_buffer_m)
    raise SpecError(f"ROI file must be .csv or .geojson/.json, got {p.name}")


def _point(lon: Any, lat: Any, buffer_m: Any, default: float | None, where: str) -> PointBuffer:
    if buffer_m in (None, ""):
        if default is None:
            raise SpecError(f"{where}: no buffer_m given and no default buffer (use --buffer-m)")
        buffer_m = default
    try:
        return PointBuffer(float(lon), float(lat), float(buffer_m))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {exc}") from None


def _from_csv(p: Path, default: float | None) -> list[NamedROI]:
    with p.open(newline="") as f:
        rows = list(csv.DictReader(f))
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


def _coords_bounds(coords: Any) -> tuple[float, float, float, float]:
    flat: list[tuple[float, float]] = []

    def walk(c: Any) -> None:
        if c and isinstance(c[0], (int, float)):
            flat.append((float(c[0]), float(c[1])))
        else:
            for x in c:
                walk(x)

    walk(coords)
    xs, ys = zip(*flat)
    return min(xs), min(ys), max(xs), max(ys)


def _from_geojson(doc: dict[str, Any], default: float | None, p: Path) -> list[NamedROI]:
    feats = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
    out: list[NamedROI] = []
    for i, feat in enumerate(feats or [], start=1):
        geom = feat.get("geometry") if feat.get("type") == "Feature" else feat
        props = feat.get("properties") or {}
        name = str(props.get("name") or feat.get("id") or f"roi_{i}")
        where = f"{p.name} feature {i}"
        gtype = (geom or {}).get("type")
        if gtype == "Point":
            lon, lat = geom["coordinates"][:2]
            out.append((name, _point(lon, lat, props.get("buffer_m"), default, where)))
        elif gtype in ("Polygon", "MultiPolygon"):
            out.append((name, BBox(*_coords_bounds(geom["coordinates"]))))
        else:
            raise SpecError(f"{where}: geometry type {gtype!r} is not supported (Point, Polygon, MultiPolygon)")
    if not out:
        raise SpecError(f"{p}: no features")
    return out
