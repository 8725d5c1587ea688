"""Similarity search over exports: every layout and format, every query kind, exactness against a brute-force
cosine, memory-bounded chunking, the approximate index's freshness, typed errors before any work, the CLI and the
score map. Exports are small MOSAIKS runs (weights-free baseline) over the synthetic sample scene."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("rs_embed_baseline")
pytest.importorskip("zarr")

from click.testing import CliRunner  # noqa: E402

from rs_embed import (  # noqa: E402
    BBox, DimensionMismatchError, IncomparableQueryError, LonLat, ModelNotInExportError, ModelRequest,
    NoTextTowerError, OutputSpec, PointBuffer, SearchError, SpecError, TemporalSpec, TextQuery, UnknownItemError,
    build_index, export_batch, get_embedding, load_export, search,
)
from rs_embed_core import api  # noqa: E402
from rs_embed_core.cli import main  # noqa: E402
from rs_embed_core.providers.local import LocalProvider  # noqa: E402
from rs_embed_core.sample import make_sample_scene  # noqa: E402
from rs_embed_core.search_source import ExportVectors, wkb_ring  # noqa: E402

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")
PLACES = {  # name: (lon, lat) in the sample scene, the kind of ground around it by construction
    "urban_a": (121.49, 31.21), "urban_b": (121.50, 31.22), "river": (121.515, 31.185),
    "lake": (120.53, 30.22), "crops": (120.48, 30.18), "crops_b": (120.47, 30.19),
}
NAMES = list(PLACES)
SPATIALS = [PointBuffer(lon, lat, 300) for lon, lat in PLACES.values()]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    import rs_embed_baseline
    from rs_embed_core.plugins import load_plugins, pm

    load_plugins()
    added = not pm.is_registered(rs_embed_baseline)
    if added:
        pm.register(rs_embed_baseline, name="baseline-search-test")
    root = tmp_path_factory.mktemp("search")
    make_sample_scene(root / "scene")
    yield root
    if added:
        pm.unregister(rs_embed_baseline)


def _export(scene, name, **kw):
    out = scene / name
    if not (out / "manifest.json").is_file():
        kw.setdefault("models", ["mosaiks"])
        export_batch(SPATIALS, WINDOW, out=out, names=NAMES, backend=f"local:{scene / 'scene'}", progress=False,
                     **kw)
    return out


@pytest.fixture(scope="module")
def pooled(scene):
    return _export(scene, "pooled")


@pytest.fixture(scope="module")
def grid(scene):
    return _export(scene, "grid-zarr", output=OutputSpec.grid(), layout="combined")


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _brute(path, q, model="mosaiks"):
    """Cosine of q with every item, from load_export (an independent reading)."""
    x = load_export(path).embeddings[model]
    return _unit(x) @ _unit(q)


# ---------------------------------------------------------------- what is found


def test_places_find_their_own_kind(pooled):
    assert search(pooled, "urban_a", k=1).column("name").to_pylist() == ["urban_b"]
    assert search(pooled, "lake", k=1).column("name").to_pylist() == ["river"]


def test_scores_and_order_equal_a_brute_force_cosine(pooled):
    q = np.random.default_rng(0).standard_normal(load_export(pooled).embeddings["mosaiks"].shape[1])
    hits = search(pooled, q.astype(np.float32), k=6)
    want = _brute(pooled, q)
    assert hits.column("id").to_pylist() == list(np.argsort(-want, kind="stable"))
    np.testing.assert_allclose(hits.column("score").to_numpy(), np.sort(want)[::-1], atol=1e-5)
    assert hits.column("rank").to_pylist() == list(range(1, 7))


def test_item_query_leaves_itself_out_unless_asked(pooled):
    hits = search(pooled, "river", k=10)
    assert "river" not in hits.column("name").to_pylist() and hits.num_rows == 5
    both = search(pooled, 2, k=1, exclude_query=False)
    assert both.column("name").to_pylist() == ["river"] and both.column("score")[0].as_py() == pytest.approx(1.0)


def test_a_list_is_the_mean_of_normalised_vectors(pooled):
    x = load_export(pooled).embeddings["mosaiks"]
    hits = search(pooled, ["urban_a", x[3] * 1000.0], k=6, exclude_query=False)
    q = _unit(_unit(x[0]) + _unit(x[3]))
    np.testing.assert_allclose(hits.column("score").to_numpy(), np.sort(_unit(x) @ q)[::-1], atol=1e-5)


def test_place_queries_are_embedded_with_the_exports_recorded_settings(scene):
    """A non-default variant: the on-the-fly query of an exported place is that item's vector exactly."""
    out = _export(scene, "k1024", models=[ModelRequest("mosaiks", variant="k1024")])
    hits = search(out, SPATIALS[3], k=1)
    assert hits.column("name").to_pylist() == ["lake"]
    assert hits.column("score")[0].as_py() == pytest.approx(1.0, abs=1e-6)


