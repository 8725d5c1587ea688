"""`rs-embed search`: the items or cells of an export most like a named item, a place or a text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .errors import SearchError, SpecError, UnknownItemError

OUT_SUFFIXES = (".geojson", ".json", ".parquet", ".csv")


def _like(value: str) -> tuple[float, float] | None:
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None


def _place_query(src: Any, lon: float, lat: float, buffer_m: float | None) -> Any:
    """The exported vector at (lon, lat) when the export covers it, else that place embedded on the fly."""
    from .search import LonLat
    from .specs import PointBuffer

    here = LonLat(lon, lat)
    covered = src.cell_at(lon, lat) is not None if src.level == "cell" else bool(src.item_at(lon, lat))
    if covered:
        return here
    if buffer_m is None:
        buffers = sorted(s["buffer_m"] for s in src.request["spatials"] if s.get("type") == "point_buffer")
        if not buffers:
            raise SpecError(f"{lon},{lat} lies outside the export and its items are boxes; give --buffer-m to "
                            "embed that place on the fly")
        buffer_m = buffers[len(buffers) // 2]
    return PointBuffer(lon, lat, buffer_m)


@click.command("search")
@click.argument("export", type=click.Path(file_okay=False))
@click.option("--like", "likes", multiple=True,
              help="An item NAME or LON,LAT (the exported vector there, or that place embedded on the fly with the "
                   "export's own settings); repeat for the mean of several.")
@click.option("--text", "texts", multiple=True, help="A text query (models with a text tower, e.g. remoteclip).")
@click.option("-k", "k", default=10, show_default=True, help="How many hits.")
@click.option("--model", help="The export's model key or id (when it holds several).")
@click.option("--level", type=click.Choice(["auto", "item", "cell"]), default="auto", show_default=True,
              help="Items, or the token cells of a grid export (auto: cells for grid exports).")
@click.option("--approx", is_flag=True, help="Use (and build once) the approximate index beside the export.")
@click.option("--buffer-m", type=float, help="Buffer of a LON,LAT outside the export (default: the export's).")
@click.option("--backend", help="Data source for places embedded on the fly (default: the export's).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Write the hits: .geojson/.json (GeoJSON), .parquet (GeoParquet) or .csv.")
@click.option("--quicklook", type=click.Path(dir_okay=False), help="Write a PNG map of every score.")
@click.option("--device", default="auto", show_default=True)
def search_command(export, likes, texts, k, model, level, approx, buffer_m, backend, out_path, quicklook,
                   device) -> None:
    """Find the items (or grid cells) of EXPORT most similar to --like / --text queries."""
    from .cli import _writable_file
    from .search import TextQuery, search
    from .search_source import ExportVectors

    if not likes and not texts:
        raise SpecError("give a query: --like NAME, --like LON,LAT or --text \"...\"")
    if out_path and Path(out_path).suffix.lower() not in OUT_SUFFIXES:
        raise SpecError(f"--out must end in one of {', '.join(OUT_SUFFIXES)}, got {out_path}")
    _writable_file(out_path, "--out")
    _writable_file(quicklook, "--quicklook")
    src = ExportVectors(export, model, level)
    queries: list[Any] = []
    for value in likes:
        if value in src.names:
            queries.append(value)
        elif (ll := _like(value)) is not None:
            queries.append(_place_query(src, ll[0], ll[1], buffer_m))
        else:
            raise UnknownItemError(f"--like {value!r} is neither an item of the export nor LON,LAT")
    queries.extend(TextQuery(t) for t in texts)
    hits = search(export, queries if len(queries) > 1 else queries[0], k=k, model=src.key, level=src.level,
                  index="approx" if approx else "exact", backend=backend, device=device, quicklook=quicklook)
    _print(hits)
    if out_path:
        _write(hits, out_path)
        click.echo(f"wrote {hits.num_rows} hits to {out_path}", err=True)
    if quicklook:
        click.echo(f"wrote the score map to {quicklook}", err=True)


def _print(hits: Any) -> None:
    t = hits.to_pydict()
    cell = any(r is not None for r in t["row"])
    width = max([len(n) for n in t["name"]] + [4])
    head = f"{'rank':>4}  {'name':<{width}}" + ("  row  col" if cell else "") + "    score        lon       lat"
    click.echo(head)
    for j in range(hits.num_rows):
        where = f"  {t['row'][j]:>3}  {t['col'][j]:>3}" if cell else ""
        click.echo(f"{t['rank'][j]:>4}  {t['name'][j]:<{width}}{where}  {t['score'][j]:7.4f}  "
                   f"{t['lon'][j]:9.5f}  {t['lat'][j]:8.5f}")


def _write(hits: Any, path: str) -> None:
    from .cli import _atomic_write
    from .search import hits_geojson

    suffix = Path(path).suffix.lower()
    if suffix in (".geojson", ".json"):
        doc = json.dumps(hits_geojson(hits)).encode()
        _atomic_write(path, lambda f: f.write(doc))
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        _atomic_write(path, lambda f: pq.write_table(hits, f))
    elif suffix == ".csv":
        import pyarrow.csv as pcsv

        _atomic_write(path, lambda f: pcsv.write_csv(hits.drop(["geometry"]), f))
    else:  # checked before the search
        raise SearchError(f"cannot write {path}")
