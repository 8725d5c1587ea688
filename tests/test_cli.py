import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from rs_embed_core.cli import main
from rs_embed_core.plugins import pm
from rs_embed_core.runner import raster_cache

from world_plugin import _Plugin


@pytest.fixture(autouse=True)
def plugin():
    p = _Plugin()
    pm.register(p, name="test-cli-plugin")
    raster_cache.clear()
    yield
    pm.unregister(p)


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_models_and_describe_and_plugins():
    r = run("models")
    assert r.exit_code == 0 and "tiny_test_model" in r.output and "TinyAlias" in r.output
    rows = json.loads(run("models", "--json").output)
    assert any(m["id"] == "tiny_test_model" for m in rows)
    d = json.loads(run("describe", "TINYALIAS").output)
    assert d["input"]["bands"] == ["B2", "B3", "B4", "B8"]
    plugins = {p["name"]: p for p in json.loads(run("plugins").output)}
    assert plugins["test-cli-plugin"]["status"] == "loaded"
    assert "register_embedders" in plugins["test-cli-plugin"]["hooks"]


def test_embed_points_summary_json_and_npz(tmp_path):
    args = ["embed", "tiny_test_model", "--point", "121.5,31.2,160", "--point", "121.51,31.2",
            "--buffer-m", "160", "--start", "2022-06-01", "--end", "2022-09-01", "--backend", "world", "--quiet"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()  # a summary, not the vectors: one line per ROI, cosines, where the vectors go
    assert lines[0].split()[:3] == ["point_1", "(8,)", "valid"] and lines[1].split()[0] == "point_2"
    assert re.search(r"\|e\| = \d+\.\d{4}  \[", lines[0]) and len(lines) < 10 and "--out" in lines[-1]
    r = run(*args, "--out", str(tmp_path / "e.json"))
    doc = json.loads((tmp_path / "e.json").read_text())
    assert [d["name"] for d in doc] == ["point_1", "point_2"] and len(doc[0]["embedding"]) == 8
    out = tmp_path / "e.npz"
    r = run("embed", "tiny_test_model", "--point", "121.5,31.2,160", "--year", "2022", "--backend", "world",
            "--output", "grid", "--out", str(out), "--quiet")
    assert r.exit_code == 0
    z = np.load(out)
    assert z["embeddings"].shape == (1, 8, 4, 4) and list(z["names"]) == ["point_1"]
    assert json.loads(str(z["meta"][0]))["model"] == "tiny_test_model"


def test_embed_roi_files(tmp_path):
    csv = tmp_path / "rois.csv"
    csv.write_text("name,lon,lat,buffer_m\na,121.5,31.2,160\nb,121.52,31.21,\n")
    gj = tmp_path / "rois.geojson"
    gj.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "pt"}, "geometry": {"type": "Point", "coordinates": [121.5, 31.2]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [
            [[121.5, 31.2], [121.51, 31.2], [121.51, 31.21], [121.5, 31.21], [121.5, 31.2]]]}},
    ]}))
    for f in (csv, gj):
        r = run("embed", "tiny_test_model", "--rois", str(f), "--buffer-m", "160", "--year", "2022",
                "--backend", "world", "--quiet", "--out", str(tmp_path / "e.json"))
        assert r.exit_code == 0, r.output
        names = [d["name"] for d in json.loads((tmp_path / "e.json").read_text())]
        assert names == (["a", "b"] if f == csv else ["pt", "roi_2"])


@pytest.mark.parametrize("args,msg", [
    (["embed", "nope_model", "--point", "0,0", "--year", "2022"], "unknown model"),
    (["embed", "tiny_test_model", "--point", "0,95", "--year", "2022", "--backend", "world"], "lat"),
    (["embed", "tiny_test_model", "--point", "0,0"], "time window"),
    (["embed", "tiny_test_model", "--point", "0,0", "--start", "2022-09-01", "--end", "2022-06-01"], "end > start"),
    (["embed", "tiny_test_model", "--year", "2022"], "no ROI"),
    (["embed", "tiny_test_model", "--point", "0,0", "--year", "2022", "--out", "x.parquet"], ".json or .npz"),
    (["describe", "nope_model"], "unknown model"),
])
def test_bad_input_exits_2_with_one_line(args, msg):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2
    assert r.output.startswith("error: ") and msg in r.output.splitlines()[0]