def test_lonlat_takes_the_exported_item_there(pooled):
    lon, lat = PLACES["river"]
    assert search(pooled, LonLat(lon + 0.001, lat), k=1).column("name").to_pylist() == \
        search(pooled, "river", k=1).column("name").to_pylist()
    with pytest.raises(UnknownItemError, match="PointBuffer"):
        search(pooled, LonLat(0.0, 0.0))


def test_embedding_queries_must_come_from_the_exports_model(pooled, scene):
    local = LocalProvider(scene / "scene")
    same = get_embedding("mosaiks", SPATIALS[0], WINDOW, backend=local)
    hits = search(pooled, same, k=1)
    assert hits.column("name").to_pylist() == ["urban_a"]  # it is urban_a's vector: not an item reference
    other = get_embedding("spectral_stats", SPATIALS[0], WINDOW, backend=local)
    with pytest.raises(IncomparableQueryError, match="spectral_stats"):
        search(pooled, other)


def test_where_restricts_the_candidates(pooled):
    assert set(search(pooled, "urban_a", where=["lake", "crops"]).column("name").to_pylist()) == {"lake", "crops"}
    shanghai = BBox(121.4, 31.1, 121.6, 31.3)
    assert set(search(pooled, "lake", where=shanghai).column("name").to_pylist()) == {"urban_a", "urban_b", "river"}
    assert search(pooled, "lake", where=lambda it: it["name"].startswith("crops")).num_rows == 2


def test_every_layout_and_format_gives_the_same_hits(scene, pooled):
    q = np.random.default_rng(1).standard_normal(1024).astype(np.float32)
    want = search(pooled, q, k=4)
    for name, kw in {"npz-combined": {"format": "npz", "layout": "combined"},
                     "npz-items": {"format": "npz", "layout": "per_item"}}.items():
        got = search(_export(scene, name, **kw), q, k=4)
        assert got.column("id").to_pylist() == want.column("id").to_pylist()
        np.testing.assert_allclose(got.column("score").to_numpy(), want.column("score").to_numpy(), atol=1e-6)
        assert got.column("geometry").to_pylist() == want.column("geometry").to_pylist()


def test_chunked_scan_equals_one_pass(pooled):
    q = np.random.default_rng(2).standard_normal(1024).astype(np.float32)
    one = search(pooled, q, k=5)
    tiny = search(pooled, q, k=5, chunk_rows=2)
    assert tiny.drop(["score"]).to_pylist() == one.drop(["score"]).to_pylist()
    np.testing.assert_allclose(tiny.column("score").to_numpy(), one.column("score").to_numpy(), atol=1e-6)


