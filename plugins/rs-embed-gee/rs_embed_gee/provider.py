"""The `gee` provider: Google Earth Engine pixels on the exact request grid.

One fetch = one `value:compute` call listing the scenes (ids, times, clear fraction over the ROI)
+ `image:computePixels` calls in NPY on the request's GridSpec (its UTM CRS and affine transform),
one per window of the grid small enough for Earth Engine's per-request limits (bytes, pixels per
side, bands), reassembled exactly. Frames are planned on the client from the scene list with the
core's own binning (rs_embed_core.providers.composite), so frames, empty frames and frame times
mean what they mean for every provider; each frame is composited on the server from an explicit
list of image ids. Every call is retried on 5xx / timeouts with `retry` and on 429 / quota errors
with the longer `quota_retry` (rs_embed_core.retry); at most `max_inflight` calls are in flight for
the project in this process (every provider signed in to it shares the bound), and optionally at
most `requests_per_s` start per second. The scene list of a fetch is kept for `listing_ttl_s`, so
the runner's retry of a failed fetch does not list the scenes again. A computation over the
server's memory or time limit is split by frames, then by window, like one over its size limits.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import numpy as np

from rs_embed_core.collections import CLOUD_SCORE_PLUS_DEFAULT_THRESHOLD, QA60_GAP, known_collection
from rs_embed_core.errors import DataNotFoundError, SpecError
from rs_embed_core.grid import GridSpec
from rs_embed_core.providers import FetchRequest
from rs_embed_core.providers.composite import day_groups, frame_bins, middle
from rs_embed_core.raster import Raster
from rs_embed_core.retry import DEFAULT_RETRY, RetryPolicy, TokenBucket, with_retries
from rs_embed_core.specs import CLOUD_MASKS, SensorSpec

from . import auth, expressions
from .errors import (
    GEEAuthError,
    GEEComputationTooHeavyError,
    GEEError,
    GEEPermissionError,
    GEEQuotaError,
    GEERequestTooLargeError,
    classify,
)

T = TypeVar("T")

# Earth Engine's documented computePixels limits (REST reference, projects.image.computePixels).
MAX_REQUEST_BYTES = 48 * 1024 * 1024
MAX_REQUEST_DIM = 32768
MAX_REQUEST_BANDS = 1024
# 429s: the Earth Engine quota guide says its client retries with exponential backoff up to about a minute and
# to add your own beyond that; rs-embed turns the client's retries off and retries here instead.
QUOTA_RETRY = RetryPolicy(max_retries=6, base_delay_s=1.0, max_delay_s=60.0, jitter=0.5)


class SharedLimit:
    """At most `capacity` holders at once, shared by every provider signed in to one project and endpoint
    (Earth Engine's concurrency quota is per project); the capacity is the smallest any of them asked for."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.held, self.most = capacity, 0, 0
        self._cond = threading.Condition()

    def tighten(self, capacity: int) -> None:
        with self._cond:
            self.capacity = min(self.capacity, capacity)

    def __enter__(self) -> None:
        with self._cond:
            while self.held >= self.capacity:
                self._cond.wait()
            self.held += 1
            self.most = max(self.most, self.held)

    def __exit__(self, *exc: Any) -> None:
        with self._cond:
            self.held -= 1
            self._cond.notify()


_LIMITS: dict[tuple[str | None, str | None], SharedLimit] = {}
_LIMITS_LOCK = threading.Lock()


def project_limit(project: str | None, url: str | None, capacity: int) -> SharedLimit:
    """The in-flight bound of (project, endpoint) in this process, tightened to `capacity`."""
    with _LIMITS_LOCK:
        limit = _LIMITS.get((project, url))
        if limit is None:
            limit = _LIMITS[(project, url)] = SharedLimit(capacity)
        else:
            limit.tighten(capacity)
        return limit


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise SpecError(f"{name} must be an int >= 1, got {v!r}")
    return v


def split_grid(height: int, width: int, n_bands: int, max_bytes: int, max_dim: int) -> list[tuple[int, int, int, int]]:
    """Windows (row0, col0, h, w) covering the grid, each within `max_dim` per side and
    `max_bytes` of float32 for `n_bands` bands; as few as the limits allow, near-square."""
    max_px = max_bytes // (4 * n_bands)
    if max_px < 1:
        raise SpecError(f"{n_bands} bands do not fit one pixel in a {max_bytes}-byte request")
    th, tw = min(height, max_dim), min(width, max_dim)
    while th * tw > max_px:
        if th >= tw:
            th = (th + 1) // 2
        else:
            tw = (tw + 1) // 2
    return [(r, c, min(th, height - r), min(tw, width - c)) for r in range(0, height, th) for c in range(0, width, tw)]


class GEEProvider:
    """Pixels from Google Earth Engine.

    project: the Google Cloud project registered for Earth Engine (see rs_embed_gee.auth for the
    other places it is looked up). key_file: a service-account key. credentials: a google-auth
    credentials object (skips the lookup). url: another Earth Engine endpoint: the high-volume one
    (https://earthengine-highvolume.googleapis.com) for bulk exports, or a loopback fake in tests.
    max_concurrency: ROIs the runner fetches at once; max_inflight: Earth Engine calls in flight at
    once for the project in this process (shared by every provider of the project; Earth Engine
    allows 40 concurrent requests per project by default); requests_per_s: optional sustained rate
    of calls. retry: backoff on 5xx / timeouts; quota_retry: backoff on 429 / quota errors.
    http_timeout_s: per-call deadline. max_scenes: images listed per fetch (oldest first; meta says
    when the list was cut). max_request_bytes / max_request_dim / max_request_bands: the
    per-request limits to split at (Earth Engine's by default). resampling: of the wavelength bands
    onto the grid ("bilinear" like the STAC and local providers, "nearest" = Earth Engine's own
    default, "bicubic"). s1_instrument_mode / s1_resolution_m / s1_orbit_pass: which Sentinel-1 GRD
    images may be mosaicked together (None: any). listing_ttl_s: how long a scene list is reused.
    """

    name = "gee"

    def __init__(
        self,
        project: str | None = None,
        *,
        key_file: str | os.PathLike | None = None,
        credentials: Any = None,
        url: str | None = None,
        max_concurrency: int = 16,
        max_inflight: int = 16,
        requests_per_s: float | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        http_timeout_s: float = 300.0,
        max_scenes: int = 1000,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_request_dim: int = MAX_REQUEST_DIM,
        max_request_bands: int = MAX_REQUEST_BANDS,
        fetch_timeout_s: float | None = 900.0,
        quota_retry: RetryPolicy = QUOTA_RETRY,
        resampling: str = "bilinear",
        s1_instrument_mode: str | None = "IW",
        s1_resolution_m: int | None = 10,
        s1_orbit_pass: str | None = None,
        listing_ttl_s: float = 600.0,
    ) -> None:
        if project is not None and (not isinstance(project, str) or not project.strip()):
            raise SpecError(f"project must be a non-empty string, got {project!r}")
        self.project = project.strip() if project else None
        self.key_file, self.credentials, self.url = key_file, credentials, url
        self.max_concurrency = _positive_int("max_concurrency", max_concurrency)
        self.max_inflight = _positive_int("max_inflight", max_inflight)
        self.max_scenes = _positive_int("max_scenes", max_scenes)
        self.max_request_bytes = _positive_int("max_request_bytes", max_request_bytes)
        self.max_request_dim = _positive_int("max_request_dim", max_request_dim)
        self.max_request_bands = _positive_int("max_request_bands", max_request_bands)
        if not (isinstance(http_timeout_s, (int, float)) and http_timeout_s > 0):
            raise SpecError(f"http_timeout_s must be > 0, got {http_timeout_s!r}")
        for name, policy in (("retry", retry), ("quota_retry", quota_retry)):
            if not isinstance(policy, RetryPolicy):
                raise SpecError(f"{name} must be a rs_embed_core.retry.RetryPolicy, got {policy!r}")
        if resampling not in expressions.RESAMPLING:
            raise SpecError(f"resampling must be one of {expressions.RESAMPLING}, got {resampling!r}")
        for name, value, allowed in (("s1_instrument_mode", s1_instrument_mode, expressions.S1_INSTRUMENT_MODES),
                                     ("s1_resolution_m", s1_resolution_m, expressions.S1_RESOLUTIONS_M),
                                     ("s1_orbit_pass", s1_orbit_pass, expressions.S1_ORBIT_PASSES)):
            if value is not None and (isinstance(value, bool) or value not in allowed):
                raise SpecError(f"{name} must be one of {allowed} or None (any), got {value!r}")
        if not (isinstance(listing_ttl_s, (int, float)) and listing_ttl_s >= 0):
            raise SpecError(f"listing_ttl_s must be a number >= 0, got {listing_ttl_s!r}")
        self.retry, self.quota_retry = retry, quota_retry
        self.http_timeout_s, self.fetch_timeout_s = float(http_timeout_s), fetch_timeout_s
        self.resampling = resampling
        self.s1_filters = {k: v for k, v in (("instrumentMode", s1_instrument_mode),
                                             ("resolution_meters", s1_resolution_m),
                                             ("orbitProperties_pass", s1_orbit_pass)) if v is not None}
        self.listing_ttl_s = float(listing_ttl_s)
        self._listings: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self.requests_per_s = requests_per_s
        self._bucket = TokenBucket(requests_per_s, burst=self.max_inflight)
        self._inflight: SharedLimit | None = None  # the project's bound, once signed in
        self._fatal: Exception | None = None  # an auth/permission failure: later fetches fail without a call
        self._signed_in: str | None = None
        self.calls = {"value:compute": 0, "image:computePixels": 0}  # attempts made, for provenance and benchmarks
        self.splits = 0  # requests the server refused as too large and that were split
        self._count_lock = threading.Lock()

    @classmethod
    def available(cls) -> bool:
        """Whether Earth Engine can likely be used here: the client imports and credentials and a project
        are found (files and environment only, no network). backend="auto" asks this."""
        try:
            import ee  # noqa: F401
        except ImportError:
            return False
        if auth.ee_ready():
            return True
        try:
            key = auth.service_account_key(None)
        except GEEAuthError:
            return False
        return auth.credentials_found(key) and auth.resolve_project(None, key) is not None

    def __repr__(self) -> str:
        return f"GEEProvider(project={self.project!r})"

    # ------------------------------------------------------------ check (no network)

    def _plan(self, sensor: SensorSpec) -> tuple[str | None, float | None]:
        """(cloud mask method or None, its threshold) for `sensor`; SpecError if not possible."""
        coll = known_collection(sensor.collection)
        offered = coll.cloud_masks if coll is not None else tuple(CLOUD_MASKS)
        if sensor.cloud_mask is False:
            method = None
        elif sensor.cloud_mask is True:
            method = offered[0] if coll is not None and offered else None
        elif sensor.cloud_mask in offered:
            method = str(sensor.cloud_mask)
        else:
            raise SpecError(
                f"cloud_mask={sensor.cloud_mask!r} is not available for {sensor.collection} on Earth Engine; "
                f"available: {list(offered) or 'none'} (True picks the default, False turns masking off)"
            )
        if sensor.cloud_threshold is not None and method != "cloud_score_plus":
            raise SpecError(f"cloud_threshold applies to cloud_mask='cloud_score_plus' only (got method {method!r})")
        threshold = None
        if method == "cloud_score_plus":
            threshold = CLOUD_SCORE_PLUS_DEFAULT_THRESHOLD if sensor.cloud_threshold is None else float(sensor.cloud_threshold)
        if len(sensor.bands) + 1 > self.max_request_bands:
            raise SpecError(f"{len(sensor.bands)} bands exceed Earth Engine's {self.max_request_bands} bands per request")
        return method, threshold

    @staticmethod
    def _check_window(method: str | None, sensor: SensorSpec, window: Any) -> None:
        """QA60 is empty on Earth Engine in QA60_GAP: a mask from it would hide every pixel of every scene."""
        first, last = (dt.date.fromisoformat(d) for d in QA60_GAP)
        if method == "qa60" and window.start <= last and window.end > first:
            raise SpecError(
                f"cloud_mask='qa60' cannot mask {sensor.collection} in [{window.start}, {window.end}): Earth Engine's "
                f"QA60 band is empty from {first} to {last} inclusive (ESA stopped producing the cloud polygons), so "
                "every pixel would be masked. Use cloud_mask='cloud_score_plus' (the default) or 'scl' (L2A), or "
                "cloud_mask=False."
            )

    def _properties(self, sensor: SensorSpec) -> dict[str, Any]:
        """Image properties the scenes must have: Sentinel-1 GRD mode, resolution and orbit pass."""
        return dict(self.s1_filters) if sensor.collection == expressions.S1_GRD else {}

    def check(self, sensor: SensorSpec) -> None:
        """Fail before any network call: a mask this collection lacks, or no way to sign in."""
        self._plan(sensor)
        if self._signed_in is None:
            auth.preflight(self.project, self.key_file, self.credentials)

    def source_token(self, request: FetchRequest) -> str:
        """Cache key part: the project and endpoint (the catalogue itself is Earth Engine's)."""
        return f"gee:{self._signed_in or self.project}:{self.url or ''}"

    # ------------------------------------------------------------ calls

    def _sign_in(self) -> str | None:
        if self._fatal is not None:
            raise self._fatal
        if self._signed_in is None:
            try:
                self._signed_in = auth.initialize(self.project, key_file=self.key_file, credentials=self.credentials,
                                                  url=self.url, http_timeout_s=self.http_timeout_s) or ""
            except (GEEAuthError, GEEPermissionError) as exc:
                self._fatal = exc
                raise
        if self._inflight is None:
            self._inflight = project_limit(self._signed_in or None, self.url, self.max_inflight)
            auth.size_pool(self._inflight.capacity)
        return self._signed_in or None

    def _call(self, kind: str, fn: Callable[[], T], what: str, retries: list[int]) -> T:
        """fn() under the rate limit and the in-flight bound, classified, retried when transient."""

        def attempt() -> T:
            if self._fatal is not None:
                raise self._fatal
            self._bucket.acquire()
            assert self._inflight is not None  # set by _sign_in
            with self._inflight:
                with self._count_lock:
                    self.calls[kind] += 1
                try:
                    return fn()
                except Exception as exc:
                    typed = classify(exc, what, self._signed_in)
                    if typed is None:
                        raise
                    if isinstance(typed, (GEEAuthError, GEEPermissionError)):
                        self._fatal = typed
                    raise typed from None

        def count(*_: Any) -> None:
            with self._count_lock:
                retries[0] += 1

        def policy_for(exc: Exception) -> RetryPolicy:
            return self.quota_retry if isinstance(exc, GEEQuotaError) else self.retry

        return with_retries(attempt, self.retry, on_retry=count, policy_for=policy_for)[0]

    def _scenes(self, table: Any, key: str, retries: list[int]) -> list[dict[str, Any]]:
        """The scene list of one fetch, reused for `listing_ttl_s` (the runner retries failed fetches whole)."""
        import ee

        now = time.monotonic()
        with self._count_lock:
            hit = self._listings.get(key)
            if hit is not None and now - hit[0] <= self.listing_ttl_s:
                return hit[1]
        rows = self._call("value:compute", lambda: ee.data.computeValue(table), "listing scenes", retries)
        scenes = [_scene(r) for r in rows or []]
        scenes.sort(key=lambda s: s["time"] or dt.datetime.min)
        with self._count_lock:
            if len(self._listings) >= 256:  # bounded: drop the oldest
                self._listings.pop(min(self._listings, key=lambda k: self._listings[k][0]))
            self._listings[key] = (now, scenes)
        return scenes

    # ------------------------------------------------------------ fetch

    def fetch(self, request: FetchRequest) -> Raster:
        grid, sensor, window = request.grid, request.sensor, request.temporal
        method, threshold = self._plan(sensor)
        self._check_window(method, sensor, window)
        self._sign_in()
        retries = [0]
        roi = expressions.region(grid)
        properties = self._properties(sensor)
        source = expressions.source_collection(sensor, window, roi, self.max_scenes, properties)
        images = expressions.masked(source, tuple(sensor.bands), method, threshold, self.resampling, sensor.collection)
        cloud_property = expressions.SCENE_CLOUD_PROPERTY.get(sensor.collection)
        table = expressions.scene_table(images, roi, grid, cloud_property, self.max_scenes)
        key = json.dumps([self._signed_in, self.url, sensor.collection, list(sensor.bands), method, threshold,
                          sensor.max_cloud_fraction, str(window.start), str(window.end), grid.crs, grid.x0, grid.y0,
                          grid.res, grid.yres, grid.width, grid.height, properties, self.max_scenes, self.resampling])
        scenes = self._scenes(table, key, retries)
        if not scenes:
            raise DataNotFoundError(
                f"Earth Engine: no {sensor.collection} image over the ROI in [{window.start}, {window.end}) "
                "(half-open)" + (f" with scene cloud cover <= {sensor.max_cloud_fraction:.0%}"
                                 if sensor.max_cloud_fraction is not None and cloud_property else "")
            )
        plan, times, meta = self._frames(scenes, sensor, window)
        data, valid = self._pixels(images, plan, grid, sensor, retries)
        if sensor.composite == "none":  # like the core: drop days without a clear pixel, unless all are empty
            keep = [k for k in range(len(plan)) if valid[k].any()] or list(range(len(plan)))
            data, valid = data[keep], valid[keep]
            times = [times[k] for k in keep]
            meta["scenes_per_frame"] = [meta["scenes_per_frame"][k] for k in keep]
            meta["frames"] = len(keep)
        meta["empty_frames"] = [k for k in range(valid.shape[0]) if not valid[k].any()]
        data = np.where(valid[:, None], data, np.float32(sensor.fill_value)).astype(np.float32)
        used = sorted({i for ids in meta["scenes_per_frame"] for i in ids})
        meta.update({
            "provider": self.name,
            "project": self._signed_in,
            "collection": sensor.collection,
            "cloud_mask": method,
            "cloud_threshold": threshold,
            "resampling": self.resampling,
            "scenes": [{**s, "time": s["time"].isoformat() if s["time"] else None} for s in scenes],
            "image_ids": used,
            "scenes_listed": len(scenes),
            "scenes_truncated": len(scenes) >= self.max_scenes,
            "retries": retries[0],
            "valid_fraction": float(valid.mean()) if valid.size else 0.0,
        })
        if cloud_property:
            meta["scene_cloud_property"] = cloud_property
        if properties:
            meta["scene_properties"] = properties
        return Raster(data, tuple(sensor.bands), grid, tuple(times), valid, meta)

    def _frames(self, scenes: list[dict[str, Any]], sensor: SensorSpec, window: Any
                ) -> tuple[list[list[str]], list[dt.datetime | None], dict[str, Any]]:
        """Which image ids make each frame, the frame times, and meta (composite, frames, scenes_per_frame)."""
        dates = [s["time"] for s in scenes]
        clear = [s["clear"] is None or s["clear"] > 0 for s in scenes]

        def pick(members: list[int]) -> list[int]:
            """least_cloudy: the one image with the largest clear fraction, the latest on a tie."""
            if sensor.composite != "least_cloudy" or not members:
                return members
            return [max(members, key=lambda k: (scenes[k]["clear"] or 0.0, dates[k] or dt.datetime.min))]

        if sensor.composite == "none":
            groups = [idx for _, idx in day_groups(dates)]
            times = [min((dates[k] for k in idx if dates[k] is not None), default=None) for idx in groups]
        elif sensor.frames == 1:
            groups = [pick(list(range(len(scenes))))]
            with_clear = [dates[k] for k in groups[0] if clear[k] and dates[k] is not None]
            times = [middle(with_clear or [d for d in dates if d is not None])]
        else:
            bins, centres, _ = frame_bins(dates, window, sensor.frames)
            groups, times = [pick(b) for b in bins], list(centres)
        plan = [[scenes[k]["id"] for k in g] for g in groups]
        meta = {"composite": sensor.composite, "frames": len(plan), "scenes_per_frame": plan}
        return plan, times, meta

    def _pixels(self, images: Any, plan: list[list[str]], grid: GridSpec, sensor: SensorSpec, retries: list[int]
                ) -> tuple[np.ndarray, np.ndarray]:
        """(data (T, C, H, W), valid (T, H, W)) of the planned frames; frames without images stay invalid."""
        import ee

        c, h, w = len(sensor.bands), grid.height, grid.width
        data = np.zeros((len(plan), c, h, w), np.float32)
        valid = np.zeros((len(plan), h, w), bool)
        todo = [k for k, ids in enumerate(plan) if ids]
        per_group = max(1, self.max_request_bands // (c + 1))
        groups = [todo[i:i + per_group] for i in range(0, len(todo), per_group)]

        def build(frames: list[int]) -> tuple[Any, list[str]]:
            image = expressions.pixel_image(
                [(k, expressions.frame_composite(images, plan[k], sensor.composite)) for k in frames], sensor.bands)
            return image, [expressions.band_id(k, ch) for k in frames for ch in [*range(c), None]]

        jobs = []
        for frames in groups:
            image, ids = build(frames)
            for window in split_grid(h, w, len(ids), self.max_request_bytes, self.max_request_dim):
                jobs.append((image, frames, ids, window))

        def halves(r0: int, c0: int, th: int, tw: int) -> list[tuple[int, int, int, int]]:
            return ([(r0, c0, th // 2, tw), (r0 + th // 2, c0, th - th // 2, tw)] if th >= tw
                    else [(r0, c0, th, tw // 2), (r0, c0 + tw // 2, th, tw - tw // 2)])

        def run(job: tuple[Any, list[int], list[str], tuple[int, int, int, int]]) -> None:
            image, frames, ids, (r0, c0, th, tw) = job
            params = {"expression": image, "fileFormat": "NPY", "bandIds": ids,
                      "grid": expressions.pixel_grid(grid, r0, c0, th, tw)}
            try:
                raw = self._call("image:computePixels", lambda: ee.data.computePixels(params),
                                 f"computing pixels ({tw}x{th} at row {r0}, col {c0})", retries)
            except GEERequestTooLargeError:
                if th * tw == 1:
                    raise
                # the server's limits are tighter than configured: halve the longer side and try again
                with self._count_lock:
                    self.splits += 1
                for half in halves(r0, c0, th, tw):
                    run((image, frames, ids, half))
                return
            except GEEComputationTooHeavyError:
                # over the memory or time limit: fewer frames per request first (each composite is the work),
                # then smaller windows
                if len(frames) > 1:
                    with self._count_lock:
                        self.splits += 1
                    for part in (frames[: len(frames) // 2], frames[len(frames) // 2:]):
                        part_image, part_ids = build(part)
                        run((part_image, part, part_ids, (r0, c0, th, tw)))
                    return
                if th * tw == 1:
                    raise
                with self._count_lock:
                    self.splits += 1
                for half in halves(r0, c0, th, tw):
                    run((image, frames, ids, half))
                return
            arr = _npy(raw, (th, tw), ids)
            for k in frames:
                for ch in range(c):
                    data[k, ch, r0:r0 + th, c0:c0 + tw] = arr[expressions.band_id(k, ch)]
                valid[k, r0:r0 + th, c0:c0 + tw] = arr[expressions.band_id(k, None)] > 0.5

        if len(jobs) == 1:
            run(jobs[0])
        elif jobs:
            with ThreadPoolExecutor(min(len(jobs), self.max_inflight), thread_name_prefix="rs-embed-gee") as pool:
                list(pool.map(run, jobs))
        return data, valid


def _scene(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict) or "id" not in row:
        raise GEEError(f"Earth Engine returned an unexpected scene record: {str(row)[:200]}")
    t = row.get("time")
    when = dt.datetime.fromtimestamp(t / 1000.0, dt.timezone.utc).replace(tzinfo=None) if t is not None else None
    clear = row.get("clear")
    out = {"id": str(row["id"]), "time": when, "clear": None if clear is None else float(clear)}
    if row.get("cloud") is not None:
        out["cloud_cover"] = float(row["cloud"]) / 100.0
    return out


def _npy(raw: Any, shape: tuple[int, int], names: list[str]) -> np.ndarray:
    """The structured array of an NPY answer, checked against the window and bands asked for."""
    if not isinstance(raw, (bytes, bytearray)):
        raise GEEError(f"Earth Engine returned {type(raw).__name__} where NPY bytes were expected")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as exc:
        raise GEEError(f"Earth Engine returned unreadable NPY data: {exc}") from None
    missing = [n for n in names if arr.dtype.names is None or n not in arr.dtype.names]
    if arr.shape != shape or missing:
        raise GEEError(f"Earth Engine returned pixels of shape {arr.shape} with bands {arr.dtype.names}, "
                       f"expected {shape} with {names}")
    return arr