def test_inspect(tmp_path):
    png = tmp_path / "q.png"
    r = run("inspect", "--point", "121.5,31.2,160", "--year", "2022", "--backend", "world",
            "--collection", "COPERNICUS/S2_SR_HARMONIZED", "--bands", "B4,B3,B2", "--scale-m", "10",
            "--quicklook", str(png))
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["grid"]["shape"] == [32, 32] and set(rep["bands"]) == {"B4", "B3", "B2"}
    assert rep["valid_fraction"] == pytest.approx(1 - 4 / 1024)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = json.loads(run("inspect", "--point", "121.5,31.2", "--year", "2022", "--backend", "world", "--collection",
                         "COPERNICUS/S2_SR_HARMONIZED", "--bands", "B4", "--scale-m", "10").output)
    assert rep["roi"] == {"name": "point_1", "type": "point_buffer", "lon": 121.5, "lat": 31.2, "buffer_m": 2048.0}
    assert rep["grid"]["shape"] == [410, 410]  # the default buffer shows in the output, not only in --help


def test_quicklook_png_decodes_to_the_stretched_patch(tmp_path):
    from PIL import Image

    from rs_embed_core.api import write_quicklook
    from rs_embed_core.grid import GridSpec
    from rs_embed_core.raster import Raster

    data = np.zeros((1, 3, 4, 5), np.float32)
    data[0, 0] = np.arange(20).reshape(4, 5)  # a ramp in the red channel
    data[0, 1] = 7.0
    valid = np.ones((1, 4, 5), bool)
    valid[0, 0, 0] = False
    r = Raster(data, ("r", "g", "b"), GridSpec("EPSG:32651", 0, 0, 10, 5, 4), (None,), valid)
    png = write_quicklook(r, str(tmp_path / "q.png"))
    img = np.asarray(Image.open(png))
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (0, 0, 0)  # invalid -> black
    red = img[..., 0].astype(int)
    assert red[3, 4] == 255 and red[0, 1] == 0 and (np.diff(red[1]) >= 0).all()  # stretched ramp


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    out = tmp_path / "e.npz"
    args = ["embed", "tiny_test_model", "--point", "121.5,31.2,160", "--year", "2022", "--backend", "world",
            "--out", str(out), "--quiet"]
    assert run(*args).exit_code == 0
    before = out.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and r.output == "error: disk full\n"
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["e.npz"]  # no temporary left behind


# ---------------------------------------------------------------- hardening: every bad input is one line, exit 2


def _bad(args, tmp_path=None):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert lines[0].startswith("error: ") and "Traceback" not in r.output, r.output
    return lines[0]


def test_malformed_points_and_geojson_are_one_line_errors(tmp_path):
    assert "numbers" in _bad(["embed", "tiny_test_model", "--point", "a,b", "--year", "2022", "--backend", "world"])
    cases = {"empty.geojson": "", "list.geojson": "[1, 2]",
             "onept.geojson": json.dumps({"type": "Point", "coordinates": [121.5]}),
             "emptypoly.geojson": json.dumps({"type": "Polygon", "coordinates": []})}
    for name, text in cases.items():
        f = tmp_path / name
        f.write_text(text)
        assert name in _bad(["embed", "tiny_test_model", "--rois", str(f), "--year", "2022", "--backend", "world"])


def test_outputs_are_checked_before_any_work(tmp_path):
    from world_plugin import WorldProvider

    calls = []
    real = WorldProvider.fetch
    WorldProvider.fetch = lambda self, req: calls.append(1) or real(self, req)
    try:
        assert "does not exist" in _bad(["embed", "tiny_test_model", "--point", "121.5,31.2,160", "--year", "2022",
                                         "--backend", "world", "--out", str(tmp_path / "missing" / "e.npz")])
        assert "does not exist" in _bad(["inspect", "--point", "121.5,31.2,160", "--year", "2022", "--backend",
                                         "world", "--collection", "x", "--bands", "B2", "--scale-m", "10",
                                         "--quicklook", str(tmp_path / "missing" / "q.png")])
        assert "--composite needs" in _bad(["embed", "tiny_test_model", "--point", "121.5,31.2,160", "--year",
                                            "2022", "--backend", "world", "--composite", "mosaic"])
    finally:
        WorldProvider.fetch = real
    assert calls == []
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # root may write anywhere
            assert "writable" in _bad(["sample-data", str(ro / "sample")])
    finally:
        ro.chmod(0o700)


def test_click_usage_errors_follow_the_one_line_style():
    assert "no such option" in _bad(["embed", "tiny_test_model", "--pointz", "1,2"]).lower()
    assert "missing argument" in _bad(["describe"]).lower()
    assert "invalid value" in _bad(["embed", "tiny_test_model", "--output", "cube"]).lower()


