"""One pinned file over HTTPS: resumable, atomic, size- and sha256-checked (standard library only).

`fetch_pinned(url, dest, size=, sha256=)` writes `dest` only once its bytes are complete and match:
the transfer goes to `dest.part`, resumes from there with an HTTP Range request (after an
interrupted transfer, or in a later run), is hashed as it streams, and is renamed onto `dest` when
size and sha256 agree. A file of the wrong size or digest is removed (not resumed from) and the
error names the URL and both values. Redirects may not leave https (plain http is accepted only for
loopback hosts: a local mirror or the tests' file server). Used by `weights.weights_file` for
`WeightsSpec.from_url` files; the caller records the verified digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from .card import LOOPBACK_HOSTS
from .errors import WeightsError

__all__ = ["fetch_pinned"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_USER_AGENT = "rs-embed (weights download)"


def _allowed(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (Zenodo, file hosts use them) but never from https down to plain http."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if not _allowed(newurl):
            raise WeightsError(f"refused redirect from {req.full_url} to {newurl}: weights are fetched over https only")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(url: str) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [_SafeRedirects()]
    if urlsplit(url).hostname in LOOPBACK_HOSTS:  # never send this machine's traffic through a proxy
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One downloader per file across processes (flock); a second one waits and then finds the file."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        try:
            import fcntl
        except ImportError:  # no flock on this platform: concurrent downloads are then the caller's duty
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _hash_prefix(part: Path, length: int) -> hashlib._Hash:
    h = hashlib.sha256()
    with open(part, "rb") as f:
        remaining = length
        while remaining:
            block = f.read(min(CHUNK, remaining))
            if not block:
                break
            h.update(block)
            remaining -= len(block)
    return h


def _content_range_total(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) of a `Content-Range: bytes START-END/TOTAL` header; None where absent or '*'."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = span.partition("-")[0]
    return (int(start) if start.isdigit() else None), (int(total) if total.isdigit() else None)


def _size_mismatch(url: str, part: Path, expected: int, got: int | str) -> WeightsError:
    part.unlink(missing_ok=True)
    return WeightsError(f"size mismatch for weights at {url}: expected {expected} bytes, the server has {got}. "
                        "It serves a different file than the one pinned; nothing was kept.")


def _attempt(url: str, part: Path, size: int, timeout_s: float) -> hashlib._Hash | None:
    """One request: append to `part` from where it ends. Returns the running hash when `part` holds
    exactly `size` bytes, None when the transfer stopped early (resume on the next attempt)."""
    have = part.stat().st_size if part.is_file() else 0
    if have > size:
        part.unlink()
        have = 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = _opener(url).open(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after `have`: complete already, or a stale part to redo
            exc.close()
            if have == size:
                return _hash_prefix(part, have)
            part.unlink()
            return None
        raise
    with resp:
        if resp.status == 206:
            start, total = _content_range_total(resp.headers.get("Content-Range"))
            if total is not None and total != size:
                raise _size_mismatch(url, part, size, total)
            if start != have:  # not the range asked for: start over
                part.unlink(missing_ok=True)
                return None
            h = _hash_prefix(part, have)
            mode = "ab"
        else:  # 200: the whole file (a server without ranges)
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) != size:
                raise _size_mismatch(url, part, size, int(length))
            h, have, mode = hashlib.sha256(), 0, "wb"
        with open(part, mode) as out:
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                have += len(block)
                if have > size:
                    out.close()
                    raise _size_mismatch(url, part, size, f"more than {size}")
                out.write(block)
                h.update(block)
    return h if have == size else None


def fetch_pinned(url: str, dest: Path, *, size: int, sha256: str, attempts: int = 3, timeout_s: float = 60.0) -> str:
    """Download `url` to `dest` (see the module docstring); return the verified sha256."""
    if not _allowed(url):
        raise WeightsError(f"weights url must be https (plain http only to loopback hosts), got {url!r}")
    part = dest.with_name(dest.name + ".part")
    with _exclusive(dest.with_name(dest.name + ".lock")):
        if dest.is_file():  # another process finished it while we waited; the caller verifies it
            return ""
        last: BaseException | None = None
        for n in range(attempts):
            try:
                h = _attempt(url, part, size, timeout_s)
            except urllib.error.HTTPError as exc:
                raise WeightsError(f"download of weights from {url} failed: HTTP {exc.code} {exc.reason}") from None
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, cut short
                last = exc
                log.info("download of %s interrupted (attempt %d/%d): %s", url, n + 1, attempts, exc)
                continue
            if h is None:
                continue
            got = h.hexdigest()
            if got != sha256:
                part.unlink(missing_ok=True)
                raise WeightsError(f"sha256 mismatch for weights downloaded from {url}: expected {sha256}, got {got}. "
                                   "The server sent different bytes than the pinned file; the download was removed.")
            os.replace(part, dest)
            return got
        have = part.stat().st_size if part.is_file() else 0
        cause = f": {type(last).__name__}: {last}" if last is not None else ""
        raise WeightsError(f"download of weights from {url} did not complete ({have} of {size} bytes after "
                           f"{attempts} attempts{cause}); the partial file {part} is kept and the next run resumes it")
