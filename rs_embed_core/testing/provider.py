"""FakeProvider: deterministic pixels without files or network, for testing runners and plugins.

Pixel values are a smooth function of *world* coordinates (the request grid's CRS metres),
so two overlapping ROIs on the shared lattice see identical values on their common pixels,
exactly as with a real source. It counts and records calls, and can add latency or faults.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
import zlib
from typing import Any, Callable, Collection as CollectionT, Iterable

import numpy as np

from ..collections import COLLECTIONS
from ..errors import ProviderError, UnknownBandError
from ..providers import FetchRequest
from ..raster import Raster
from ..specs import SensorSpec

S2_L2A_BANDS: tuple[str, ...] = COLLECTIONS["COPERNICUS/S2_SR_HARMONIZED"].band_names

# Categorical/QA bands get a constant "clear, vegetated" value instead of a smooth field.
_CATEGORICAL = {"SCL": 4.0, "QA_PIXEL": 21824.0, "QA60": 0.0, "Fmask": 0.0, "StateQA": 0.0}
_WAVELENGTHS_M = (430.0, 1170.0, 3100.0)  # several scales: small and large ROIs both vary
_FRAME_STEP_DAYS = 30
_MAX_FRAMES = 24


class FakeProvider:
    """A Provider that synthesises S2-like reflectance DNs (0..10000) for any grid.

    fail_on: None; a set of 1-based call numbers that raise ProviderError; or a callable
    `fail_on(request) -> bool`. composite="none" yields one frame every 30 days of the
    window; other composites one frame per `sensor.frames` bin, stamped at the bin's centre.
    """

    def __init__(
        self,
        bands: Iterable[str] = S2_L2A_BANDS,
        *,
        latency_s: float = 0.0,
        fail_on: CollectionT[int] | Callable[[FetchRequest], bool] | None = None,
        seed: int = 0,
        name: str = "fake",
        max_concurrency: int = 16,
    ) -> None:
        self.bands = tuple(bands)
        self.latency_s = float(latency_s)
        self.fail_on = fail_on
        self.seed = int(seed)
        self.name = name
        self.max_concurrency = int(max_concurrency)
        self._lock = threading.Lock()
        self._calls = 0
        self._in_flight = 0
        self.max_in_flight = 0  # the most fetches seen running at once
        self.requests: list[FetchRequest] = []
        self.keys: list[str] = []

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (a distributed executor sends it to its workers); each copy counts its own calls."""
        state = self.__dict__.copy()
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        """How many times `fetch` was called (including calls that failed)."""
        with self._lock:
            return self._calls

    def check(self, sensor: SensorSpec) -> None:
        unknown = [b for b in sensor.bands if b not in self.bands]
        if unknown:
            raise UnknownBandError(f"provider {self.name!r} has no band(s) {unknown}; it has {list(self.bands)}")

    def _should_fail(self, number: int, request: FetchRequest) -> bool:
        if self.fail_on is None:
            return False
        if callable(self.fail_on):
            return bool(self.fail_on(request))
        return number in self.fail_on

    def fetch(self, request: FetchRequest) -> Raster:
        self.check(request.sensor)
        with self._lock:
            self._calls += 1
            number = self._calls
            self.requests.append(request)
            self.keys.append(request.key)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.latency_s > 0:
                time.sleep(self.latency_s)
            if self._should_fail(number, request):
                raise ProviderError(f"provider {self.name!r}: injected fault on call {number}")
            return self._render(request)
        finally:
            with self._lock:
                self._in_flight -= 1

    # ------------------------------------------------------------------ pixels

    def _frame_times(self, request: FetchRequest) -> list[dt.datetime]:
        t = request.temporal
        start = dt.datetime.combine(t.start, dt.time(12), tzinfo=dt.timezone.utc)
        end = dt.datetime.combine(t.end, dt.time(0), tzinfo=dt.timezone.utc)
        if request.sensor.composite != "none":  # one frame at the centre of each of `frames` equal bins
            n = request.sensor.frames
            return [start + (end - start) * ((k + 0.5) / n) for k in range(n)]
        times = []
        when = start
        while when < end and len(times) < _MAX_FRAMES:
            times.append(when)
            when += dt.timedelta(days=_FRAME_STEP_DAYS)
        return times or [start]

    def _band_field(self, band: str, x: np.ndarray, y: np.ndarray, when: dt.datetime) -> np.ndarray:
        if band in _CATEGORICAL:
            return np.full(np.broadcast_shapes(x.shape, y.shape), _CATEGORICAL[band])
        # per-band constants from a stable hash of (seed, name): same band, same field, in any provider
        rng = np.random.default_rng([self.seed, zlib.crc32(band.encode())])
        acc = np.zeros(np.broadcast_shapes(x.shape, y.shape))
        for k, wl in enumerate(_WAVELENGTHS_M):
            theta, phase = rng.uniform(0.0, math.pi), rng.uniform(0.0, 2 * math.pi)
            acc = acc + (0.5 ** k) * np.sin(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / wl + phase)
        base = 600.0 + (zlib.crc32(band.encode()) % 4000)  # per-band offset
        season = 250.0 * math.sin(2 * math.pi * when.timetuple().tm_yday / 365.25 + rng.uniform(0, 2 * math.pi))
        return np.clip(base + season + 1500.0 * acc / 1.75, 0.0, 10000.0)

    def _render(self, request: FetchRequest) -> Raster:
        grid = request.grid
        # pixel centres in world metres, rounded to a millimetre so float noise in different
        # grid origins cannot make the same lattice cell differ between two requests
        x = np.round(np.asarray(grid.x_coords()) * 1000.0) / 1000.0
        y = np.round(np.asarray(grid.y_coords()) * 1000.0) / 1000.0
        xx, yy = x[None, :], y[:, None]
        times = self._frame_times(request)
        data = np.stack(
            [np.stack([self._band_field(b, xx, yy, when) for b in request.sensor.bands]) for when in times]
        ).astype(np.float32)
        valid = np.ones((len(times), grid.height, grid.width), dtype=bool)
        meta = {"provider": self.name, "composite": request.sensor.composite, "fake_seed": self.seed}
        return Raster(data, request.sensor.bands, grid, tuple(times), valid, meta)
