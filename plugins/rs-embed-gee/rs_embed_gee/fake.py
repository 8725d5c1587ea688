"""A fake Earth Engine REST server on loopback, for tests and benchmarks (no account, no network).

It serves what the real client needs to initialise (the Cloud API discovery document and the
algorithm signatures that ship in the earthengine-api wheel, `ee/tests/`), and answers the two
calls the provider makes:
- `value:compute`: the scene list. The fake reads the collection id (`ImageCollection.load`) and
  the date window (`DateRange`) out of the submitted graph and answers its own scripted scenes
  (`FakeScene`) in that window, oldest first, as many as `Collection.limit` allows.
- `image:computePixels`: NPY bytes, one float32 field per requested band id, for the requested
  grid. Values are a function of the band id and the *global* pixel position (from the affine
  transform), so a client that splits a request and reassembles it wrongly gets wrong numbers:
  `value_of(band_id, gx, gy)`; bands named "*_valid" hold 1/0 from `valid_of(gx, gy)`.
It records every request (path, decoded body, whether the bearer token was right), enforces
Earth Engine's per-request limits (400 beyond them), checks the bearer token (401) and the
project (403), and can be scripted to fail (`fail_next`), be slow (`latency_s`) or hang.

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
    id: str
    time: dt.datetime
    clear: float = 1.0
    cloud: float | None = 10.0


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
                try:
                    if fake.latency_s:
                        time.sleep(fake.latency_s)
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
                start = dt.datetime.fromisoformat(constants(expression, "DateRange", "start")[0])
                end = dt.datetime.fromisoformat(constants(expression, "DateRange", "end")[0])
                limits = constants(expression, "Collection.limit", "limit")
                rows = [s for s in sorted(fake.scenes[cid], key=lambda s: s.time) if start <= s.time < end]
                rows = rows[: min(limits)] if limits else rows
                result = [{"id": s.id, "time": int(s.time.replace(tzinfo=dt.timezone.utc).timestamp() * 1000),
                           "clear": s.clear, **({"cloud": s.cloud} if s.cloud is not None else {})} for s in rows]
                self._send(200, json.dumps({"result": result}).encode())

            def _pixels(self, body: dict[str, Any]) -> None:
                if self._collection(body["expression"]) is None:
                    return
                grid, names = body["grid"], body.get("bandIds") or []
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


def month_scenes(prefix: str = "S2", days: tuple[int, ...] = (3, 8, 13, 18, 23, 28), year: int = 2022,
                 month: int = 6) -> list[FakeScene]:
    """Scenes on these days of one month, clearer (and less cloudy by metadata) as the month goes on."""
    return [FakeScene(f"{year}{month:02d}{d:02d}T023100_{prefix}", dt.datetime(year, month, d, 2, 31),
                      clear=round(0.3 + 0.1 * i, 3), cloud=70.0 - 10 * i) for i, d in enumerate(days)]


def stub_data_catalog() -> None:
    """ee.Initialize reads a list of deprecated assets from Cloud Storage; offline, answer none."""
    import ee.deprecation

    ee.deprecation._FetchDataCatalogStac = lambda: {}  # type: ignore[attr-defined]
