"""Export recovery: every damaged or interrupted export folder resumes, or fails with one typed error saying what to do."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("zarr")
pytest.importorskip("rs_embed_baseline")

from rs_embed import (  # noqa: E402
    ExportError, ExportLockedError, ExportWarning, OutputSpec, PointBuffer, SpecError, TemporalSpec, export_batch,
    load_export,
)
from rs_embed_core.export import FolderLock  # noqa: E402
from rs_embed_core.testing import FakeProvider  # noqa: E402
from test_export import _fresh, baseline_plugin  # noqa: E402,F401 - shared fixtures

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")


def rois(n: int) -> list[PointBuffer]:
    return [PointBuffer(121.5 + 0.01 * i, 31.2, 300) for i in range(n)]


def _run(out: Path, n: int = 3, **kw):
    kw = {"backend": FakeProvider(), "resume": True, "progress": False, **kw}
    return export_batch(rois(n), WINDOW, ["mosaiks"], out, **kw)


def _journal(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / ".journal.jsonl").read_text().splitlines() if x.strip()]


def test_combined_grid_resume_replaces_the_existing_zarr(tmp_path):
    out = tmp_path / "z"
    first = _run(out, layout="combined", output=OutputSpec.grid())
    ref = load_export(out).embeddings["mosaiks"]
    again = _run(out, layout="combined", output=OutputSpec.grid())
    again = _run(out, layout="combined", output=OutputSpec.grid())
    assert (first.ok, again.ok, again.skipped) == (3, 3, 3)
    assert np.array_equal(load_export(out).embeddings["mosaiks"], ref, equal_nan=True)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("damage", ["pickled", "truncated", "deleted", "flipped"])
def test_a_damaged_part_is_redone_not_trusted(tmp_path, damage):
    out = tmp_path / "o"
    _run(out)
    ref = load_export(out).embeddings["mosaiks"]
    part = out / ".parts" / "mosaiks" / "000001.npz"
    raw = part.read_bytes()
    if damage == "pickled":
        np.savez(part.open("wb"), data=np.array([object()], dtype=object))
    elif damage == "truncated":
        part.write_bytes(raw[: len(raw) // 2])
    elif damage == "deleted":
        part.unlink()
    else:  # same size, one byte changed: only the digest notices
        part.write_bytes(raw[:-30] + bytes([raw[-30] ^ 0xFF]) + raw[-29:])
    prov = FakeProvider()
    res = _run(out, backend=prov)
    assert (res.ok, res.skipped) == (3, 2) and prov.calls == 1
    assert np.array_equal(load_export(out).embeddings["mosaiks"], ref)
    assert part.read_bytes() == raw


def test_journal_records_carry_size_and_digest(tmp_path):
    out = tmp_path / "o"
    _run(out)
    for rec in _journal(out):
        p = out / ".parts" / "mosaiks" / f"{rec['item']:06d}.npz"
        assert rec["size"] == p.stat().st_size and len(rec["sha256"]) == 64


def test_journal_lines_for_items_or_models_not_in_the_request_are_ignored(tmp_path):
    out = tmp_path / "o"
    _run(out)
    with open(out / ".journal.jsonl", "a") as f:
        f.write(json.dumps({"item": 99, "model": "mosaiks", "status": "ok"}) + "\n")
        f.write(json.dumps({"item": 0, "model": "other", "status": "failed"}) + "\n")
    with pytest.warns(ExportWarning, match="ignored 2 record"):
        res = _run(out)
    assert (res.ok, res.failed) == (3, 0)
    assert res.manifest["counts"]["ok"] == 3


@pytest.mark.parametrize("text", ['{"request": {"names"', "[1, 2]", '"x"', ""])
def test_a_damaged_manifest_is_a_typed_error_and_resume_rebuilds_it(tmp_path, text):
    out = tmp_path / "o"
    _run(out)
    ref = load_export(out).embeddings["mosaiks"]
    (out / "manifest.json").write_text(text)
    with pytest.raises(ExportError, match="manifest.json is damaged.*resume=True"):
        load_export(out)
    with pytest.raises(SpecError, match="resume=True"):
        _run(out, resume=False)
    prov = FakeProvider()
    assert _run(out, backend=prov).skipped == 3 and prov.calls == 0
    assert np.array_equal(load_export(out).embeddings["mosaiks"], ref)
    with pytest.raises(SpecError, match="different request"):  # the hidden copy still pins the request
        (out / "manifest.json").write_text("[]")
        _run(out, n=2)


def test_damaged_manifest_and_request_copy_is_a_typed_error(tmp_path):
    out = tmp_path / "o"
    _run(out)
    (out / "manifest.json").write_text("{")
    (out / ".request.json").write_text("{")
    with pytest.raises(ExportError, match="request is unknown"):
        _run(out)


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_damaged_parquet_is_a_typed_error_and_resume_rebuilds_it(tmp_path, damage):
    out = tmp_path / "o"
    _run(out)
    ref = load_export(out).embeddings["mosaiks"]
    pq = out / "mosaiks.parquet"
    if damage == "deleted":
        pq.unlink()
    else:
        pq.write_bytes(pq.read_bytes()[:100])
    with pytest.raises(ExportError, match="'mosaiks' output is missing or damaged.*resume=True"):
        load_export(out)
    _run(out)
    assert np.array_equal(load_export(out).embeddings["mosaiks"], ref)


def test_loading_an_unfinished_export_reads_the_parts_and_warns(tmp_path):
    out = tmp_path / "o"
    _run(out)
    ref = load_export(out).embeddings["mosaiks"]
    man = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({"request": man["request"], "complete": False}))
    lines = (out / ".journal.jsonl").read_text().splitlines()
    (out / ".journal.jsonl").write_text("\n".join(lines[:2]) + "\n")  # as if killed after two items
    with pytest.warns(ExportWarning, match="loaded 2 of 3"):
        got = load_export(out)
    assert list(got.status["mosaiks"]) == ["ok", "ok", "pending"]
    assert np.array_equal(got.embeddings["mosaiks"][:2], ref[:2]) and np.isnan(got.embeddings["mosaiks"][2]).all()


def test_loading_an_export_with_failures_warns_with_counts(tmp_path):
    out = tmp_path / "o"
    _run(out, backend=FakeProvider(fail_on={2}), max_retries=0)
    with pytest.warns(ExportWarning, match="2 of 3 .* done \\(1 failed\\)"):
        load_export(out)


def test_a_second_writer_is_refused_naming_the_holder_and_can_wait(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    with FolderLock(out):
        with pytest.raises(ExportLockedError, match=r"another export \(\{\"pid\""):
            _run(out)
        done = []
        t = threading.Thread(target=lambda: done.append(_run(out, wait=True)))
        t.start()
        t.join(0.5)
        assert t.is_alive() and not done  # waiting for the lock
    t.join(60)
    assert done and done[0].ok == 3


def test_two_threads_exporting_to_one_folder_do_the_work_once(tmp_path):
    out = tmp_path / "o"
    results, errors = [], []

    def go() -> None:
        try:
            results.append(_run(out, n=4, wait=True))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and sorted(r.skipped for r in results) == [0, 4]
    assert len(_journal(out)) == 4


def test_a_killed_runs_lock_and_temporaries_are_taken_over(tmp_path):
    out = tmp_path / "o"
    _run(out, layout="combined", output=OutputSpec.grid())
    (out / ".lock").write_text('{"pid": 999999}')  # a holder that died: flock is gone with it
    stale = [out / ".mosaiks.zarr.4242.tmp", out / ".mosaiks.zarr.4242-17.old.tmp"]
    for d in stale:
        (d / "embedding").mkdir(parents=True)
        (d / "embedding" / "c").write_bytes(b"x" * 1000)
    (out / ".parts" / "mosaiks" / ".000001.npz.4242-9.tmp").write_bytes(b"half")
    _run(out, layout="combined", output=OutputSpec.grid())
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_batch_size_must_be_a_positive_integer(tmp_path, bad):
    prov = FakeProvider()
    with pytest.raises(SpecError, match="batch_size"):
        _run(tmp_path / "o", backend=prov, batch_size=bad)
    assert prov.calls == 0 and not (tmp_path / "o").exists()


class _Shrunk(FakeProvider):
    """Returns a 5x5 raster (or one band short) whatever grid was asked."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def fetch(self, request):
        import attrs

        r = super().fetch(request)
        if self.how == "small":
            return attrs.evolve(r, data=r.data[:, :, :5, :5], valid=r.valid[:, :5, :5], grid=r.grid.window(0, 0, 5, 5))
        if self.how == "moved":
            return attrs.evolve(r, grid=attrs.evolve(r.grid, x0=r.grid.x0 + 1000))
        return attrs.evolve(r, data=r.data[:, 1:], bands=r.bands[1:])


