"""Offline fixtures: a real STAC API (`rustac serve`, in-memory backend) and a range-capable
HTTP file server with scripted faults, both on 127.0.0.1, plus COG and item builders."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

import rs_embed_stac
from rs_embed_core.fetching import raster_cache
from rs_embed_core.grid import GridSpec
from rs_embed_core.plugins import load_plugins, pm

# A 1 km x 1 km test area in UTM 32N (near Munich); scenes cover 2 km x 2 km around it.
CRS = "EPSG:32632"
X0, Y0 = 690000.0, 5335000.0  # top-left of the scene files
SCENE_PX = 200  # 10 m pixels a side in the scene files
GRID = GridSpec(CRS, X0 + 500.0, Y0 - 500.0, 10.0, 100, 100)  # inside the scenes


# ---------------------------------------------------------------- file server


class FileServer:
    """Serves `root` over HTTP/1.1 with Range support; faults are scripted per path.

    faults[path] is a list consumed one request at a time: an int status (e.g. 429, 500) is
    returned instead of the file; "stall" sleeps `stall_s` before answering (a timeout for the
    client). require_query: {param: value} every file request must carry (SAS signing), else 403.
    routes[path prefix] = fn(handler, path, query) -> (status, headers, body) for JSON endpoints.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.faults: dict[str, list[int | str]] = {}
        self.require_query: dict[str, str] = {}
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler, str, dict[str, list[str]]], tuple]] = {}
        self.log: list[tuple[str, str, str, int]] = []  # (method, path, query, status)
        self.stall_s = 3.0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _reply(self, status: int, headers: dict[str, str], body: bytes, head: bool, path: str, q: str) -> None:
                with server.lock:
                    server.log.append((self.command, path, q, status))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _serve(self, head: bool) -> None:
                parts = urlsplit(self.path)
                path, q = parts.path, parts.query
                query = parse_qs(q)
                for prefix, fn in server.routes.items():
                    if path.startswith(prefix):
                        status, headers, body = fn(self, path, query)
                        return self._reply(status, headers, body, head, path, q)
                with server.lock:
                    script = server.faults.get(path)
                    fault = script.pop(0) if script else None
                if fault == "stall":
                    time.sleep(server.stall_s)
                elif isinstance(fault, int):
                    return self._reply(fault, {"Retry-After": "0"} if fault == 429 else {}, b"fault", head, path, q)
                for k, v in server.require_query.items():
                    if query.get(k) != [v]:
                        return self._reply(403, {}, b"missing or bad SAS token", head, path, q)
                f = server.root / path.lstrip("/")
                if not f.is_file():
                    return self._reply(404, {}, b"not found", head, path, q)
                data = f.read_bytes()
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    a, _, b = rng[6:].split(",")[0].partition("-")
                    start = int(a)
                    if start >= len(data):  # S3 and Azure answer 416 Range Not Satisfiable
                        return self._reply(416, {"Content-Range": f"bytes */{len(data)}"}, b"", head, path, q)
                    end = min(int(b) if b else len(data) - 1, len(data) - 1)
                    body = data[start:end + 1]
                    return self._reply(206, {"Accept-Ranges": "bytes", "Content-Type": "image/tiff",
                                             "Content-Range": f"bytes {start}-{end}/{len(data)}"}, body, head, path, q)
                return self._reply(200, {"Accept-Ranges": "bytes", "Content-Type": "image/tiff"}, data, head, path, q)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def requests_for(self, path: str, method: str | None = None) -> list[tuple[str, str, str, int]]:
        with self.lock:
            return [r for r in self.log if r[1] == path and (method is None or r[0] == method)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def files(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    srv = FileServer(root)
    yield srv
    srv.close()


# ---------------------------------------------------------------- STAC API


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stac_api(tmp_path: Path):
    """stac_api(items) -> the URL of a `rustac serve` STAC API holding those item dicts."""
    exe = shutil.which("rustac")
    if exe is None:
        pytest.skip("the rustac CLI is not installed (pip install rustac)")
    procs: list[subprocess.Popen] = []

    def start(items: list[dict[str, Any]]) -> str:
        path = tmp_path / f"items-{len(procs)}.json"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
        port = _free_port()
        proc = subprocess.Popen([exe, "serve", "--create-collections", "-a", f"127.0.0.1:{port}", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        for _ in range(250):  # at most ~5 s
            try:
                with urllib.request.urlopen(url + "/", timeout=1) as r:
                    if r.status == 200:
                        return url
            except OSError:
                time.sleep(0.02)
            if proc.poll() is not None:
                break
        raise RuntimeError(f"rustac serve did not start on {url}")

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()


# ---------------------------------------------------------------- data builders


def write_cog(path: Path, data: np.ndarray, *, crs: str = CRS, x0: float = X0, y0: float = Y0, res: float = 10.0,
              nodata: float | None = 0) -> Path:
    """A tiled, overview-free GeoTIFF (COG layout) of a (H, W) array."""
    import rasterio
    from affine import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = data.shape
    with rasterio.open(path, "w", driver="COG", width=w, height=h, count=1, dtype=data.dtype, crs=crs,
                       transform=Affine(res, 0, x0, 0, -res, y0), nodata=nodata, blocksize=128,
                       overviews="NONE", compress="DEFLATE") as dst:
        dst.write(data, 1)
    return path


def scene_bbox(crs: str = CRS, x0: float = X0, y0: float = Y0, size_m: float = SCENE_PX * 10.0) -> list[float]:
    from rasterio.warp import transform_bounds

    return list(transform_bounds(crs, "EPSG:4326", x0, y0 - size_m, x0 + size_m, y0, densify_pts=21))


def make_item(item_id: str, when: str, assets: dict[str, dict[str, Any]], *, collection: str = "s2",
              cloud: float | None = 5.0, bbox: list[float] | None = None, **props: Any) -> dict[str, Any]:
    bbox = bbox or scene_bbox()
    w, s, e, n = bbox
    properties: dict[str, Any] = {"datetime": when, **props}
    if cloud is not None:
        properties["eo:cloud_cover"] = cloud
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "bbox": bbox, "properties": properties, "links": [], "assets": assets,
    }


def asset(href: str, *, scale: float | None = None, offset: float | None = None,
          nodata: float | None = 0) -> dict[str, Any]:
    band: dict[str, Any] = {}
    if nodata is not None:
        band["nodata"] = nodata
    if scale is not None:
        band["scale"] = scale
    if offset is not None:
        band["offset"] = offset
    out: dict[str, Any] = {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized"}
    if band:
        out["raster:bands"] = [band]
    return out


@pytest.fixture(autouse=True)
def _fresh_cache():
    raster_cache.clear()
    yield
    raster_cache.clear()


@pytest.fixture
def stac_plugin():
    """The plugin registered for this test, whether or not its entry point is installed."""
    load_plugins()
    added = not pm.is_registered(rs_embed_stac)
    if added:
        pm.register(rs_embed_stac, name="stac-test")
    yield rs_embed_stac
    if added:
        pm.unregister(rs_embed_stac)


def publish(files: FileServer, name: str, data: np.ndarray, **cog: Any) -> str:
    """Write a COG under the file server's root; its http href."""
    write_cog(files.root / name, data, **cog)
    return f"{files.url}/{name}"


@pytest.fixture
def kit() -> SimpleNamespace:
    """The builders and constants above, for test modules (importlib mode cannot import conftest)."""
    return SimpleNamespace(CRS=CRS, X0=X0, Y0=Y0, SCENE_PX=SCENE_PX, GRID=GRID, write_cog=write_cog,
                           scene_bbox=scene_bbox, make_item=make_item, asset=asset,
                           publish=publish)


os.environ.setdefault("OMP_NUM_THREADS", "2")
