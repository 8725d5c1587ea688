"""Stages 4-5, batch and forward: prepared inputs -> one model's batches -> outputs per item.

`Batches` holds, per job, the pieces waiting for a batch (a whole ROI, or one tile of it). A full
batch (or the rest, at the end) is split by input shape and issued with `forward.launch`. On a GPU
its outputs are collected after the next batch has been issued (one batch in flight), so the device
computes while this process stacks and assembles. When a batch fails (an exception, or non-finite
outputs for some items) its items are run one by one, so only the item that breaks it fails. Tiles
wait until their ROI's last one has come through, then are stitched (`tiling.stitch`). Each finished
(item, job) leaves as an Embedding or ItemError made by the run's `Outcomes` (assemble.py).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import attrs
import numpy as np
from attrs import frozen

from .assemble import Outcome, Outcomes, cell_valid
from .embedder import BatchContext, Embedder
from .errors import RsEmbedError, SpecError
from .fetching import Throttle
from .forward import Launched, cpus_left, launch, overlaps
from .prepare import Prepared
from .raster import Raster, RasterHead
from .specs import BBox, PointBuffer, TemporalSpec
from .tiling import TilePlan, stitch


@frozen(eq=False)
class Piece:
    """One model input: a whole ROI, or tile `tile` of it; `fetched` is the ROI's whole input."""

    item: int
    tile: int
    prepped: Raster
    fetched: Raster | RasterHead


@attrs.define(eq=False)
class Partial:
    """A tiled (item, job) waiting for its tiles."""

    plan: TilePlan
    fetched: Raster | RasterHead
    grids: dict[int, np.ndarray] = attrs.field(factory=dict)
    pooled: dict[int, np.ndarray] = attrs.field(factory=dict)
    valid: dict[int, np.ndarray] = attrs.field(factory=dict)  # tile -> its token cells' valid fractions


