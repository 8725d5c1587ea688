"""Batches with one batch in flight (`forward.overlaps`): what a GPU run does, exercised on the CPU by
forcing the overlap on. The CUDA side (outputs copied to pinned memory behind the kernels, an event
waited on in `Launched.collect`) needs a GPU and is measured by bench/bench_pipeline.py there."""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed import ItemError, PointBuffer, get_embeddings_batch
from rs_embed_core import assemble, batching
from world_plugin import WINDOW, TinyModel, WorldProvider

ROIS = [PointBuffer(121.5 + 0.01 * i, 31.2, 160) for i in range(8)]
FORWARD, FINISH = TinyModel.forward, assemble.Outcomes.finish


pytestmark = pytest.mark.usefixtures("world")


def _run(monkeypatch, overlap: bool, log: list | None = None, **kw):
    monkeypatch.setattr(batching, "overlaps", lambda embedder: overlap)
    if log is not None:
        def forward(self, x, ctx):
            log.append(("forward", [round(c[0], 4) for c in ctx.centers_lonlat]))
            return FORWARD(self, x, ctx)

        def finish(self, i, j, result):
            log.append(("finish", round(ROIS[i].lon, 4)))
            return FINISH(self, i, j, result)

        monkeypatch.setattr(TinyModel, "forward", forward)
        monkeypatch.setattr(assemble.Outcomes, "finish", finish)
    return get_embeddings_batch("tiny_test_model", ROIS, WINDOW, backend=WorldProvider(), batch_size=3,
                                progress=False, workers=1, **kw)


def test_a_batch_lands_after_the_next_is_issued_with_the_same_results(monkeypatch):
    log_on, log_off = [], []
    on = _run(monkeypatch, True, log_on)
    off = _run(monkeypatch, False, log_off)
    for a, b in zip(on, off):
        np.testing.assert_array_equal(a.data, b.data)
        assert a.meta == b.meta
    for log, late in ((log_on, True), (log_off, False)):
        batches = [lons for kind, lons in log if kind == "forward"]
        assert [len(b) for b in batches] == [3, 3, 2]
        for k, lons in enumerate(batches[:-1]):
            first_finish = min(n for n, (kind, lon) in enumerate(log) if kind == "finish" and lon in lons)
            next_issued = log.index(("forward", batches[k + 1]))
            # overlapped: batch k is collected only once batch k + 1 has been issued; otherwise before
            assert (first_finish > next_issued) is late, (late, log)
    assert sum(kind == "finish" for kind, _ in log_on) == len(ROIS)  # the last batch lands at the end


@pytest.mark.parametrize("fault", ["raises when issued", "non-finite when collected"])
def test_one_bad_item_fails_alone_with_a_batch_in_flight(monkeypatch, fault):
    bad_lon = ROIS[4].lon  # in the second batch, issued while the first is in flight

    def forward(self, x, ctx):
        hit = [abs(c[0] - bad_lon) < 1e-9 for c in ctx.centers_lonlat]
        if any(hit) and fault == "raises when issued":
            raise RuntimeError("this input breaks the model")
        out = FORWARD(self, x, ctx)
        if any(hit):
            out.grid[hit.index(True)] = np.nan
        return out

    monkeypatch.setattr(TinyModel, "forward", forward)
    out = _run(monkeypatch, True, continue_on_error=True)
    assert [isinstance(r, ItemError) for r in out] == [i == 4 for i in range(len(ROIS))]
    assert out[4].stage == "model"
    assert ("breaks the model" if fault.startswith("raises") else "non-finite") in out[4].message