def test_output_files_honour_the_umask_and_grammar(tmp_path):
    out = tmp_path / "one.npz"
    old = os.umask(0o022)
    try:
        r = CliRunner().invoke(main, ["embed", "tiny_test_model", "--point", "121.5,31.2,160", "--year", "2022",
                                      "--backend", "world", "--output", "grid", "--out", str(out), "--quiet"])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert (out.stat().st_mode & 0o777) == 0o644
    assert "wrote 1 embedding (" in r.output
    with np.load(out) as z:  # grid npz keeps the georeferencing and the cell valid mask
        assert z["crs"][0].startswith("EPSG:326") and z["transform"].shape == (1, 6)
        assert z["valid"].shape == (1, 4, 4) and z["valid"][0, 0, 0] == 60 / 64
        assert (z["valid"][0].ravel()[1:] == 1).all()
    r = CliRunner().invoke(main, ["embed", "tiny_test_model", "--point", "121.5,31.2,160", "--year", "2022",
                                  "--backend", "world", "--output", "grid", "--out", str(tmp_path / "g.json"),
                                  "--quiet"])
    assert r.exit_code == 0, r.output
    grid = json.loads((tmp_path / "g.json").read_text())[0]["grid"]
    assert grid["valid"][0][:2] == [60 / 64, 1.0]


def test_two_rois_get_raw_cosine_not_centred(tmp_path):
    r = CliRunner().invoke(main, ["embed", "tiny_test_model", "--point", "121.5,31.2,160", "--point",
                                  "121.6,31.2,160", "--year", "2022", "--backend", "world", "--out",
                                  str(tmp_path / "e.json"), "--quiet"])
    assert r.exit_code == 0 and "cosine similarity:" in r.output and "centred" not in r.output


def test_export_command_and_parquet_rois(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rois = tmp_path / "rois.parquet"
    pq.write_table(pa.table({"name": ["a", "b"], "lon": [121.5, 121.52], "lat": [31.2, 31.21]}), rois)
    args = ["export", "--models", "tiny_test_model", "--rois", str(rois), "--buffer-m", "160", "--year", "2022",
            "--backend", "world", "--out", str(tmp_path / "exp"), "--format", "npz", "--layout", "combined", "--quiet"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "2 of 2 ok" in r.output
    from rs_embed import load_export

    data = load_export(tmp_path / "exp")
    assert data.names == ["a", "b"] and data.embeddings["tiny_test_model"].shape == (2, 8)
    r = CliRunner().invoke(main, args + ["--resume"])
    assert r.exit_code == 0 and "done by an earlier run" in r.output
    assert "resume" in _bad(args)  # the same folder without --resume


def test_provider_config_and_preprocessing_files(tmp_path):
    """CLI parity: the local provider's options (band_map, dates, nodata...) and a chain override from files."""
    shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "landsat7_rgb_byte.tif")
    if not os.path.isfile(shared):
        pytest.skip("../shared/data is absent")
    cfg = tmp_path / "provider.json"
    cfg.write_text(json.dumps({"local": {"paths": shared, "band_map": {"red": 1, "green": 2, "blue": 3},
                                         "dates": {"landsat7_rgb_byte.tif": "2022-07-01"}, "nodata": 0}}))
    chain = tmp_path / "chain.json"
    chain.write_text(json.dumps([{"name": "select_bands", "params": {"bands": ["red", "green", "blue"]}},
                                 {"name": "standardize", "params": {}}]))
    import rs_embed_baseline
    from rs_embed_core.plugins import load_plugins

    load_plugins()
    added = not pm.is_registered(rs_embed_baseline)
    if added:
        pm.register(rs_embed_baseline, name="baseline-cli-test")
    try:
        r = CliRunner().invoke(main, ["embed", "spectral_stats", "--point", "-77.9,24.8,30000", "--year", "2022",
                                      "--provider-config", str(cfg), "--preprocessing", str(chain), "--collection",
                                      "my/rgb", "--bands", "red,green,blue", "--scale-m", "300", "--quiet",
                                      "--out", str(tmp_path / "e.json")])
    finally:
        if added:
            pm.unregister(rs_embed_baseline)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "e.json").read_text())
    assert [s["name"] for s in doc[0]["meta"]["preprocessing"]] == ["select_bands", "standardize"]
    assert doc[0]["meta"]["source"]["scenes"][0]["date"] == "2022-07-01"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"local": {"paths": shared, "colour": 1}}))
    assert "does not take" in _bad(["embed", "spectral_stats", "--point", "-77.9,24.8", "--year", "2022",
                                    "--provider-config", str(bad)])


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from rs_embed_core.sample import make_sample_scene

    root = tmp_path_factory.mktemp("cli-sample")
    make_sample_scene(root)
    return root


