"""PCA-to-RGB quicklooks: the colour rule (equal vectors equal colours, far ones far apart, stable signs, the
percentile stretch), a grid's picture keeps its shape and north-up orientation with correct lon/lat ticks,
export maps carry one basis over all items or cells, the CLI writes PNG / HTML, the folium map has one feature
per item or cell, and bad input or a missing `maps` extra is a typed error before any work. Exports are small
MOSAIKS runs (weights-free baseline) over the synthetic sample scene."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("rs_embed_baseline")
pytest.importorskip("zarr")
Image = pytest.importorskip("PIL.Image")

from click.testing import CliRunner  # noqa: E402

from rs_embed import (  # noqa: E402
    Embedding, GridSpec, MissingExtraError, OutputSpec, PointBuffer, SearchError, SpecError, TemporalSpec,
    export_batch, load_export, quicklook, quicklook_map,
)
from rs_embed_core import quicklook as ql  # noqa: E402
from rs_embed_core.api import _png_rgb  # noqa: E402
from rs_embed_core.cli import main  # noqa: E402
from rs_embed_core.sample import make_sample_scene  # noqa: E402

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")
PLACES = {"urban_a": (121.49, 31.21), "urban_b": (121.50, 31.22), "river": (121.515, 31.185),
          "lake": (120.53, 30.22), "crops": (120.48, 30.18), "lake_again": (120.53, 30.22)}
NAMES = list(PLACES)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    import rs_embed_baseline
    from rs_embed_core.plugins import load_plugins, pm

    load_plugins()
    added = not pm.is_registered(rs_embed_baseline)
    if added:
        pm.register(rs_embed_baseline, name="baseline-quicklook-test")
    root = tmp_path_factory.mktemp("quicklook")
    make_sample_scene(root / "scene")
    for name, kw in (("items", {}), ("cells", {"output": OutputSpec.grid(), "layout": "combined"})):
        export_batch([PointBuffer(lon, lat, 300) for lon, lat in PLACES.values()], WINDOW, out=root / name,
                     names=NAMES, models=["mosaiks"], backend=f"local:{root / 'scene'}", progress=False, **kw)
    yield root
    if added:
        pm.unregister(rs_embed_baseline)


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------- the colour rule


def _clusters(rng, n=40, d=64, k=4):
    """k clusters: k - 1 = 3 directions between them, so PC1-3 are those (not noise)."""
    centres = rng.normal(size=(k, d)) * 5
    x = np.concatenate([c + rng.normal(size=(n, d)) * 0.3 for c in centres])
    return x, np.repeat(np.arange(k), n)


def test_equal_vectors_equal_colours_and_far_ones_differ():
    rng = np.random.default_rng(0)
    x, label = _clusters(rng)
    x[5] = x[77]  # an identical pair, in two different clusters' places
    x[6] = 3.0 * x[77]  # a scaled copy: cosine-equal, so the same colour
    rgb = ql.PCABasis.fit(x).rgb(x)
    assert (rgb[5] == rgb[77]).all() and (rgb[6] == rgb[77]).all()
    mean = np.stack([rgb[label == k].astype(float).mean(0) for k in range(4)])
    within = max(np.abs(rgb[label == k][10:] - mean[k]).max() for k in range(4))
    between = min(np.abs(mean[a] - mean[b]).max() for a in range(4) for b in range(a + 1, 4))
    assert between > 100 and within < 60  # clusters are told apart, members look alike


def test_colours_do_not_depend_on_row_order_or_sign_of_the_svd():
    rng = np.random.default_rng(1)
    x, _ = _clusters(rng, n=30, d=8)  # n > D: the covariance path
    perm = rng.permutation(len(x))
    a = ql.PCABasis.fit(x).rgb(x)
    b = ql.PCABasis.fit(x[perm]).rgb(x)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    wide, _ = _clusters(rng, n=4, d=200)  # n < D: the SVD path, same rule
    basis = ql.PCABasis.fit(wide)
    assert np.abs(basis.components).max(axis=1).tolist() == [
        basis.components[k][np.argmax(np.abs(basis.components[k]))] for k in range(3)]  # largest loading positive


def test_percentile_stretch_and_explained_variance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 16))
    x[:, 0] *= 10  # one dominant direction
    basis = ql.PCABasis.fit(x)
    p = basis.project(x)
    assert np.allclose(basis.lo, np.percentile(p, 2, axis=0)) and np.allclose(basis.hi, np.percentile(p, 98, axis=0))
    rgb = basis.rgb(x)
    inside = (p[:, 0] > basis.lo[0]) & (p[:, 0] < basis.hi[0])
    assert (rgb[p[:, 0] <= basis.lo[0], 0] == 0).all() and (rgb[p[:, 0] >= basis.hi[0], 0] == 255).all()
    assert abs((rgb[inside, 0] == 0).mean()) < 0.01  # only the lowest 2 % are clipped to black
    assert basis.explained[0] > basis.explained[1] >= basis.explained[2] > 0 and basis.explained.sum() <= 1
    flat = ql.PCABasis.fit(np.ones((5, 4)))  # one point: no direction, mid grey
    assert (flat.rgb(np.ones((2, 4))) == 128).all()


def test_sample_is_an_even_stride_of_the_stream():
    s = ql._Sample(100)
    rows = np.arange(1000)[:, None]
    for lo in range(0, 1000, 37):
        s.add(rows[lo:lo + 37])
    assert not s.complete and s.rows()[:, 0].tolist() == list(range(0, 1000, 16))


# ---------------------------------------------------------------- one grid embedding


def _grid_embedding(h=3, w=5):
    data = np.zeros((4, h, w), np.float32)
    data[0] = 1.0
    data[1, 0, :] = 3.0  # the first (northern) row differs
    data[2, :, 0] = 2.0  # the first (western) column differs
    data[:, h - 1, w - 1] = np.nan  # a masked cell
    grid = GridSpec("EPSG:32651", 355000.0, 3455000.0, 100.0, w, h)
    return Embedding(data, {"model": "toy"}, grid)


def test_grid_picture_keeps_shape_and_north_up(tmp_path):
    emb = _grid_embedding()
    img, _ = ql.grid_rgb(emb.data)
    assert img.shape == (3, 5, 3)
    assert (img[0, 1:] == img[0, 1]).all() and not (img[0, 1] == img[1, 1]).all()  # row 0 on top
    assert (img[1:, 0] == img[1, 0]).all() and not (img[1, 0] == img[1, 1]).all()  # column 0 on the left
    assert (img[2, 4] == ql._BG).all()  # the NaN cell is background

    out = emb.quicklook(str(tmp_path / "pca.png"))
    png = _png(out)
    s = 512 // 5
    top, left = ql._Canvas.TOP, ql._Canvas.LEFT
    for r in range(3):
        for c in range(5):
            assert (png[top + r * s + s // 2, left + c * s + s // 2] == img[r, c]).all()
    assert png.shape[1] >= left + 5 * s and png.shape[0] > top + 3 * s


def test_grid_ticks_are_the_grids_lon_lat():
    from rs_embed_core.grid import _transformer

    emb = _grid_embedding(6, 6)
    g, s = emb.grid, 512 // 6
    canvas = ql._embedding_canvas(emb)
    to_ll = _transformer(g.crs, "EPSG:4326")
    xs = [(p, t) for axis, p, t in canvas.ticks if axis == "x"]
    ys = [(p, t) for axis, p, t in canvas.ticks if axis == "y"]
    assert len(xs) >= 2 and len(ys) >= 2

    def value(label):
        return float(label[:-2]) * (1 if label[-1] in "EN" else -1)

    for p, label in xs:
        lon, _ = to_ll.transform(g.x0 + p / s * g.res, g.y0 - 6 * g.yres)
        assert abs(lon - value(label)) < 1e-3 and label.endswith("°E")
    for p, label in ys:
        _, lat = to_ll.transform(g.x0, g.y0 - p / s * g.yres)
        assert abs(lat - value(label)) < 1e-3 and label.endswith("°N")
    assert [value(t) for _, t in sorted(ys)] == sorted((value(t) for _, t in ys), reverse=True)  # north up
    assert canvas.bar is not None and canvas.bar[1] in ("100 M", "200 M")


def test_a_pooled_embedding_or_a_bad_path_is_refused(tmp_path):
    with pytest.raises(SpecError, match="grid embedding"):
        Embedding(np.ones(8, np.float32)).quicklook(str(tmp_path / "x.png"))
    with pytest.raises(SpecError, match=".png"):
        _grid_embedding().quicklook(str(tmp_path / "x.jpg"))
    with pytest.raises(SpecError, match="does not exist"):
        _grid_embedding().quicklook(str(tmp_path / "no" / "x.png"))


# ---------------------------------------------------------------- exports


def test_export_items_share_one_basis(scene, tmp_path):
    ec = ql.export_colours(scene / "items")
    assert ec.items.tolist() == list(range(6))
    vectors = load_export(scene / "items").embeddings["mosaiks"]
    assert (ec.rgb == ql.PCABasis.fit(vectors).rgb(vectors)).all()  # the basis of every item, independently read
    rgb = dict(zip(NAMES, ec.rgb.astype(int)))
    assert (rgb["lake"] == rgb["lake_again"]).all()
    assert np.abs(rgb["lake"] - rgb["urban_a"]).max() > 60

    png = _png(quicklook(scene / "items", tmp_path / "map.png"))
    colours = {tuple(c) for c in png.reshape(-1, 3)}
    assert all(tuple(c) in colours for c in ec.rgb)  # every item painted in its colour


def test_adjacent_places_share_one_map_with_true_lon_lat_ticks(scene, tmp_path):
    """Where the ticks say a place is, its colour is painted (read from the PNG, the ticks from the canvas)."""
    spots = {f"p{i}{j}": (121.48 + 0.0064 * i, 31.19 + 0.0054 * j) for j in range(3) for i in range(3)}
    export_batch([PointBuffer(lon, lat, 300) for lon, lat in spots.values()], WINDOW, out=tmp_path / "dense",
                 names=list(spots), models=["mosaiks"], backend=f"local:{scene / 'scene'}", progress=False)
    ec = ql.export_colours(tmp_path / "dense")
    canvas = ql._export_canvas(ec)
    png = _png(canvas.write(tmp_path / "dense.png", _png_rgb))

    def axis(name):
        (p0, t0), (p1, t1) = sorted((p, float(t[:-2])) for a, p, t in canvas.ticks if a == name)[:2]
        return lambda v: p0 + (v - t0) * (p1 - p0) / (t1 - t0)

    x_of, y_of = axis("x"), axis("y")
    assert not canvas.marks and canvas.bar is not None  # one map, not panels
    for k, (lon, lat) in enumerate(spots.values()):
        x, y = ql._Canvas.LEFT + int(round(x_of(lon))), ql._Canvas.TOP + int(round(y_of(lat)))
        assert (png[y, x] == ec.rgb[k]).all(), list(spots)[k]


def test_export_cells_and_the_two_pass_path(scene, monkeypatch):
    ec = ql.export_colours(scene / "cells")
    assert ec.src.level == "cell" and len(ec.rgb) == 6 * 8 * 8 and ec.basis.n_fit == 384
    assert (ec.rgb[ec.items == 3] == ec.rgb[ec.items == 5]).all()  # the same place twice: the same cells
    monkeypatch.setattr(ql, "FIT_ROWS", 50)  # a subsample fits the basis; every cell is painted with it
    sub = ql.export_colours(scene / "cells", chunk_rows=64)
    assert sub.basis.n_fit <= 50 and len(sub.rgb) == 384
    allv = np.concatenate([c.vectors for c in sub.src.chunks(64)])
    assert (sub.rgb == sub.basis.rgb(allv)).all()
    items = ql.export_colours(scene / "cells", level="item")
    assert len(items.rgb) == 6


def test_cli_quicklook_writes_png_and_html(scene, tmp_path):
    out = tmp_path / "map.png"
    res = CliRunner().invoke(main, ["quicklook", str(scene / "cells"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    png = _png(out)
    assert png.shape[0] > 400 and png.shape[1] > 700
    res = CliRunner().invoke(main, ["quicklook", str(scene / "items"), "--out", str(tmp_path / "map.jpg")])
    assert res.exit_code == 2 and "--out must end in .png or .html" in res.output
    res = CliRunner().invoke(main, ["quicklook", str(tmp_path), "--out", str(tmp_path / "m.png")])
    assert res.exit_code == 2 and "no rs-embed export" in res.output
    pytest.importorskip("folium")
    res = CliRunner().invoke(main, ["quicklook", str(scene / "items"), "--out", str(tmp_path / "map.html")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "map.html").read_text()
    assert "leaflet" in html.lower() and html.count('"type": "Feature"') == 6


def test_interactive_map_has_a_feature_per_item_or_cell(scene):
    folium = pytest.importorskip("folium")

    def features(m):
        layer = next(c for c in m._children.values() if isinstance(c, folium.GeoJson))
        return layer.data["features"]

    items = features(quicklook_map(scene / "items"))
    ec = ql.export_colours(scene / "items")
    assert [f["properties"]["name"] for f in items] == NAMES
    assert [f["properties"]["colour"] for f in items] == ["#%02x%02x%02x" % tuple(c) for c in ec.rgb]
    cells = features(quicklook_map(scene / "cells"))
    assert len(cells) == 384 and {f["properties"]["row"] for f in cells} == set(range(8))
    ring = np.asarray(cells[0]["geometry"]["coordinates"][0])
    assert len(ring) == 5 and abs(ring[:, 0].mean() - PLACES["urban_a"][0]) < 0.01
    with pytest.raises(SearchError, match="max_features"):
        quicklook_map(scene / "cells", max_features=100)


def test_a_missing_maps_extra_is_a_typed_error(scene, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "folium", None)  # import folium now fails
    with pytest.raises(MissingExtraError, match=r"rs-embed-core\[maps\]") as err:
        quicklook_map(scene / "items")
    assert err.value.extra == "maps" and isinstance(err.value, ImportError)
    res = CliRunner().invoke(main, ["quicklook", str(scene / "items"), "--out", str(tmp_path / "m.html")])
    assert res.exit_code == 2 and "[maps]" in res.output and not (tmp_path / "m.html").exists()