class Batches:
    """The pieces of every job of one run, batched per job, through the model, out as outcomes."""

    def __init__(self, jobs: Sequence[Any], embedders: Sequence[Embedder], outcomes: Outcomes,
                 spatials: Sequence[PointBuffer | BBox], temporal: TemporalSpec, batch_size: int,
                 throttle: Throttle | None = None) -> None:
        self.jobs, self.embedders, self.outcomes = jobs, embedders, outcomes
        self.throttle = throttle or Throttle()  # held back during CPU forwards (see fetching.Throttle)
        self.cpus_left = [cpus_left(e) for e in embedders]
        self.spatials, self.temporal, self.batch_size = spatials, temporal, batch_size
        self.pending: list[list[Piece]] = [[] for _ in jobs]
        self.overlap = [overlaps(e) for e in embedders]
        self.inflight: tuple[int, list[Piece], Launched] | None = None  # issued, not yet collected
        self.partial: dict[tuple[int, int], Partial] = {}

    def add(self, i: int, j: int, ready: Prepared) -> Iterator[Outcome]:
        """Queue the inputs of (item i, job j); a batch that fills runs at once."""
        if ready.plan is not None:
            self.partial[(i, j)] = Partial(ready.plan, ready.fetched)
            self.outcomes.bar.tiles_planned(len(ready.plan.offsets))
        for k, prepped in enumerate(ready.prepped):
            self.pending[j].append(Piece(i, k, prepped, ready.fetched))
            if len(self.pending[j]) >= self.batch_size:
                yield from self.flush(j)

    def flush_all(self) -> Iterator[Outcome]:
        for j in range(len(self.jobs)):
            yield from self.flush(j)
        yield from self._land()

    def flush(self, j: int) -> Iterator[Outcome]:
        pieces, self.pending[j] = self.pending[j], []
        groups: dict[tuple[int, ...], list[Piece]] = {}
        for p in pieces:
            if (p.item, j) not in self.outcomes.failed:
                groups.setdefault(p.prepped.shape, []).append(p)
        for group in groups.values():
            yield from self._forward(j, group, isolate=len(group) > 1)

    def _finish(self, i: int, j: int, result: Any) -> Outcome:
        self.partial.pop((i, j), None)
        return self.outcomes.finish(i, j, result)

    def _context(self, j: int, group: list[Piece]) -> BatchContext:
        job = self.jobs[j]
        return BatchContext(
            grids=tuple(p.prepped.grid for p in group),
            centers_lonlat=tuple(self.spatials[p.item].center for p in group),
            times=tuple(p.prepped.times for p in group),
            temporal=self.temporal,
            sensor=job.sensors[0] if len(job.sensors) == 1 else job.sensors,  # type: ignore[arg-type]
            want=job.want,
            band_names=group[0].prepped.bands,
            valid=np.stack([p.prepped.valid for p in group]),
        )

    def _forward(self, j: int, group: list[Piece], isolate: bool) -> Iterator[Outcome]:
        """Issue one group; a whole batch on a GPU is collected after the next one is issued, a single
        item (isolating a failure) at once."""
        try:
            with self.throttle.limited(self.cpus_left[j]):
                launched = launch(self.embedders[j], [p.prepped.data for p in group], self._context(j, group),
                                  self.jobs[j].precision)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            yield from self._failed(j, group, isolate, exc)
            return
        if isolate and self.overlap[j]:
            yield from self._land()
            self.inflight = (j, group, launched)
            return
        yield from self._collect(j, group, launched, isolate)

    def _land(self) -> Iterator[Outcome]:
        """The batch in flight, collected."""
        if self.inflight is not None:
            (j, group, launched), self.inflight = self.inflight, None
            yield from self._collect(j, group, launched, isolate=True)

    def _failed(self, j: int, group: list[Piece], isolate: bool, exc: Exception) -> Iterator[Outcome]:
        out = self.outcomes
        if isolate:  # find the item(s) that break the batch; the others still get their result
            for p in group:
                yield from self._forward(j, [p], isolate=False)
            return
        for p in group:
            if (p.item, j) not in out.failed:
                yield self._finish(p.item, j, out.error(p.item, j, "model", exc))

    def _collect(self, j: int, group: list[Piece], launched: Launched, isolate: bool) -> Iterator[Outcome]:
        job, out = self.jobs[j], self.outcomes
        try:
            pooled, grid, extras = launched.collect()
            if any(arr is not None and not np.isfinite(arr).all() for arr in (pooled, grid)):
                raise RsEmbedError(
                    "the model produced non-finite values (NaN/inf); the input holds NaN or inf "
                    "(e.g. fill_value=nan) or the weights are broken"
                )
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a whole batch is rerun item by item, so only the breaking item fails
            yield from self._failed(j, group, isolate, exc)
            return
        for b, p in enumerate(group):
            key = (p.item, j)
            if key in out.failed:
                continue
            if key not in self.partial:  # a whole ROI
                try:
                    emb = out.embedding(p.item, j, None if pooled is None else pooled[b],
                                        None if grid is None else grid[b], p.prepped, p.fetched)
                    if extras and extras[b]:
                        emb.meta["model_extra"] = extras[b]
                except RsEmbedError as exc:
                    yield self._finish(p.item, j, out.error(p.item, j, "model", exc))
                    continue
                yield self._finish(p.item, j, emb)
                continue
            part = self.partial[key]
            if grid is None:
                yield self._finish(p.item, j, out.error(p.item, j, "model", SpecError(
                    f"model {job.card.id!r} returns no token grid, so its tiles cannot be stitched; "
                    "use input_prep='resize'")))
                continue
            part.grids[p.tile] = grid[b]
            part.valid[p.tile] = cell_valid(p.prepped, grid.shape[3], grid.shape[2])
            out.bar.tile_done()
            if pooled is not None:
                part.pooled[p.tile] = pooled[b]
            if len(part.grids) == len(part.plan.offsets):
                yield self._finish(p.item, j, self._stitched(p.item, j, part, p.prepped))

    def _stitched(self, i: int, j: int, part: Partial, last: Raster) -> Any:
        job, out = self.jobs[j], self.outcomes
        order = range(len(part.plan.offsets))
        try:
            pooled_list = [part.pooled[k] for k in order] if len(part.pooled) == len(part.plan.offsets) else None
            g, g_spec, vec, cells = stitch(part.plan, part.fetched.grid, [part.grids[k] for k in order], pooled_list,
                                           [part.valid[k] for k in order])
            tiling = {**part.plan.to_meta(), "pooled": "area-weighted mean of the tiles' pooled vectors"
                      if job.output.pooling == "model" else f"{job.output.pooling} of the stitched grid"}
            return out.embedding(i, j, vec, g, last.replace(grid=part.fetched.grid), part.fetched, tiling,
                                 out_grid=g_spec, out_valid=cells)
        except RsEmbedError as exc:
            return out.error(i, j, "model", exc)
