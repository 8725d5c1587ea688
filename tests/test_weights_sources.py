"""Weights outside the Hub (WeightsSpec.from_url, against a loopback HTTP server) and Hub files whose
sha256 is left to the pinned commit (WeightsSpec.from_revision, against a faked Hub metadata call)."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from huggingface_hub import HfApi
from huggingface_hub import constants as hf_constants

import rs_embed_core.weights as W
from rs_embed_core.card import WeightsSpec
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.testing import build_hf_cache, fake_hub_lfs, offline_hub

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB: more than one read chunk
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class FileServer:
    """A loopback HTTP server: path -> bytes, with Range support; records each request's Range header.
    `lie` serves other bytes of the same length (a mirror that changed the file)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}  # path -> Location
        self.requests: list[tuple[str, str | None]] = []
        self.lie = False
        self.cut_once: int | None = None  # the next response stops after this many bytes (a dropped connection)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                if server.lie:
                    body = bytes(255 - b for b in body)
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if server.cut_once is not None:
                    self.wfile.write(body[start:start + server.cut_once])
                    server.cut_once = None
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a client that gives up mid-body (the tests that cut or lie) is expected: no traceback on the console
        self.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FileServer]:
    s = FileServer()
    s.files["/w/model.pth"] = PAYLOAD
    yield s
    s.close()


