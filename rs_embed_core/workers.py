"""Stage 2's workers: fetch + prepare in threads or in worker processes, sized to the machine.

Decoding, compositing and the preprocessing chain are numpy and GDAL work that holds the GIL for much
of its time, so a provider that reads local files (`parallel = "processes"` on the provider) runs
them in worker processes; network providers, whose time is spent waiting, run them in threads
(`max_concurrency` of them by default). `workers=` overrides the count.

Each worker process belongs to one thread of the fetch pool and runs one task at a time, so when a
process dies (killed, out of memory) exactly the item it held fails, named, and a fresh process takes
its place. Processes ignore SIGINT: Ctrl-C reaches the main process, which terminates them; a worker
whose parent is gone sees its pipe close and exits. The start method is "fork" on Linux (the worker
inherits the registered plugins and the provider without pickling; no model is ever run in it) and
"spawn" elsewhere, or `$RS_EMBED_WORKER_START`; with "spawn" the provider must be picklable and a
script must guard its entry point with `if __name__ == "__main__":`.
"""

from __future__ import annotations

import atexit
import itertools
import mmap
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import weakref
from multiprocessing.connection import wait
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any, Callable

from .errors import ProviderError, SpecError

START_ENV = "RS_EMBED_WORKER_START"
_KILL_GRACE_S = 2.0


class WorkerDiedError(ProviderError):
    """The worker process that held this item died before answering (killed, out of memory, crashed)."""


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_workers(workers: Any) -> int | None:
    """None (sized to the machine) or an int >= 1; anything else is a SpecError before any work."""
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SpecError(f"workers must be None (one per CPU) or an int >= 1, got {workers!r}")
    return workers


def compute_bound(provider: Any) -> bool:
    """The provider's fetches are CPU work (decoding, compositing: `parallel = "processes"`), not I/O waits."""
    return getattr(provider, "parallel", "threads") == "processes"


def plan_workers(provider: Any, workers: int | None, tasks: int) -> tuple[int, str]:
    """(how many, "processes" | "threads") for `tasks` fetches from `provider`."""
    processes = compute_bound(provider)
    if workers is None:
        workers = available_cpus() if processes else int(getattr(provider, "max_concurrency", 4))
    n = max(1, min(workers, tasks))
    return n, "processes" if processes and n > 1 else "threads"


def _start_method() -> str:
    method = os.environ.get(START_ENV, "").strip() or ("fork" if sys.platform.startswith("linux") else "spawn")
    if method not in multiprocessing.get_all_start_methods():
        raise SpecError(f"${START_ENV}={method!r} is not a start method here; use one of "
                        f"{multiprocessing.get_all_start_methods()}")
    return method