def test_result_is_geoparquet_ready(pooled, tmp_path):
    gpd = pytest.importorskip("geopandas")
    hits = search(pooled, "urban_a", k=3)
    pq.write_table(hits, tmp_path / "hits.parquet")
    df = gpd.read_parquet(tmp_path / "hits.parquet")
    assert df.crs.name == "WGS 84 (CRS84)" and list(df["name"]) == hits.column("name").to_pylist()
    for geom, lon, lat in zip(df.geometry, df["lon"], df["lat"]):
        assert geom.contains(gpd.points_from_xy([lon], [lat])[0])
        assert 0.0045 < geom.bounds[3] - geom.bounds[1] < 0.0065  # 600 m tall
    meta = json.loads(hits.schema.metadata[b"rs_embed_search"])
    assert meta["model"] == "mosaiks" and meta["level"] == "item" and meta["query"] == ["item:0"]


# ---------------------------------------------------------------- grid exports: cells


def test_grid_cells_are_searched_and_georeferenced(grid):
    lon, lat = PLACES["river"]
    hits = search(grid, LonLat(lon, lat), k=5)
    meta = json.loads(hits.schema.metadata[b"rs_embed_search"])
    assert meta["level"] == "cell" and hits.column("row").null_count == 0
    src = ExportVectors(grid)
    i, r, c = src.cell_at(lon, lat)
    cells = src.item_cells(i)
    q = cells[:, r, c]
    # brute force over every cell of every item
    allv, where = [], []
    for it in range(len(NAMES)):
        v = src.item_cells(it)
        d, h, w = v.shape
        allv.append(v.reshape(d, -1).T)
        where += [(it, rr, cc) for rr in range(h) for cc in range(w)]
    s = _unit(np.concatenate(allv)) @ _unit(q)
    order = [j for j in np.argsort(-s, kind="stable") if where[j] != (i, r, c)][:5]
    assert list(zip(hits.column("id").to_pylist(), hits.column("row").to_pylist(),
                    hits.column("col").to_pylist())) == [where[j] for j in order]
    np.testing.assert_allclose(hits.column("score").to_numpy(), s[order], atol=1e-5)
    # each hit's polygon is its cell: it holds the cell centre and is one cell (300 m / 8 cells) wide
    for wkb, clon, clat in zip(hits.column("geometry").to_pylist(), hits.column("lon").to_pylist(),
                               hits.column("lat").to_pylist()):
        ring = wkb_ring(wkb)
        assert ring[:, 0].min() < clon < ring[:, 0].max() and ring[:, 1].min() < clat < ring[:, 1].max()
        assert 60 < (ring[:, 1].max() - ring[:, 1].min()) * 111_000 < 90


def test_grid_layouts_agree_and_item_level_is_the_cell_mean(scene, grid):
    q = np.random.default_rng(3).standard_normal(1024).astype(np.float32)
    want = search(grid, q, k=7).to_pylist()
    for name, kw in {"grid-tif": {"layout": "per_item"}, "grid-npz": {"layout": "combined", "format": "npz"}}.items():
        got = search(_export(scene, name, output=OutputSpec.grid(), **kw), q, k=7).to_pylist()
        assert [(g["id"], g["row"], g["col"]) for g in got] == [(w["id"], w["row"], w["col"]) for w in want]
        np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-6)
    items = search(grid, q, k=6, level="item")
    means = load_export(grid).embeddings["mosaiks"].reshape(6, 1024, -1).mean(axis=2)
    np.testing.assert_allclose(items.column("score").to_numpy(), np.sort(_unit(means) @ _unit(q))[::-1], atol=1e-5)
    assert items.column("row").null_count == 6


# ---------------------------------------------------------------- typed errors, before any work