def test_continue_on_error_writes_the_rest_and_lists_the_failed(tmp_path, sample):
    args = ["embed", "mosaiks", "--point", "121.49,31.21,500", "--point", "10.0,50.0,500", "--year", "2022",
            "--backend", f"local:{sample}", "--quiet"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2
    assert "Rerun with --continue-on-error" in r.stderr and "continue_on_error=True" not in r.stderr  # CLI words
    out = tmp_path / "e.json"
    r = CliRunner().invoke(main, [*args, "--continue-on-error", "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert [d["name"] for d in json.loads(out.read_text())] == ["point_1"]
    assert "failed: point_2: fetch:" in r.stderr and f"1 of 2 ROIs failed; {out} holds the other 1" in r.stderr


def test_unnamed_bands_hint_speaks_cli_on_the_cli_and_python_in_python(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    folder = tmp_path / "scenes"
    folder.mkdir()
    with rasterio.open(folder / "tile_2022-07-01.tif", "w", driver="GTiff", width=64, height=64, count=3,
                       dtype="uint16", crs="EPSG:32651", transform=from_origin(350_000, 3_454_000, 10, 10)) as f:
        f.write(np.full((3, 64, 64), 1000, np.uint16))  # no band descriptions: bands are '1', '2', '3'
    r = CliRunner().invoke(main, ["embed", "mosaiks", "--point", "121.44,31.21,200", "--year", "2022", "--backend",
                                  f"local:{folder}", "--quiet"])
    assert r.exit_code == 2
    assert '--provider-config FILE holding {"local": {"paths": ..., "band_map": {"B4": 1' in r.stderr
    assert "LocalProvider(" not in r.stderr
    from rs_embed import PointBuffer, TemporalSpec, get_embedding
    from rs_embed_core.errors import UnknownBandError

    with pytest.raises(UnknownBandError, match=r"LocalProvider\(\.\.\., band_map="):  # Python callers keep theirs
        get_embedding("mosaiks", PointBuffer(121.44, 31.21, 200), TemporalSpec.year(2022), backend=f"local:{folder}")


def test_cli_words_rewrites_every_python_hint():
    from rs_embed_core.cli import cli_words

    python = ("pass LocalProvider('/path/to/dir'), use backend='local:/path/to/dir', or set X; "
              "LocalProvider(..., band_pattern=r'_(?P<band>[A-Za-z0-9]+)\\.tif$') (Landsat; "
              "configure LocalProvider(collection=...) to match; it was configured with LocalProvider(collection='a/b')")
    said = cli_words(python)
    assert "LocalProvider" not in said and "--backend local:/path/to/dir" in said
    assert '"band_pattern": "_(?P<band>[A-Za-z0-9]+)\\\\.tif$"' in said and '"collection": "a/b"' in said  # JSON
    said = cli_words("use input_prep='resize'; pass weights='<path to the file>'; pass resume=True; "
                     "pass sensor=SensorSpec(...) ; pass backend='gee:PROJECT'; keep min_valid_fraction=0.5")
    assert said == ("use --input-prep resize; pass --weights <path to the file>; pass --resume; "
                    "pass --collection C --bands B1,B2 --scale-m M ; pass --backend gee:PROJECT; "
                    "keep min_valid_fraction=0.5")  # no option of that name: left as it is


def test_composite_offers_every_compositing_rule():
    from rs_embed_core.specs import _COMPOSITES

    for cmd in ("embed", "inspect"):
        text = run(cmd, "--help").output
        assert all(c in text for c in _COMPOSITES), (cmd, text)
    # least_cloudy is a valid choice: the error is about the missing sensor, not an invalid value
    err = _bad(["embed", "tiny_test_model", "--point", "0,0", "--year", "2022", "--composite", "least_cloudy"])
    assert "--composite needs" in err
def test_a_binary_rois_file_is_one_error_line(tmp_path):
    f = tmp_path / "rois.csv"
    f.write_bytes(bytes(range(256)) * 4)
    r = CliRunner().invoke(main, ["embed", "tiny_test_model", "--rois", str(f), "--year", "2022"])
    assert r.exit_code == 2 and r.output.startswith("error: rois.csv is not a UTF-8 text CSV")
    assert "Traceback" not in r.output


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc, a folder nothing can be written into")
@pytest.mark.parametrize("args", [
    ["embed", "tiny_test_model", "--point", "121.5,31.2,160", "--year", "2022", "--backend", "world", "--quiet",
     "--out", "/proc/x.json"],
    ["export", "--models", "tiny_test_model", "--point", "121.5,31.2,160", "--year", "2022", "--backend", "world", "--quiet",
     "--out", "/proc/e6"],
    ["sample-data", "/proc/sd"],
])
def test_system_errors_are_one_line_and_exit_1_unless_debug(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and r.output.startswith("error: ") and len(r.output.splitlines()) == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    r = CliRunner().invoke(main, ["--debug", *args])
    assert isinstance(r.exception, OSError)
