"""Dataset export: formats, dedupe, faults, resume after SIGKILL, safety, read-back in other tools."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("rs_embed_baseline")

from rs_embed import (  # noqa: E402
    ModelRequest, OutputSpec, PointBuffer, SensorSpec, SpecError, TemporalSpec, export_batch, export_npz,
    get_embeddings_batch, load_export,
)
from rs_embed_core import runner  # noqa: E402
from rs_embed_core.retry import RetryPolicy  # noqa: E402
from rs_embed_core.runner import raster_cache  # noqa: E402
from rs_embed_core.testing import FakeProvider  # noqa: E402

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")
MODELS = ["mosaiks", "spectral_stats"]


@pytest.fixture(autouse=True)
def _fresh(baseline_plugin, monkeypatch):
    raster_cache.clear()
    monkeypatch.setattr(runner, "DEFAULT_RETRY", RetryPolicy(max_retries=2, base_delay_s=0.001, max_delay_s=0.01))


@pytest.fixture
def baseline_plugin():
    import rs_embed_baseline
    from rs_embed_core.plugins import load_plugins, pm

    load_plugins()
    added = not pm.is_registered(rs_embed_baseline)
    if added:
        pm.register(rs_embed_baseline, name="baseline-export-test")
    yield
    if added:
        pm.unregister(rs_embed_baseline)


def rois(n: int, buffer_m: float = 320) -> list[PointBuffer]:
    return [PointBuffer(121.5 + 0.013 * i, 31.2 + 0.007 * (i % 3), buffer_m) for i in range(n)]


def test_export_equals_get_embeddings_batch_bit_for_bit(tmp_path):
    spatials = rois(5)
    res = export_batch(spatials, WINDOW, MODELS, tmp_path / "out", backend=FakeProvider(), batch_size=2)
    assert (res.ok, res.failed) == (10, 0)
    data = load_export(tmp_path / "out")
    for m in MODELS:
        ref = get_embeddings_batch(m, spatials, WINDOW, backend=FakeProvider(), batch_size=2)
        got = data.embeddings[m]
        assert got.dtype == np.float32 and got.shape == (5, ref[0].data.shape[0])
        assert np.array_equal(got, np.stack([e.data for e in ref]))
        assert list(data.status[m]) == ["ok"] * 5


def test_each_distinct_input_is_fetched_once_across_models(tmp_path):
    prov = FakeProvider()
    export_batch(rois(6), WINDOW, MODELS, tmp_path / "a", backend=prov)
    assert prov.calls == 6  # two models, one input each: not 12
    # different bands of the same collection, grid and window: one band-union fetch per ROI
    prov2 = FakeProvider()
    reqs = [ModelRequest("spectral_stats"),
            ModelRequest("mosaiks", sensor=SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B3", "B2"), 10))]
    res = export_batch(rois(4), WINDOW, reqs, tmp_path / "b", backend=prov2)
    assert prov2.calls == 4 and res.ok == 8
    assert set(prov2.requests[0].sensor.bands) == {"B2", "B3", "B4", "B8", "B11", "B12"}
    ref = get_embeddings_batch("mosaiks", rois(4), WINDOW, backend=FakeProvider(),
                               sensor=SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B3", "B2"), 10))
    assert np.array_equal(load_export(tmp_path / "b").embeddings["mosaiks"], np.stack([e.data for e in ref]))


def test_failed_items_are_recorded_and_retried_on_resume(tmp_path):
    spatials = rois(6)
    from rs_embed_core.grid import grid_for

    bad = {grid_for(spatials[1], 10).x0, grid_for(spatials[4], 10).x0}
    flaky = FakeProvider(fail_on=lambda r: r.grid.x0 in bad)
    res = export_batch(spatials, WINDOW, MODELS, tmp_path / "out", names=[f"p{i}" for i in range(6)], backend=flaky)
    assert (res.ok, res.failed) == (8, 4)
    table = pq.read_table(tmp_path / "out" / "mosaiks.parquet")
    assert table.column("status").to_pylist() == ["ok", "failed", "ok", "ok", "failed", "ok"]
    err = json.loads(table.column("error")[1].as_py())
    assert err["stage"] == "fetch" and err["error_type"] == "ProviderError" and err["name"] == "p1"
    assert table.column("embedding")[1].as_py() is None
    loaded = load_export(tmp_path / "out")
    assert np.isnan(loaded.embeddings["mosaiks"][1]).all() and not np.isnan(loaded.embeddings["mosaiks"][0]).any()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["items"][1]["errors"]["mosaiks"]["error_type"] == "ProviderError"
    assert manifest["counts"]["failed"] == 4 and not manifest["complete"]

    healthy = FakeProvider()
    res2 = export_batch(spatials, WINDOW, MODELS, tmp_path / "out", names=[f"p{i}" for i in range(6)],
                        backend=healthy, resume=True)
    assert (res2.ok, res2.failed, res2.skipped) == (12, 0, 8)
    assert healthy.calls == 2  # only the failed ROIs were fetched again
    ref = load_export(tmp_path / "out")
    assert not np.isnan(ref.embeddings["mosaiks"]).any()
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["complete"]


def test_transient_faults_are_retried_within_bounds(tmp_path):
    from rs_embed_core.errors import TransientProviderError

    class Transient(FakeProvider):
        def __init__(self):
            super().__init__()
            self.left = {}

        def fetch(self, req):
            n = self.left.get(req.key, 2)  # every ROI fails twice, then works
            if n:
                self.left[req.key] = n - 1
                self._calls += 1
                raise TransientProviderError("503 Service Unavailable")
            return super().fetch(req)

    prov = Transient()
    res = export_batch(rois(3), WINDOW, ["mosaiks"], tmp_path / "out", backend=prov)
    assert res.ok == 3 and prov.calls == 9  # 2 failures + 1 success each, within max_retries=2
    prov2 = Transient()
    prov2.left = {}
    res = export_batch(rois(3), WINDOW, ["mosaiks"], tmp_path / "out2", backend=prov2, max_retries=1)
    assert res.failed == 3 and prov2.calls == 6  # bounded: 1 + 1 retry each, then recorded


def test_a_changed_request_is_refused_and_nothing_is_touched(tmp_path):
    out = tmp_path / "out"
    export_batch(rois(2), WINDOW, ["mosaiks"], out, backend=FakeProvider())
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(SpecError, match="resume=True"):
        export_batch(rois(2), WINDOW, ["mosaiks"], out, backend=FakeProvider())
    with pytest.raises(SpecError, match="temporal"):
        export_batch(rois(2), TemporalSpec.year(2021), ["mosaiks"], out, backend=FakeProvider(), resume=True)
    with pytest.raises(SpecError, match="models"):
        export_batch(rois(2), WINDOW, ["spectral_stats"], out, backend=FakeProvider(), resume=True)
    with pytest.raises(SpecError, match="spatials"):
        export_batch(rois(3), WINDOW, ["mosaiks"], out, backend=FakeProvider(), resume=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.txt").write_text("mine")
    with pytest.raises(SpecError, match="not empty"):
        export_batch(rois(2), WINDOW, ["mosaiks"], other, backend=FakeProvider())


@pytest.mark.parametrize("names, match", [
    (["a", "a"], "unique"), (["a", ""], "non-empty"), (["../evil", "b"], "path"), (["a/b", "c"], "path"),
    (["/etc/x", "c"], "path"), (["a b", "a_b"], "same file name"), (["ok"], "2 spatials"),
])
def test_names_are_checked_before_any_work(tmp_path, names, match):
    prov = FakeProvider()
    with pytest.raises(SpecError, match=match):
        export_batch(rois(2), WINDOW, ["mosaiks"], tmp_path / "out", names=names, backend=prov)
    assert prov.calls == 0 and not (tmp_path / "out").exists()


def test_names_become_safe_file_names(tmp_path):
    res = export_batch(rois(2), WINDOW, ["mosaiks"], tmp_path / "out", names=["my farm #1", "Zürich"],
                       backend=FakeProvider(), output=OutputSpec.grid())
    assert sorted(p.name for p in (tmp_path / "out" / "items").iterdir()) == ["Z_rich", "my_farm_1"]
    assert all(Path(f).parts[0] == "items" for f in res.files["mosaiks"])
    assert load_export(tmp_path / "out").names == ["my farm #1", "Zürich"]


def test_grids_per_item_geotiff_and_combined_zarr(tmp_path):
    spatials = rois(3)
    ref = get_embeddings_batch("mosaiks", spatials, WINDOW, OutputSpec.grid(), backend=FakeProvider())
    export_batch(spatials, WINDOW, ["mosaiks"], tmp_path / "tif", output=OutputSpec.grid(), backend=FakeProvider())
    export_batch(spatials, WINDOW, ["mosaiks"], tmp_path / "zarr", output=OutputSpec.grid(), layout="combined",
                 backend=FakeProvider())
    for root in ("tif", "zarr"):
        got = load_export(tmp_path / root)
        assert np.array_equal(got.embeddings["mosaiks"], np.stack([e.data for e in ref]))
        for g, e in zip(got.grids["mosaiks"], ref):
            assert g.crs == e.grid.crs and np.allclose(g.transform, e.grid.transform)
    xr = pytest.importorskip("xarray")
    import warnings

    import zarr

    with warnings.catch_warnings():  # consolidated metadata: no "falling back to non-consolidated" warning
        warnings.simplefilter("error")
        ds = xr.open_zarr(tmp_path / "zarr" / "mosaiks.zarr")
        zarr.open_consolidated(str(tmp_path / "zarr" / "mosaiks.zarr"), mode="r")
    assert ds["embedding"].dims == ("item", "band", "y", "x") and ds["embedding"].shape[0] == 3
    assert ds["valid"].dims == ("item", "y", "x")
    h, w = ref[0].data.shape[1:]
    assert list(ds["item"].values) == [0, 1, 2] and list(ds["band"].values) == list(range(ref[0].data.shape[0]))
    assert list(ds["y"].values) == list(range(h)) and list(ds["x"].values) == list(range(w))
    assert list(ds["name"].values) == ["item_000000", "item_000001", "item_000002"]
    assert set(ds["embedding"].coords) == {"item", "band", "y", "x", "name", "status", "crs", "y_utm", "x_utm"}
    for i, e in enumerate(ref):
        assert ds["crs"].values[i] == e.grid.crs and ds["status"].values[i] == "ok"
        np.testing.assert_allclose(ds["y_utm"].values[i], e.grid.y_coords())
        np.testing.assert_allclose(ds["x_utm"].values[i], e.grid.x_coords())
        item = ds["embedding"].attrs["items"][i]
        assert item["crs"] == e.grid.crs and np.allclose(item["transform"], e.grid.transform)
        np.testing.assert_array_equal(ds["valid"].values[i], e.valid)


@pytest.mark.parametrize("layout", ["combined", "per_item"])
def test_npz_format_round_trips(tmp_path, layout):
    spatials = rois(3)
    export_batch(spatials, WINDOW, MODELS, tmp_path / "out", backend=FakeProvider(), format="npz", layout=layout)
    got = load_export(tmp_path / "out")
    ref = get_embeddings_batch("spectral_stats", spatials, WINDOW, backend=FakeProvider())
    assert np.array_equal(got.embeddings["spectral_stats"], np.stack([e.data for e in ref]))


def test_export_npz_single_roi(tmp_path):
    dest = export_npz(rois(1)[0], WINDOW, MODELS, tmp_path / "one.npz", backend=FakeProvider())
    with np.load(dest) as z:
        ref = get_embeddings_batch("mosaiks", rois(1), WINDOW, backend=FakeProvider())
        assert np.array_equal(z["mosaiks"], ref[0].data)
        assert json.loads(str(z["mosaiks__meta"]))["model"] == "mosaiks"
    with pytest.raises(SpecError, match="npz"):
        export_npz(rois(1)[0], WINDOW, MODELS, tmp_path / "one.txt", backend=FakeProvider())


def test_saved_inputs_are_written_once_with_their_grid(tmp_path):
    import rasterio

    spatials = rois(2)
    export_batch(spatials, WINDOW, MODELS, tmp_path / "out", backend=FakeProvider(), save_inputs=True,
                 layout="combined")
    files = sorted((tmp_path / "out" / "inputs").glob("*.tif"))
    assert len(files) == 2  # two ROIs, two models sharing each input
    from rs_embed_core.grid import grid_for

    with rasterio.open(files[0]) as src:
        names = list(src.descriptions)
        assert names[:2] == ["t0:B2", "t0:B3"] and names[-1] == "t0:valid"
        assert src.crs.to_string() == grid_for(spatials[0], 10).crs


def test_geoparquet_opens_in_geopandas_and_duckdb(tmp_path):
    spatials = rois(3)
    export_batch(spatials, WINDOW, ["mosaiks"], tmp_path / "out", names=["a", "b", "c"], backend=FakeProvider())
    path = tmp_path / "out" / "mosaiks.parquet"
    schema = pq.read_schema(path)
    assert schema.field("embedding").type == pa.list_(pa.float32(), 1024)
    geo = json.loads(schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["columns"]["geometry"]["encoding"] == "WKB"
    gpd = pytest.importorskip("geopandas")
    df = gpd.read_parquet(path)
    assert list(df["name"]) == ["a", "b", "c"] and df.crs.to_string() in ("OGC:CRS84", "EPSG:4326")
    c = df.geometry.iloc[0].centroid
    assert abs(c.x - 121.5) < 1e-3 and abs(c.y - 31.2) < 1e-3
    assert 600 ** 2 * 0.9 < df.to_crs(32651).geometry.iloc[0].area < 660 ** 2 * 1.1
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(f"SELECT name, len(embedding) AS d, status FROM '{path}' ORDER BY id").fetchall()
    assert rows == [("a", 1024, "ok"), ("b", 1024, "ok"), ("c", 1024, "ok")]


# ---------------------------------------------------------------- resume after SIGKILL

_SCRIPT = """
import sys
from rs_embed import PointBuffer, TemporalSpec, export_batch
from rs_embed_core.testing import FakeProvider
spatials = [PointBuffer(121.5 + 0.013 * i, 31.2 + 0.007 * (i % 3), 320) for i in range(int(sys.argv[2]))]
export_batch(spatials, TemporalSpec.range("2022-06-01", "2022-09-01"), ["mosaiks", "spectral_stats"], sys.argv[1],
             backend=FakeProvider(latency_s=float(sys.argv[3]), max_concurrency=2), batch_size=3, resume=True,
             progress=False, save_inputs=True, names=[f"roi{i}" for i in range(len(spatials))])
