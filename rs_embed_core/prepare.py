"""Stage 3, prepare: fetched rasters -> model inputs (merge sensors, cut tiles, run the chain).

Pure per-item work described by a small picklable `PrepSpec`, so it runs wherever the fetch ran (a
worker thread or process) and overlaps inference. Errors are returned with the stage that raised them,
never raised, so one bad ROI cannot stop the stream.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from attrs import frozen

from .card import Step
from .errors import RsEmbedError, SpecError
from .preprocess import apply_chain
from .raster import Raster
from .tiling import TilePlan, cut, plan_tiles


@frozen
class PrepSpec:
    """What one (item, job) does with its fetched raster(s): everything a worker needs, and no model."""

    bands: tuple[tuple[str, ...], ...]  # per input raster, the bands this job takes from it
    steps: tuple[Step, ...]
    input_prep: Any
    image_size: Any
    fill_value: float
    refuse_low_valid: float | None  # on_low_valid="error": below this valid fraction, skip the chain


@frozen(eq=False)
class Prepared:
    """An (item, job)'s input after merge, tiling and the chain; or the stage and error that stopped it."""

    fetched: Raster | None
    plan: TilePlan | None
    prepped: tuple[Raster, ...]
    error: tuple[str, BaseException] | None


def slice_bands(raster: Raster, bands: tuple[str, ...]) -> Raster:
    if raster.bands == bands:
        return raster
    return raster.replace(data=raster.data[:, raster.band_index(bands)], bands=bands)


def merge_rasters(rasters: Sequence[Raster]) -> Raster:
    """Several sensors' rasters on one grid -> one raster: bands concatenated, valid where all are."""
    if len(rasters) == 1:
        return rasters[0]
    t = {r.shape[0] for r in rasters}
    if len(t) != 1:
        raise SpecError(f"the sensors of a multi-sensor request delivered different frame counts {sorted(t)}")
    valid = np.logical_and.reduce([r.valid for r in rasters])
    meta = {**rasters[0].meta, "sensors": [r.meta for r in rasters]}
    return Raster(np.concatenate([r.data for r in rasters], axis=1), tuple(b for r in rasters for b in r.bands),
                  rasters[0].grid, rasters[0].times, valid, meta)


def prepare(spec: PrepSpec, rasters: Sequence[Raster]) -> Prepared:
    """Merge, plan tiles and run the chain for one (item, job)."""
    try:
        fetched = merge_rasters([slice_bands(r, b) for r, b in zip(rasters, spec.bands)])
    except RsEmbedError as exc:
        return Prepared(None, None, (), ("fetch", exc))
    if spec.refuse_low_valid is not None and fetched.valid_fraction < spec.refuse_low_valid:
        return Prepared(fetched, None, (), None)  # refused by the runner; no chain work
    try:
        plan = plan_tiles(spec.input_prep, fetched.grid.shape, spec.image_size)
        if plan is None:
            return Prepared(fetched, None, (apply_chain(fetched, spec.steps),), None)
        tiles = cut(fetched, plan, spec.fill_value)
        return Prepared(fetched, plan, tuple(apply_chain(t, spec.steps) for t in tiles), None)
    except RsEmbedError as exc:
        return Prepared(fetched, None, (), ("preprocess", exc))
