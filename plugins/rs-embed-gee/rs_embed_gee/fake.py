"""A fake Earth Engine REST server on loopback, for tests and benchmarks (no account, no network).

It serves what the real client needs to initialise (the Cloud API discovery document and the
algorithm signatures that ship in the earthengine-api wheel, `ee/tests/`), and answers the two
calls the provider makes:
- `value:compute`: the scene list. The fake reads the collection id (`ImageCollection.load`) out
  of the submitted graph, evaluates every filter applied to that collection (date range, bounds,
  property comparisons, list membership, not/and/or; an unknown filter is a 400, never ignored)
  against its own scripted scenes (`FakeScene`: time, lon/lat bounds, properties, cloud cover),
  and answers the matches oldest first, as many as `Collection.limit` allows.
- `image:computePixels`: NPY bytes, one float32 field per requested band id, for the requested
  grid. Values are a function of the band id and the *global* pixel position (from the affine
  transform), so a client that splits a request and reassembles it wrongly gets wrong numbers:
  `value_of(band_id, gx, gy)`; bands named "*_valid" hold 1/0 from `valid_of(gx, gy)`.
It validates what the service validates, with the service's kind of message: the bearer token
(401), the project (403), the concurrent-request quota (429 beyond `max_concurrent`, 40 by
default like a project's), the file format, the CRS code, a non-degenerate affine transform,
band ids the expression produces, and the per-request size limits (400s). It records every
request (path, decoded body, whether the bearer token was right) and can be scripted to fail
(`fail_next`), be slow (`latency_s`) or hang.

The graph helpers (`calls`, `constants`) read the client's serialised expressions for assertions.
"""

from __future__ import annotations

import datetime as dt
import http.server
import io
import json
import os
import re
import threading
import time
import zlib
from collections import deque
from typing import Any, Iterator

import numpy as np
from attrs import define, field

TOKEN = "fake-ee-token"