def test_bad_input_is_refused_before_any_work(pooled, scene, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("work started before the query was checked")

    monkeypatch.setattr(api, "get_embeddings_batch", no_work)
    monkeypatch.setattr(ExportVectors, "chunks", no_work)
    with pytest.raises(SpecError, match="k must be"):
        search(pooled, "lake", k=0)
    with pytest.raises(UnknownItemError, match="Did you mean 'lake'"):
        search(pooled, [SPATIALS[0], "laek"])
    with pytest.raises(UnknownItemError, match="outside"):
        search(pooled, 99)
    with pytest.raises(NoTextTowerError, match="no text tower"):
        search(pooled, [SPATIALS[0], TextQuery("a flooded road")])
    with pytest.raises(DimensionMismatchError, match="1024"):
        search(pooled, np.ones(3, np.float32))
    with pytest.raises(ModelNotInExportError, match="not in this export"):
        search(pooled, "lake", model="remoteclip")
    with pytest.raises(SearchError, match="level='cell'"):
        search(pooled, "lake", level="cell")
    with pytest.raises(SearchError, match="no rs-embed export"):
        search(scene / "scene", "lake")
    with pytest.raises(SpecError, match="where"):
        search(pooled, "lake", where="crops")


def test_several_models_need_a_name(scene):
    out = _export(scene, "two", models=["mosaiks", "spectral_stats"])
    with pytest.raises(ModelNotInExportError, match="several models"):
        search(out, "lake")
    assert search(out, "lake", model="spectral_stats", k=1).num_rows == 1


def test_an_export_without_vectors_is_refused(tmp_path, pooled):
    bad = tmp_path / "failed"
    shutil.copytree(pooled, bad)
    doc = json.loads((bad / "manifest.json").read_text())
    for it in doc["items"]:
        it["status"] = {"mosaiks": "failed"}
    (bad / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(SearchError, match="no item of mosaiks has an embedding"):
        search(bad, np.ones(1024, np.float32))


# ---------------------------------------------------------------- the approximate index


def test_approx_index_matches_exact_and_is_kept_fresh(tmp_path, pooled):
    pytest.importorskip("usearch")
    out = tmp_path / "ex"
    shutil.copytree(pooled, out)
    exact = search(out, "urban_a", k=5)
    approx = search(out, "urban_a", k=5, index="approx")
    assert json.loads(approx.schema.metadata[b"rs_embed_search"])["index"] == "approx"
    assert approx.column("id").to_pylist() == exact.column("id").to_pylist()
    np.testing.assert_allclose(approx.column("score").to_numpy(), exact.column("score").to_numpy(), atol=2e-3)
    record = out / ".search" / "mosaiks.item.json"
    first = json.loads(record.read_text())
    assert first["count"] == 6

    # touched, not changed: used as is (no warning), the new mtime recorded
    os.utime(out / "mosaiks.parquet", ns=(1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search(out, "urban_a", k=5, index="approx")
    assert json.loads(record.read_text())["source_sha256"] == first["source_sha256"]

    # the export's vectors change: the index is rebuilt, never used stale
    t = pq.read_table(out / "mosaiks.parquet")
    emb = np.stack(t.column("embedding").to_numpy(zero_copy_only=False))
    emb[5] = emb[0]  # crops_b becomes a copy of urban_a
    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), emb.shape[1])
    pq.write_table(t.set_column(t.schema.get_field_index("embedding"), t.schema.field("embedding"), col),
                   out / "mosaiks.parquet")
    with pytest.warns(UserWarning, match="changed"):
        hits = search(out, "urban_a", k=1, index="approx")
    assert hits.column("name").to_pylist() == ["crops_b"]
    assert json.loads(record.read_text())["source_sha256"] != first["source_sha256"]

    # a corrupted index file is rebuilt too
    idx = out / ".search" / "mosaiks.item.usearch"
    idx.write_bytes(b"\0" * idx.stat().st_size)
    with pytest.warns(UserWarning, match="corrupted"):
        assert search(out, "urban_a", k=1, index="approx").column("name").to_pylist() == ["crops_b"]
    assert build_index(out)["count"] == 6


def test_approx_with_where_filters_the_candidates(pooled, tmp_path):
    pytest.importorskip("usearch")
    out = tmp_path / "ex"
    shutil.copytree(pooled, out)
    hits = search(out, "urban_a", k=2, where=["lake", "crops"], index="approx")
    assert set(hits.column("name").to_pylist()) == {"lake", "crops"}


# ---------------------------------------------------------------- CLI and the score map


def test_cli_search_writes_hits_and_a_score_map(pooled, tmp_path):
    from PIL import Image

    gj, png = tmp_path / "hits.geojson", tmp_path / "scores.png"
    res = CliRunner().invoke(main, ["search", str(pooled), "--like", "lake", "-k", "2", "--out", str(gj),
                                    "--quicklook", str(png)])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[1].split()[:2] == ["1", "river"]
    doc = json.loads(gj.read_text())
    assert [f["properties"]["name"] for f in doc["features"]] == ["river", "urban_b"]
    assert doc["features"][0]["geometry"]["type"] == "Polygon"
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[:2] == (480 + 18, 720)  # six far-apart places: a 3 x 2 grid of 240 px panels, then the bar
    # the query (lake) is painted white, the best hit (river) in the ramp's top colour
    white = (img == 255).all(axis=2)
    yellow = (img[..., 0] > 200) & (img[..., 1] > 200) & (img[..., 2] < 80)
    assert white.sum() > 20 and yellow.sum() > 20

    lon, lat = PLACES["river"]
    res = CliRunner().invoke(main, ["search", str(pooled), "--like", f"{lon},{lat}", "-k", "1",
                                    "--out", str(tmp_path / "h.csv")])
    assert res.exit_code == 0, res.output
    best = search(pooled, "river", k=1).column("name")[0].as_py()  # the place is the river item: same query
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert len(lines) == 2 and f'"{best}"' in lines[1] and "geometry" not in lines[0]


def test_cli_search_errors_are_one_line(pooled, tmp_path):
    res = CliRunner().invoke(main, ["search", str(pooled)])
    assert res.exit_code == 2 and "give a query" in res.output
    res = CliRunner().invoke(main, ["search", str(pooled), "--like", "lake", "--out", str(tmp_path / "x.txt")])
    assert res.exit_code == 2 and "--out must end" in res.output
    res = CliRunner().invoke(main, ["search", str(pooled), "--text", "a lake"])
    assert res.exit_code == 2 and "no text tower" in res.output


def test_approx_search_in_a_fresh_process(pooled, tmp_path):
    """usearch loaded before PROJ used to break every CRS lookup after it; the index path loads PROJ first."""
    pytest.importorskip("usearch")
    import subprocess
    import sys

    out = tmp_path / "ex"
    shutil.copytree(pooled, out)
    code = ("from rs_embed import search\n"
            f"print(search({str(out)!r}, 'lake', k=1, index='approx').column('name')[0])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "river"


def test_dense_places_share_one_map_and_sparse_ones_get_panels():
    from rs_embed_core.search_map import _Layout

    tiles = {i: np.array([i * 0.01, 0.0, (i + 1) * 0.01, 0.01]) for i in range(4)}  # side by side
    dense = _Layout.choose(np.stack(list(tiles.values())), np.arange(4), tiles)
    assert list(dense.frames) == [-1] and max(dense.size) == 800
    left, right = dense.pixels(tiles[0], 0), dense.pixels(tiles[3], 3)
    assert left[2] <= right[0] + 1 and left[1] == right[1]  # same row, left of it, on one map
    far = {i: np.array([i * 1.0, 0.0, i * 1.0 + 0.01, 0.01]) for i in range(4)}
    sparse = _Layout.choose(np.stack(list(far.values())), np.arange(4), far)
    assert sorted(sparse.frames) == [0, 1, 2, 3] and sparse.size == (2 * 240, 2 * 240)
    x0, y0, x1, y1 = sparse.pixels(far[3], 3)  # the fourth panel (second row, second column), almost filled
    assert 240 < x0 < 255 and 240 < y0 < 255 and 200 < x1 - x0 <= 236 and 200 < y1 - y0 <= 236