print("done", flush=True)
"""


def _journal_lines(out: Path) -> int:
    j = out / ".journal.jsonl"
    return len(j.read_text().splitlines()) if j.is_file() else 0


def _snapshot(out: Path) -> dict:
    data = load_export(out)
    return {"emb": {k: v.tobytes() for k, v in data.embeddings.items()},
            "status": {k: list(v) for k, v in data.status.items()},
            "inputs": sorted(p.relative_to(out).as_posix() for p in out.rglob("input_*.tif"))}


@pytest.mark.parametrize("kill_after", [0, 5, 16, 24])
def test_sigkill_at_any_point_then_resume_gives_the_uninterrupted_output(tmp_path, kill_after):
    n = 12
    script = tmp_path / "export.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    env = {k: v for k, v in os.environ.items() if k != "RS_EMBED_PLUGINS"}
    ref = tmp_path / "ref"
    done = subprocess.run([sys.executable, str(script), str(ref), str(n), "0"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "out"
    with subprocess.Popen([sys.executable, str(script), str(out), str(n), "0.05"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=env) as proc:
        deadline = time.monotonic() + 120
        while _journal_lines(out) < kill_after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert _journal_lines(out) <= 2 * n
    again = subprocess.run([sys.executable, str(script), str(out), str(n), "0"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert _snapshot(out) == _snapshot(ref)
    lines = [json.loads(x) for x in (out / ".journal.jsonl").read_text().splitlines() if x.strip()]
    keys = [(r["item"], r["model"]) for r in lines if r["status"] == "ok"]
    assert len(keys) == len(set(keys)) == 2 * n  # nothing lost, nothing done twice


def test_a_resume_with_another_request_names_only_what_differs(tmp_path):
    spatials = rois(4)
    export_batch(spatials, WINDOW, ["mosaiks", "spectral_stats"], tmp_path / "out", backend=FakeProvider())
    other = [*spatials[:2], PointBuffer(spatials[2].lon, spatials[2].lat, 500), spatials[3]]
    with pytest.raises(SpecError) as err:
        export_batch(other, TemporalSpec.range("2022-06-01", "2022-10-01"),
                     [ModelRequest("mosaiks", variant="k1024"), "spectral_stats"], tmp_path / "out",
                     backend=FakeProvider(), resume=True)
    lines = [ln.strip() for ln in str(err.value).splitlines()[1:-1]]
    assert lines == ["spatials[2].buffer_m: 320.0 -> 500.0", 'temporal.end: "2022-09-01" -> "2022-10-01"',
                     'models[0].variant: null -> "k1024"']


def test_a_resume_with_many_differences_counts_the_rest(tmp_path):
    export_batch(rois(12), WINDOW, ["mosaiks"], tmp_path / "out", backend=FakeProvider())
    with pytest.raises(SpecError) as err:
        export_batch(rois(12, buffer_m=400), WINDOW, ["mosaiks"], tmp_path / "out", backend=FakeProvider(),
                     resume=True)
    lines = str(err.value).splitlines()
    assert "spatials[0].buffer_m: 320.0 -> 400.0" in lines[1] and lines[-2].strip() == "... and 4 more"


def test_export_result_prints_one_line_and_a_variant_has_its_own_key(tmp_path):
    res = export_batch(rois(3), WINDOW, [ModelRequest("mosaiks", variant="k1024"), "spectral_stats"],
                       tmp_path / "out", backend=FakeProvider())
    text = repr(res)
    assert "\n" not in text and len(text) < 300 and str(res) == text
    assert "ok=6, failed=0, skipped=0, complete=True" in text and "'mosaiks-k1024': 'mosaiks-k1024.parquet'" in text
    assert "spatials" not in text  # no manifest dump
    got = load_export(tmp_path / "out")
    assert set(got.embeddings) == {"mosaiks-k1024", "spectral_stats"}
    assert got.embeddings["mosaiks-k1024"].shape[1] == 2048
    doc = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    assert 'data.embeddings["mosaiks-k1024"]' in doc and "output key" in doc  # the rule is documented