@define
class FakeScene:
    """One image: `cloud` answers the scene cloud-cover properties (CLOUDY_PIXEL_PERCENTAGE, CLOUD_COVER,
    CLOUD_COVERAGE); `bounds` is its lon/lat footprint (None: everywhere); `properties` the others."""

    id: str
    time: dt.datetime
    clear: float = 1.0
    cloud: float | None = 10.0
    bounds: tuple[float, float, float, float] | None = None
    properties: dict[str, Any] = field(factory=dict)

    def get(self, name: str) -> Any:
        if name == "system:time_start":
            return int(self.time.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
        if name == "system:index":
            return self.id
        if name in CLOUD_PROPERTIES:
            return self.cloud
        return self.properties.get(name)


CLOUD_PROPERTIES = ("CLOUDY_PIXEL_PERCENTAGE", "CLOUD_COVER", "CLOUD_COVERAGE")
# ImageFileFormat values of the REST API (projects.image.computePixels); the fake serves NPY.
FILE_FORMATS = ("JPEG", "PNG", "AUTO_JPEG_PNG", "NPY", "GEO_TIFF", "TF_RECORD_IMAGE", "MULTI_BAND_IMAGE_TILE",
                "ZIPPED_GEO_TIFF", "ZIPPED_GEO_TIFF_PER_BAND")


@define
class Recorded:
    method: str
    path: str
    body: Any
    authorized: bool
    at: float

    @property
    def kind(self) -> str:
        """The method: "compute" (value:compute) or "computePixels" (image:computePixels)."""
        return self.path.split("?")[0].rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def value_of(band_id: str, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The fake's data value of a band at global pixel indices (exact in float32)."""
    salt = zlib.crc32(band_id.encode()) % 97
    return (salt * 10000 + (gx % 100) * 100 + (gy % 100)).astype(np.float32)


def valid_of(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The fake's validity pattern (about 4 of 5 pixels valid)."""
    return ((gx + 2 * gy) % 5 != 0).astype(np.float32)


def global_indices(grid: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(gx, gy) integer pixel indices of a PixelGrid on its CRS's global lattice."""
    a = grid["affineTransform"]
    w, h = grid["dimensions"]["width"], grid["dimensions"]["height"]
    x0 = int(round(a["translateX"] / a["scaleX"]))
    y0 = int(round(a["translateY"] / -a["scaleY"]))
    gx = np.broadcast_to(np.arange(x0, x0 + w)[None, :], (h, w))
    gy = np.broadcast_to(np.arange(y0, y0 - h, -1)[:, None], (h, w))
    return gx.astype(np.int64), gy.astype(np.int64)


# ---------------------------------------------------------------- reading serialised graphs


def _walk(node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        inv = node.get("functionInvocationValue")
        if inv is not None:
            yield inv.get("functionName", ""), inv.get("arguments", {})
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def calls(expression: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every (function name, arguments) invocation in a serialised expression, those inside mapped
    functions included (each shared value once). Arguments may be {"valueReference": ...}: use `arg`."""
    if "values" in expression:
        return [c for v in expression["values"].values() for c in _walk(v)]
    return list(_walk(expression))


def arg(expression: dict[str, Any], node: Any) -> Any:
    """An argument node with value references resolved."""
    while isinstance(node, dict) and "valueReference" in node:
        node = expression.get("values", {}).get(node["valueReference"])
    return node


def constant(node: Any) -> Any:
    return node.get("constantValue") if isinstance(node, dict) else None


def constants(expression: dict[str, Any], function: str, argument: str) -> list[Any]:
    """The constant values passed as `argument` to every call of `function`."""
    return [constant(arg(expression, a[argument])) for f, a in calls(expression) if f == function and argument in a]


class Unsupported(Exception):
    """A filter the fake cannot evaluate: answered as a 400 rather than silently ignored."""


def _invocation(expression: dict[str, Any], node: Any) -> tuple[str, dict[str, Any]]:
    inv = (arg(expression, node) or {}).get("functionInvocationValue") or {}
    return inv.get("functionName", ""), inv.get("arguments", {})


def _base_collection(expression: dict[str, Any], node: Any) -> str | None:
    """The id of the ImageCollection.load a chain of filters / limits / maps starts from."""
    for _ in range(64):
        name, args = _invocation(expression, node)
        if name == "ImageCollection.load":
            return constant(arg(expression, args.get("id")))
        if name not in ("Collection.filter", "Collection.limit", "Collection.map") or "collection" not in args:
            return None
        node = args["collection"]
    return None


def collection_filters(expression: dict[str, Any], collection_id: str) -> list[Any]:
    """The filter nodes applied (Collection.filter) to the collection loaded as `collection_id`."""
    return [a["filter"] for f, a in calls(expression)
            if f == "Collection.filter" and _base_collection(expression, a.get("collection")) == collection_id]


def _lonlat_box(expression: dict[str, Any], node: Any) -> tuple[float, float, float, float]:
    """The lon/lat bounding box of a geometry node (a Rectangle, possibly inside a Feature)."""
    from pyproj import Transformer

    name, args = _invocation(expression, node)
    if name == "Feature":
        return _lonlat_box(expression, args["geometry"])
    if name != "GeometryConstructors.Rectangle":
        raise Unsupported(f"geometry {name!r}")
    x0, y0, x1, y1 = constant(arg(expression, args["coordinates"]))
    crs = "EPSG:4326"
    if "crs" in args:
        _, pargs = _invocation(expression, args["crs"])
        crs = constant(arg(expression, pargs.get("crs"))) or crs
    if crs == "EPSG:4326":
        return x0, y0, x1, y1
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform_bounds(x0, y0, x1, y1, densify_pts=21)


def matches(expression: dict[str, Any], node: Any, scene: FakeScene) -> bool:
    """Whether `scene` passes the serialised filter `node` (the subset of ee.Filter the provider uses)."""
    name, args = _invocation(expression, node)

    def const(key: str) -> Any:
        return constant(arg(expression, args[key]))

    if name == "Filter.not":
        return not matches(expression, args["filter"], scene)
    if name in ("Filter.and", "Filter.or"):
        parts = [matches(expression, f, scene) for f in arg(expression, args["filters"]).get("arrayValue", {})
                 .get("values", [])]
        return all(parts) if name == "Filter.and" else any(parts)
    if name == "Filter.dateRangeContains":
        _, rng = _invocation(expression, args["leftValue"])
        start = dt.datetime.fromisoformat(constant(arg(expression, rng["start"])))
        end = dt.datetime.fromisoformat(constant(arg(expression, rng["end"])))
        return const("rightField") == "system:time_start" and start <= scene.time < end
    if name == "Filter.intersects":
        if scene.bounds is None:
            return True
        w, s_, e, n = _lonlat_box(expression, args["rightValue"])
        sw, ss, se, sn = scene.bounds
        return not (e < sw or se < w or n < ss or sn < s_)
    compare = {"Filter.equals": lambda a, b: a == b, "Filter.greaterThan": lambda a, b: a > b,
               "Filter.lessThan": lambda a, b: a < b, "Filter.greaterThanOrEquals": lambda a, b: a >= b,
               "Filter.lessThanOrEquals": lambda a, b: a <= b, "Filter.listContains": lambda a, b: b in a,
               "Filter.inList": lambda a, b: a in b}
    if name in compare and "leftField" in args and "rightValue" in args:
        value = scene.get(const("leftField"))
        return value is not None and bool(compare[name](value, const("rightValue")))
    raise Unsupported(f"filter {name!r}")


def produced_bands(expression: dict[str, Any]) -> set[str] | None:
    """Band names the expression's images are renamed to (None when it renames nothing)."""
    names = {n for v in constants(expression, "Image.rename", "names") if isinstance(v, list) for n in v}
    return names or None


# ---------------------------------------------------------------- the server


@define
class _Failure:
    kind: str
    status: int
    message: str
    retry_after: float | None = None
    hang_s: float = 0.0


@define
class FakeEarthEngine:
    """Start with `with FakeEarthEngine(scenes={...}) as fake:`; `fake.url`, `fake.credentials()`."""

    scenes: dict[str, list[FakeScene]] = field(factory=dict)
    project: str = "fake-project"
    latency_s: float = 0.0
    max_bytes: int = 48 * 1024 * 1024
    max_dim: int = 32768
    max_bands: int = 1024
    max_concurrent: int = 40
    requests: list[Recorded] = field(factory=list)
    _failures: deque = field(factory=deque)
    _lock: threading.Lock = field(factory=threading.Lock)
    _server: Any = None
    in_flight: int = 0
    max_in_flight: int = 0

    # scripting
    def fail_next(self, kind: str, status: int, n: int = 1, message: str | None = None,
                  retry_after: float | None = None, hang_s: float = 0.0) -> None:
        """The next n calls of `kind` ("computePixels" or "compute") answer `status` (or hang first)."""
        for _ in range(n):
            self._failures.append(_Failure(kind, status, message or f"scripted failure {status}", retry_after, hang_s))

    def of(self, kind: str) -> list[Recorded]:
        return [r for r in self.requests if r.kind == kind]

    # lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> FakeEarthEngine:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        import ee

        here = os.path.join(os.path.dirname(ee.__file__), "tests")
        with open(os.path.join(here, "cloud_api_discovery_document.json"), "rb") as f:
            discovery = f.read()
        with open(os.path.join(here, "algorithms.json"), "rb") as f:
            algorithms = f.read()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json",
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
                names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                         404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
                body = {"error": {"code": status, "message": message, "status": names.get(status, "UNKNOWN")}}
                self._send(status, json.dumps(body).encode(), headers=headers)

            def do_GET(self) -> None:
                if "$discovery" in self.path:
                    return self._send(200, discovery)
                if self.path.split("?")[0].endswith("/algorithms"):
                    return self._send(200, algorithms)
                self._error(404, f"no such path {self.path}")

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                ok = self.headers.get("Authorization") == f"Bearer {TOKEN}"
                rec = Recorded("POST", self.path, body, ok, time.monotonic())
                with fake._lock:
                    fake.requests.append(rec)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    over = fake.in_flight > fake.max_concurrent
                try:
                    if fake.latency_s:
                        time.sleep(fake.latency_s)
                    if over:
                        return self._error(429, "Too many concurrent requests: the project's limit of "
                                                f"{fake.max_concurrent} concurrent requests was exceeded.")
                    self._answer(rec, body, ok)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            def _answer(self, rec: Recorded, body: dict[str, Any], ok: bool) -> None:
                if not ok:
                    return self._error(401, "Request had invalid authentication credentials.")
                m = re.search(r"projects/([^/]+)/", self.path)
                if m is None or m.group(1) != fake.project:
                    return self._error(403, f"Permission denied on project {m.group(1) if m else '?'}: the caller "
                                            "is not registered to use Earth Engine")
                with fake._lock:
                    failure = next((f for f in fake._failures if f.kind == rec.kind), None)
                    if failure is not None:
                        fake._failures.remove(failure)
                if failure is not None:
                    if failure.hang_s:
                        time.sleep(failure.hang_s)
                    headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else None
                    return self._error(failure.status, failure.message, headers)
                if rec.kind == "compute":
                    return self._value(body["expression"])
                if rec.kind == "computePixels":
                    return self._pixels(body)
                self._error(404, f"no such method {self.path}")

            def _collection(self, expression: dict[str, Any]) -> str | None:
                ids = [i for i in constants(expression, "ImageCollection.load", "id") if i in fake.scenes]
                if not ids:
                    missing = constants(expression, "ImageCollection.load", "id")
                    self._error(400, f"ImageCollection.load: ImageCollection asset '{missing[0] if missing else '?'}' "
                                     "not found (does not exist or caller does not have access).")
                    return None
                return ids[0]

            def _value(self, expression: dict[str, Any]) -> None:
                cid = self._collection(expression)
                if cid is None:
                    return
                filters = collection_filters(expression, cid)
                limits = constants(expression, "Collection.limit", "limit")
                try:
                    rows = [s for s in sorted(fake.scenes[cid], key=lambda s: s.time)
                            if all(matches(expression, f, s) for f in filters)]
                except Unsupported as exc:
                    return self._error(400, f"the fake cannot evaluate {exc}")
                rows = rows[: min(limits)] if limits else rows
                result = [{"id": s.id, "time": int(s.time.replace(tzinfo=dt.timezone.utc).timestamp() * 1000),
                           "clear": s.clear, **({"cloud": s.cloud} if s.cloud is not None else {})} for s in rows]
                self._send(200, json.dumps({"result": result}).encode())

            def _pixels(self, body: dict[str, Any]) -> None:
                if self._collection(body["expression"]) is None:
                    return
                grid, names = body["grid"], body.get("bandIds") or []
                fmt = body.get("fileFormat")
                if fmt not in FILE_FORMATS:
                    return self._error(400, f"Invalid value at 'file_format' (type.googleapis.com/google.earthengine."
                                            f"v1.ImageFileFormat), {json.dumps(fmt)}")
                if fmt != "NPY":
                    return self._error(400, f"the fake serves fileFormat NPY only, not {fmt}")
                bad = self._grid_error(grid)
                if bad:
                    return self._error(400, bad)
                produced = produced_bands(body["expression"])
                missing = [n for n in names if produced is not None and n not in produced]
                if missing:
                    return self._error(400, f"Image.select: Pattern '{missing[0]}' did not match any bands. "
                                            f"Available bands: {sorted(produced or ())}")
                w, h = grid["dimensions"]["width"], grid["dimensions"]["height"]
                size = w * h * 4 * len(names)
                if size > fake.max_bytes:
                    return self._error(400, f"Total request size ({size} bytes) must be less than or equal to "
                                            f"{fake.max_bytes} bytes.")
                if max(w, h) > fake.max_dim or len(names) > fake.max_bands:
                    return self._error(400, "Request exceeds the pixel-per-side or band limit.")
                gx, gy = global_indices(grid)
                arr = np.zeros((h, w), dtype=[(n, "<f4") for n in names])
                for n in names:
                    arr[n] = valid_of(gx, gy) if n.endswith("_valid") else value_of(n, gx, gy)
                buf = io.BytesIO()
                np.save(buf, arr)
                self._send(200, buf.getvalue(), "application/octet-stream")

            @staticmethod
            def _grid_error(grid: dict[str, Any]) -> str | None:
                from pyproj import CRS
                from pyproj.exceptions import CRSError

                dims, a = grid.get("dimensions") or {}, grid.get("affineTransform") or {}
                if not all(isinstance(dims.get(k), int) and dims[k] > 0 for k in ("width", "height")):
                    return f"Invalid PixelGrid dimensions {dims}: width and height must be positive integers."
                if not a.get("scaleX") or not a.get("scaleY"):
                    return f"Invalid affine transform {a}: the transform is not invertible (zero scale)."
                code = grid.get("crsCode")
                if code is None and grid.get("crsWkt") is None:
                    return "PixelGrid needs crsCode or crsWkt."
                try:
                    CRS.from_user_input(code if code is not None else grid["crsWkt"])
                except CRSError:
                    return f"Invalid CRS: {code or 'the given WKT'} is not a known coordinate reference system."
                return None

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-ee").start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def credentials(self, token: str = TOKEN) -> Any:
        """google-auth credentials carrying a bearer token (no refresh, no network)."""
        import google.oauth2.credentials

        return google.oauth2.credentials.Credentials(token=token)

    def provider(self, **options: Any) -> Any:
        """A GEEProvider signed in to this fake (the client's data-catalog fetch is stubbed out)."""
        from .provider import GEEProvider

        stub_data_catalog()
        options.setdefault("project", self.project)
        options.setdefault("credentials", self.credentials())
        return GEEProvider(url=self.url, **options)


# ---------------------------------------------------------------- sample requests for tests and benchmarks

S2 = "COPERNICUS/S2_SR_HARMONIZED"
L8 = "LANDSAT/LC08/C02/T1_L2"


def quick_retry() -> Any:
    """A retry policy with millisecond backoff, so scripted failures do not slow tests down."""
    from rs_embed_core.retry import RetryPolicy

    return RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.05)


def sample_grid() -> Any:
    """640 m x 480 m in UTM 51N (near Shanghai), 10 m pixels on the 10 m lattice."""
    from rs_embed_core.grid import GridSpec

    return GridSpec("EPSG:32651", 356450.0, 3453380.0, 10.0, 64, 48)


# lon/lat footprint of the sample scenes: eastern China, around sample_grid() and the benchmark's ROIs
SAMPLE_BOUNDS = (100.0, 20.0, 125.0, 40.0)


def month_scenes(prefix: str = "S2", days: tuple[int, ...] = (3, 8, 13, 18, 23, 28), year: int = 2022,
                 month: int = 6) -> list[FakeScene]:
    """Scenes on these days of one month over sample_grid(), clearer (and less cloudy by metadata) as the
    month goes on."""
    return [FakeScene(f"{year}{month:02d}{d:02d}T023100_{prefix}", dt.datetime(year, month, d, 2, 31),
                      clear=round(0.3 + 0.1 * i, 3), cloud=70.0 - 10 * i, bounds=SAMPLE_BOUNDS)
            for i, d in enumerate(days)]


def s1_scenes(year: int = 2022, month: int = 6) -> list[FakeScene]:
    """Sentinel-1 GRD images over sample_grid() as the catalogue mixes them: IW 10 m dual-polarised, both
    passes, plus an EW 40 m and an IW single-polarisation image (Earth Engine property names)."""
    kinds = [("IW", 10, "ASCENDING", ["VV", "VH"]), ("IW", 10, "DESCENDING", ["VV", "VH"]),
             ("EW", 40, "DESCENDING", ["HH", "HV"]), ("IW", 10, "ASCENDING", ["VV"]),
             ("IW", 10, "DESCENDING", ["VV", "VH"])]
    return [FakeScene(f"S1A_{mode}_GRDH_{year}{month:02d}{3 + 5 * i:02d}", dt.datetime(year, month, 3 + 5 * i, 22, 5),
                      cloud=None, bounds=SAMPLE_BOUNDS,
                      properties={"instrumentMode": mode, "resolution_meters": res, "orbitProperties_pass": orbit,
                                  "transmitterReceiverPolarisation": pols})
            for i, (mode, res, orbit, pols) in enumerate(kinds)]


def stub_data_catalog() -> None:
    """ee.Initialize reads a list of deprecated assets from Cloud Storage; offline, answer none."""
    import ee.deprecation

    ee.deprecation._FetchDataCatalogStac = lambda: {}  # type: ignore[attr-defined]


# the environment variables through which a real sign-in could leak into a test
SIGN_IN_ENV = ("GOOGLE_APPLICATION_CREDENTIALS", "EE_PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG",
               "GCE_METADATA_HOST", "COLAB_RELEASE_TAG")


def isolated(monkeypatch: Any, home: Any) -> Iterator[None]:
    """For a test's autouse fixture (`yield from isolated(monkeypatch, tmp_path / "home")`): no real credentials
    or project leak in, and the sign-in state and raster cache are fresh before and after the test."""
    from rs_embed_core.fetching import raster_cache

    from . import auth

    monkeypatch.setenv("HOME", str(home))
    for name in SIGN_IN_ENV:
        monkeypatch.delenv(name, raising=False)
    auth.reset()
    raster_cache.clear()
    yield
    auth.reset()
    raster_cache.clear()