@pytest.mark.parametrize("how, match", [("small", "5x5 px raster"), ("moved", "for a request of"),
                                        ("bands", "without the requested")])
def test_a_raster_that_is_not_what_was_asked_fails_the_item(how, match):
    from rs_embed import ItemError, get_embeddings_batch

    got = get_embeddings_batch("mosaiks", rois(1), WINDOW, backend=_Shrunk(how), continue_on_error=True)
    assert isinstance(got[0], ItemError) and got[0].stage == "fetch" and match in got[0].describe()


def test_weights_on_a_weights_free_model_are_refused(tmp_path):
    from rs_embed import ModelRequest

    with pytest.raises(SpecError, match="no learned weights"):
        export_batch(rois(1), WINDOW, [ModelRequest("mosaiks", weights=str(tmp_path / "w.safetensors"))],
                     tmp_path / "o", backend=FakeProvider())


def test_a_deleted_per_item_geotiff_is_a_typed_error_and_resume_rebuilds_it(tmp_path):
    out = tmp_path / "o"
    _run(out, output=OutputSpec.grid())
    ref = load_export(out).embeddings["mosaiks"]
    (out / "items" / "item_000001" / "mosaiks.tif").unlink()
    with pytest.raises(ExportError, match="'mosaiks' output is missing or damaged"):
        load_export(out)
    _run(out, output=OutputSpec.grid())
    assert np.array_equal(load_export(out).embeddings["mosaiks"], ref, equal_nan=True)
