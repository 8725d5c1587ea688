"""Provider contract: a FetchRequest in, a Raster out.

Providers are registered through the `register_providers` hook. `backend=` in the public API
takes a registered name (e.g. "local", "gee") or a configured provider object.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Protocol, runtime_checkable

from attrs import frozen

from ..grid import GridSpec
from ..raster import Raster
from ..specs import SensorSpec, TemporalSpec


@frozen
class FetchRequest:
    """Exactly which pixels to produce: a grid, a time window and a sensor."""

    grid: GridSpec
    temporal: TemporalSpec
    sensor: SensorSpec

    @property
    def key(self) -> str:
        """A stable content key: equal requests (e.g. two ROIs on the same lattice cells) share it.

        Remembered per equal request: the runner asks for it several times per item on its hot path."""
        try:
            return _request_key(self)
        except TypeError:  # a field that cannot be hashed: compute it each time
            return _request_key.__wrapped__(self)


@lru_cache(maxsize=16384)
def _request_key(req: FetchRequest) -> str:
    from ..convert import converter

    blob = json.dumps(converter.unstructure(req), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@runtime_checkable
class Provider(Protocol):
    """What a data source implements. `check` must be cheap (no pixel reads, no network)."""

    name: str
    max_concurrency: int

    def check(self, sensor: SensorSpec) -> None:
        """Raise a SpecError (e.g. UnknownBandError) if this source cannot serve `sensor`."""

    def fetch(self, request: FetchRequest) -> Raster:
        """Return the pixels of `request.grid`, float32, with a validity mask and provenance."""