def _readable(err: BaseException) -> BaseException:
    """`err` if it survives a pickle round trip, else a ProviderError that says what it was."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - any failure to travel
        sub = ProviderError(f"{type(err).__name__}: {err}")
        sub.attempts = getattr(err, "attempts", 1)  # type: ignore[attr-defined]
        return sub


def _travel(result: tuple[Any, int, Any]) -> tuple[Any, int, Any]:
    """A task result whose errors can all be unpickled by the parent."""
    raster, attempts, prepared = result
    if isinstance(raster, BaseException):
        raster = _readable(raster)
    if prepared:
        from .prepare import Prepared

        prepared = {k: (Prepared(p.fetched, p.plan, p.prepped, (p.error[0], _readable(p.error[1])))
                        if p.error is not None else p) for k, p in prepared.items()}
    return raster, attempts, prepared


_MAX_PROVIDERS = 8  # providers a worker keeps installed (least recently installed dropped)
_CHILD_RASTER_CACHE = 32 * 2**20  # a worker's own raster cache: small, there are many workers
# A worker's GDAL block cache. GDAL's default is 5 % of the machine's RAM in *each* process: 16 workers could
# hold 80 % of it in decompressed blocks over a long export. Requests reach workers by locality (fetching.
# locality), so one worker's working set is a few cells' blocks. A GDAL_CACHEMAX you set wins.
WORKER_GDAL_CACHE = 256 * 2**20


def _cap_gdal_cache() -> None:
    if "GDAL_CACHEMAX" in os.environ:
        return
    os.environ["GDAL_CACHEMAX"] = str(WORKER_GDAL_CACHE)  # read by GDAL at its first block read here
    if "rasterio" in sys.modules:  # forked from a process whose GDAL may have sized its cache already
        from rasterio.env import set_gdal_config

        set_gdal_config("GDAL_CACHEMAX", WORKER_GDAL_CACHE)


def _child_main(conn: Any, provider: Any, task: Callable[..., tuple[Any, int, Any]]) -> None:
    """A worker's loop. Messages: ("install", token, pickled provider) -> True or the error;
    ("task", token, payload) -> task(provider, *payload); None -> exit. `provider` (token 0) came by fork."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    from . import fetching
    from .providers import reading

    reading.forget_datasets()  # handles inherited through fork share file offsets with the parent
    _cap_gdal_cache()
    fetching.raster_cache = fetching.RasterCache(_CHILD_RASTER_CACHE)
    if "torch" in sys.modules:  # a forked copy of a process that ran torch: no intra-op thread pool here
        sys.modules["torch"].set_num_threads(1)
    providers: dict[int, Any] = {0: provider} if provider is not None else {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if msg is None:
            return
        kind, token, body = msg
        if kind == "install":
            try:
                providers[token] = pickle.loads(body)
                while len(providers) > _MAX_PROVIDERS:
                    providers.pop(next(iter(providers)))
                reply: Any = True
            except Exception as exc:  # noqa: BLE001 - e.g. a class this process cannot import
                reply = f"{type(exc).__name__}: {exc}"
            conn.send(reply)
            continue
        try:
            result = _travel(task(providers[token], *body))
        except Exception as exc:  # noqa: BLE001 - a bug in the task fails its item, not the worker
            result = (_readable(ProviderError(f"{type(exc).__name__} in a worker process: {exc}")), 1, None)
        try:
            _send(conn, result)
        except (EOFError, OSError):
            return


# Results travel as a small pickle (protocol 5) whose arrays go out of band. Large arrays (a prepared
# input is megabytes) are copied once into an anonymous shared-memory file (memfd) whose descriptor is
# passed over the pipe's socket: the parent maps it and rebuilds the arrays on the mapping, with no copy
# and almost no time holding the GIL (a pipe costs the parent ~1 ms per MB in copies and small reads,
# which capped a 16-worker data path). The memory is freed when the last array on it is. Small buffers,
# and every buffer where memfd is missing (not Linux) or refused (no memory), travel through the pipe.

_SHARED_MIN = 1 << 16  # bytes: smaller buffers are cheaper inline
_ALIGN = 64


def _offsets(sizes: list[int]) -> tuple[list[int], int]:
    offs, end = [], 0
    for n in sizes:
        offs.append(end)
        end += -(-n // _ALIGN) * _ALIGN
    return offs, end


def _shared_file(views: list[memoryview]) -> int | None:
    """A memfd holding `views` back to back (aligned), or None where shared memory is unavailable."""
    if not hasattr(os, "memfd_create"):
        return None
    offs, total = _offsets([v.nbytes for v in views])
    try:
        fd = os.memfd_create("rs-embed-batch", os.MFD_CLOEXEC)
    except OSError:
        return None
    try:
        os.ftruncate(fd, total)
        # Written, not mapped: 0.10 against 0.24 ms CPU for 600 KB, and a full tmpfs is an OSError here. Every
        # page the parent maps holds written bytes (the gaps are < _ALIGN), so it never faults on a hole (SIGBUS).
        for off, v in zip(offs, views):
            done = 0
            while done < v.nbytes:
                n = os.pwrite(fd, v[done:], off + done)
                if n <= 0:
                    raise OSError("shared memory file: nothing written")
                done += n
    except OSError:
        os.close(fd)
        return None
    return fd


def _send(conn: Any, obj: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    big = [k for k, v in enumerate(views) if v.nbytes >= _SHARED_MIN]
    fd = _shared_file([views[k] for k in big]) if big else None
    if fd is None:
        big = []
    conn.send_bytes(pickle.dumps((head, [v.nbytes for v in views], big)))
    if fd is not None:
        try:
            send_handle(conn, fd, 0)
        finally:
            os.close(fd)
    shared = set(big)
    for k, v in enumerate(views):
        if k not in shared:
            conn.send_bytes(v)


def _recv(conn: Any) -> Any:
    head, sizes, big = pickle.loads(conn.recv_bytes())
    buffers: list[Any] = [None] * len(sizes)
    if big:
        fd = recv_handle(conn)
        offs, total = _offsets([sizes[k] for k in big])
        try:
            mm = mmap.mmap(fd, total, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        finally:
            os.close(fd)
        view = memoryview(mm)  # the arrays keep the mapping alive; it goes when they do
        for k, off in zip(big, offs):
            buffers[k] = view[off:off + sizes[k]]
    for k, n in enumerate(sizes):
        if buffers[k] is not None:
            continue
        buf = bytearray(n)  # writable, so the arrays rebuilt on it are too
        if n:
            conn.recv_bytes_into(buf)
        else:
            conn.recv_bytes()
        buffers[k] = buf
    return pickle.loads(head, buffers=buffers)


class ProcessWorker:
    """One child process that runs `task(provider, *payload)` for the thread that owns it.

    The provider is either the one the process was forked with (token 0, a per-call worker) or one
    installed by `bind` (pickled once per worker and provider: pooled workers serve many calls).
    """

    def __init__(self, ctx: Any, task: Callable[..., tuple[Any, int, Any]], provider: Any = None) -> None:
        self._ctx, self._task, self._forked_with = ctx, task, provider
        self.closing = False
        self._token, self._pickled = 0, b""
        self._start()

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(target=_child_main, args=(child, self._forked_with, self._task),
                                      name="rs-embed-worker", daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.installed: set[int] = {0} if self._forked_with is not None else set()

    def bind(self, token: int, pickled: bytes) -> None:
        """Serve provider `token` (its pickle installed on first use) until bound again."""
        self._token, self._pickled = token, pickled

    def _install(self) -> str | None:
        if self._token in self.installed:
            return None
        self.conn.send(("install", self._token, self._pickled))
        ready = wait([self.conn, self.proc.sentinel])
        if self.conn not in ready:
            raise EOFError
        reply = self.conn.recv()
        if reply is not True:
            return str(reply)
        self.installed.add(self._token)
        return None

    def __call__(self, *payload: Any) -> tuple[Any, int, Any]:
        try:
            why = self._install()
            if why is not None:
                err = ProviderError(f"the worker process cannot load the provider: {why}")
                err.attempts = 1  # type: ignore[attr-defined]
                return err, 1, None
            self.conn.send(("task", self._token, payload))
            ready = wait([self.conn, self.proc.sentinel])
            if self.conn in ready:
                return _recv(self.conn)
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        return self._died()

    def _died(self) -> tuple[Any, int, Any]:
        self.proc.join(_KILL_GRACE_S)
        code = self.proc.exitcode
        how = {-9: " (SIGKILL: killed, e.g. by the out-of-memory killer)", -15: " (SIGTERM)"}.get(code or 0, "")
        self.conn.close()
        if not self.closing:
            self._start()  # a fresh process serves the next items
        err = WorkerDiedError(f"the worker process fetching this item died with exit code {code}{how}")
        err.attempts = 1  # type: ignore[attr-defined]
        return err, 1, None

    def close(self) -> None:
        """Ask the child to exit; terminate it if it is busy (a hung read), kill it if it ignores that."""
        self.closing = True
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(0.2)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(_KILL_GRACE_S)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(_KILL_GRACE_S)
        self.conn.close()


def _context() -> Any:
    return multiprocessing.get_context(_start_method())


def process_workers(n: int, provider: Any, task: Callable[..., tuple[Any, int, Any]]) -> list[ProcessWorker]:
    """`n` worker processes forked with `provider` for one call (the fallback when the provider cannot
    be pickled into the pool's long-lived workers), all started here, before any pool thread runs."""
    ctx = _context()
    if ctx.get_start_method() != "fork":
        try:
            pickle.dumps(provider)
        except Exception as exc:  # noqa: BLE001
            raise SpecError(f"workers > 1 with start method {ctx.get_start_method()!r} needs a picklable "
                            f"provider; {type(provider).__name__} is not ({exc}). Pass workers=1.") from None
    started: list[ProcessWorker] = []
    try:
        for _ in range(n):
            started.append(ProcessWorker(ctx, task, provider))
    except BaseException:
        close_all(started)
        raise
    return started


class WorkerPool:
    """Worker processes kept for the life of the interpreter and lent to one fetch stream at a time.

    Starting a process costs tens to hundreds of milliseconds in a large parent (a loaded model, a CUDA
    context), more than a whole batch call; so processes outlive the call that started them. Each
    stream's provider is pickled once and installed once per worker; a provider that cannot be pickled
    (or unpickled there) gets per-call workers forked with it instead (`take` returns None).
    """

    def __init__(self, task: Callable[..., tuple[Any, int, Any]]) -> None:
        self._task = task
        self._idle: list[ProcessWorker] = []
        self._lock = threading.Lock()
        self._tokens: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._next = itertools.count(1)
        atexit.register(self.shutdown)

    def _token(self, provider: Any) -> int | None:
        try:
            with self._lock:
                tok = self._tokens.get(provider)
                if tok is None:
                    tok = self._tokens[provider] = next(self._next)
                return tok
        except TypeError:  # not weak-referenceable: no stable identity to install it under
            return None

    def take(self, n: int, provider: Any) -> list[ProcessWorker] | None:
        token = self._token(provider)
        if token is None:
            return None
        try:
            pickled = pickle.dumps(provider)
        except Exception:  # noqa: BLE001 - not picklable: per-call workers forked with it
            return None
        with self._lock:
            alive = [w for w in self._idle if w.proc.is_alive()]
            taken, self._idle = alive[:n], alive[n:]
        ctx = _context()
        try:
            while len(taken) < n:
                taken.append(ProcessWorker(ctx, self._task))
        except BaseException:
            close_all(taken)
            raise
        for w in taken:
            w.bind(token, pickled)
        try:
            refused = [why for why in (w._install() for w in taken) if why is not None]
        except (EOFError, OSError):  # a worker died meanwhile
            close_all(taken)
            return None
        if refused:  # e.g. its class lives in a module those processes cannot import: fork with it instead
            self.give_back(taken)
            return None
        return taken

    def give_back(self, workers: list[ProcessWorker]) -> None:
        """Idle workers (every task answered) return to the pool; others must be closed instead."""
        with self._lock:
            self._idle.extend(w for w in workers if w.proc.is_alive() and not w.closing)

    def shutdown(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        close_all(idle)


def close_all(workers: list[ProcessWorker]) -> None:
    """Close every worker at once (a busy one is terminated), so shutdown takes one grace period."""
    for w in workers:
        w.closing = True
    threads = [threading.Thread(target=w.close, daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


_shared: dict[Any, WorkerPool] = {}


def shared_pool(task: Callable[..., tuple[Any, int, Any]]) -> WorkerPool:
    """The process-wide pool of long-lived workers for `task` (created on first use)."""
    pool = _shared.get(task)
    if pool is None:
        pool = _shared[task] = WorkerPool(task)
    return pool