@pytest.fixture
def online(tmp_path, monkeypatch):
    """Not offline, no weights dir, rs-embed cache under tmp_path/rs."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RS_EMBED_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("RS_EMBED_CACHE", str(tmp_path / "rs"))
    monkeypatch.delenv("RS_EMBED_WEIGHTS_DIR", raising=False)
    return tmp_path


def url_spec(server: FileServer, path: str = "/w/model.pth", digest: str = DIGEST, size: int = len(PAYLOAD)) -> WeightsSpec:
    return WeightsSpec.from_url(server.url(path), filename="model.pth", sha256=digest, size=size, license="test")


# --------------------------------------------------------------------------- from_url


def test_from_url_accepts_https_and_loopback_http_only():
    spec = WeightsSpec.from_url("https://zenodo.org/records/1/files/w.pth", filename="w.pth", sha256=DIGEST,
                                size=10, license="cc-by-4.0")
    assert (spec.repo_id, spec.revision, spec.url, spec.size) == ("url/zenodo.org", DIGEST[:40], spec.url, 10)
    d = spec.describe()  # what describe / manifests show
    assert (d["url"], d["size"], d["sha256"], d["repo_id"]) == (spec.url, 10, DIGEST, "url/zenodo.org")
    for bad in ("http://example.org/w.pth", "ftp://127.0.0.1/w.pth", "https://user:pw@example.org/w.pth"):
        with pytest.raises(SpecError):
            WeightsSpec.from_url(bad, filename="w.pth", sha256=DIGEST, size=10, license="x")
    with pytest.raises(SpecError, match="full 64-hex"):
        WeightsSpec.from_url("https://example.org/w.pth", filename="w.pth", sha256=DIGEST[:8], size=10, license="x")
    with pytest.raises(SpecError, match="size"):
        WeightsSpec.from_url("https://example.org/w.pth", filename="w.pth", sha256=DIGEST, size=0, license="x")


def test_url_download_lands_in_content_addressed_cache_and_is_verified_once(online, server):
    spec = url_spec(server)
    path = W.weights_file(spec)
    assert path == online / "rs" / "url" / DIGEST / "model.pth"
    assert path.read_bytes() == PAYLOAD
    assert not path.with_name("model.pth.part").exists()
    assert server.requests == [("/w/model.pth", None)]
    assert W.file_digest(path) == DIGEST  # recorded while streaming
    calls = []
    orig = W._sha256
    W._sha256 = lambda p: calls.append(p) or orig(p)  # type: ignore[assignment]
    try:
        assert W.weights_file(spec) == path  # from the cache: no request, no re-hash
    finally:
        W._sha256 = orig  # type: ignore[assignment]
    assert len(server.requests) == 1 and calls == []
    status = W.weights_status(spec)
    assert status["present"] and status["download"] == spec.url and status["cache"] == str(path)


def test_url_download_resumes_a_truncated_part_file(online, server):
    spec = url_spec(server)
    dest = online / "rs" / "url" / DIGEST / "model.pth"
    dest.parent.mkdir(parents=True)
    dest.with_name("model.pth.part").write_bytes(PAYLOAD[:300_000])
    assert W.weights_file(spec).read_bytes() == PAYLOAD
    assert server.requests == [("/w/model.pth", "bytes=300000-")]


def test_url_download_dropped_connection_resumes_within_the_same_call(online, server):
    server.cut_once = 400_000
    assert W.weights_file(url_spec(server)).read_bytes() == PAYLOAD
    assert server.requests == [("/w/model.pth", None), ("/w/model.pth", "bytes=400000-")]


def test_url_download_digest_mismatch_removes_the_file_and_names_both_digests(online, server):
    server.lie = True
    spec = url_spec(server)
    with pytest.raises(WeightsError) as err:
        W.weights_file(spec)
    wrong = hashlib.sha256(bytes(255 - b for b in PAYLOAD)).hexdigest()
    msg = str(err.value)
    assert DIGEST in msg and wrong in msg and spec.url in msg
    folder = online / "rs" / "url" / DIGEST
    assert not (folder / "model.pth").exists() and not (folder / "model.pth.part").exists()
    server.lie = False  # the mirror is fixed: the next run downloads afresh
    assert W.weights_file(spec).read_bytes() == PAYLOAD


def test_url_download_follows_redirects_but_never_to_plain_http(online, server):
    server.redirects["/moved.pth"] = server.url("/w/model.pth")  # loopback http -> loopback http: allowed
    assert W.weights_file(url_spec(server, "/moved.pth")).read_bytes() == PAYLOAD
    server.redirects["/away.pth"] = "http://example.org/model.pth"
    other = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(WeightsError, match="refused redirect .* to http://example.org/model.pth"):
        W.weights_file(url_spec(server, "/away.pth", digest=other, size=5))


def test_url_download_404_names_the_url(online, server):
    spec = url_spec(server, "/missing.pth")
    with pytest.raises(WeightsError, match=r"HTTP 404") as err:
        W.weights_file(spec)
    assert spec.url in str(err.value)


@pytest.mark.parametrize("size", [len(PAYLOAD) - 1, len(PAYLOAD) + 1])
def test_url_download_size_mismatch_keeps_nothing(online, server, size):
    spec = url_spec(server, size=size)
    with pytest.raises(WeightsError, match=rf"expected {size} bytes, the server has {len(PAYLOAD)}") as err:
        W.weights_file(spec)
    assert spec.url in str(err.value)
    folder = online / "rs" / "url" / DIGEST
    assert not (folder / "model.pth").exists() and not (folder / "model.pth.part").exists()


def test_url_download_offline_says_where_to_put_the_file(online, server, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = url_spec(server)
    with pytest.raises(WeightsError, match="Place the file") as err:
        W.weights_file(spec)
    msg = str(err.value)
    assert spec.url in msg and str(online / "rs" / "url" / DIGEST / "model.pth") in msg and DIGEST in msg
    assert "RS_EMBED_WEIGHTS_DIR" in msg and server.requests == []
    # placed where the message says (the weights dir): found, verified, still no request
    wdir = online / "wd" / "url__127.0.0.1"
    wdir.mkdir(parents=True)
    (wdir / "model.pth").write_bytes(PAYLOAD)
    monkeypatch.setenv("RS_EMBED_WEIGHTS_DIR", str(online / "wd"))
    assert W.weights_file(spec) == wdir / "model.pth" and server.requests == []


def test_url_download_into_an_unwritable_cache_is_a_weights_error(online, server, monkeypatch):
    (online / "ro").write_text("a file where the cache folder should be")
    monkeypatch.setenv("RS_EMBED_CACHE", str(online / "ro"))
    spec = url_spec(server)
    with pytest.raises(WeightsError, match="download failed") as err:
        W.weights_file(spec)
    assert spec.url in str(err.value) and server.requests == []


def test_url_cache_file_corrupted_later_is_removed_on_load(online, server):
    spec = url_spec(server)
    path = W.weights_file(spec)
    path.write_bytes(b"x" * len(PAYLOAD))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        W.weights_file(spec)
    assert not path.exists()


# --------------------------------------------------------------------------- digest from the pinned revision

REPO, REV, FILE = "acme/no-published-digest", "89abcdef0123456789abcdef0123456789abcdef", "model.safetensors"


def test_digest_from_revision_is_read_at_the_pinned_commit_recorded_and_used_offline(online, monkeypatch):
    spec = WeightsSpec.from_revision(REPO, REV, FILE, "test")
    assert spec.sha256 is None and spec.digest_from_revision and W.pinned_digest(spec) is None
    assert spec.describe()["sha256"] is None and REV in spec.describe()["sha256_source"]
    wdir = online / "wd"
    (wdir / "acme__no-published-digest").mkdir(parents=True)
    (wdir / "acme__no-published-digest" / FILE).write_bytes(PAYLOAD)
    monkeypatch.setenv("RS_EMBED_WEIGHTS_DIR", str(wdir))
    with fake_hub_lfs({(REPO, REV, FILE): DIGEST}) as calls:
        assert W.weights_file(spec).read_bytes() == PAYLOAD
    assert calls == [(REPO, REV, FILE)]
    assert W.pinned_digest(spec) == DIGEST and W.weights_status(spec)["sha256_recorded"] == DIGEST

    # later, offline, from the Hub cache: verified against the recorded digest, the Hub is not asked
    monkeypatch.setattr(HfApi, "get_paths_info", lambda *a, **k: pytest.fail("asked the Hub offline"))
    with offline_hub(online / "hub"):
        build_hf_cache(online / "hub", REPO, REV, {FILE: PAYLOAD})
        assert W.weights_file(spec).read_bytes() == PAYLOAD
        build_hf_cache(online / "hub", REPO, REV, {FILE: PAYLOAD[:-1] + b"!"})
        with pytest.raises(WeightsError, match="sha256 mismatch") as err:
            W.weights_file(spec)
        assert DIGEST in str(err.value) and REV in str(err.value)


def test_digest_from_revision_rejects_bytes_that_differ_from_the_hub_digest(online, monkeypatch):
    spec = WeightsSpec.from_revision(REPO, REV, FILE, "test")
    other = hashlib.sha256(b"the file the commit really holds").hexdigest()
    (online / "wd").mkdir()
    (online / "wd" / FILE).write_bytes(PAYLOAD)
    monkeypatch.setenv("RS_EMBED_WEIGHTS_DIR", str(online / "wd"))
    with fake_hub_lfs({(REPO, REV, FILE): other}), pytest.raises(WeightsError, match="sha256 mismatch") as err:
        W.weights_file(spec)
    assert other in str(err.value) and DIGEST in str(err.value)
    with fake_hub_lfs({}), pytest.raises(WeightsError, match="no such file at this revision"):
        W.weights_file(WeightsSpec.from_revision(REPO, REV, "other.pth", "test"))


def test_digest_from_revision_offline_without_record_says_what_to_do(online, monkeypatch):
    spec = WeightsSpec.from_revision(REPO, REV, FILE, "test")
    monkeypatch.setattr(HfApi, "get_paths_info", lambda *a, **k: pytest.fail("asked the Hub offline"))
    with offline_hub(online / "hub"):
        build_hf_cache(online / "hub", REPO, REV, {FILE: PAYLOAD})
        with pytest.raises(WeightsError, match="not recorded on this machine") as err:
            W.weights_file(spec)
    assert "Place the file" in str(err.value) and REV in str(err.value)


def test_digest_from_revision_taken_from_a_copied_hf_cache_blob(online, monkeypatch):
    """huggingface_hub stores an LFS file as blobs/<sha256> (the Hub's X-Linked-Etag) linked from the snapshot."""
    spec = WeightsSpec.from_revision(REPO, REV, FILE, "test")
    repo = online / "hub" / "models--acme--no-published-digest"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / DIGEST).write_bytes(PAYLOAD)
    snap = repo / "snapshots" / REV
    snap.mkdir(parents=True)
    (snap / FILE).symlink_to(Path("..") / ".." / "blobs" / DIGEST)
    monkeypatch.setattr(HfApi, "get_paths_info", lambda *a, **k: pytest.fail("asked the Hub offline"))
    with offline_hub(online / "hub"):
        assert W.weights_file(spec).read_bytes() == PAYLOAD
    assert W.pinned_digest(spec) == DIGEST


def test_digest_from_revision_is_for_hub_files_only():
    with pytest.raises(SpecError):
        WeightsSpec("local", REV, FILE, None, "x", path="/tmp/x.pth")
    with pytest.raises(SpecError):
        WeightsSpec("url/example.org", REV, FILE, None, "x", url="https://example.org/x", size=3)
