"""Fetching pixels for the runner: concurrently, ahead of inference, with timeouts, retries and a cache.

- Workers are daemon threads, so a provider call that never returns (a hung server) cannot keep
  the process alive or stop Ctrl-C: the consumer waits on an event, which KeyboardInterrupt
  breaks, and the stuck call is abandoned.
- Each attempt runs under the provider's `fetch_timeout_s` (None = no limit; default
  DEFAULT_FETCH_TIMEOUT_S, or $RS_EMBED_FETCH_TIMEOUT); a timeout is a FetchTimeoutError, which
  like every TransientProviderError (and builtin ConnectionError / TimeoutError) is retried
  with bounded backoff (`rs_embed_core.retry`). Other errors are final for that request.
- Rasters are cached by (provider instance, request key, provider.source_token(request)): a
  provider that can tell its data changed (the local provider: file size, mtime, ctime) never
  serves stale pixels.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import sys
import threading
import weakref
from collections import OrderedDict, deque
from typing import Any, Callable, Iterator, Sequence

import attrs

from .errors import FetchTimeoutError, ProviderError, RsEmbedError, TransientProviderError
from .providers import FetchRequest, Provider
from .raster import Raster, RasterHead, check_delivery
from .retry import DEFAULT_RETRY, RetryPolicy, with_retries

DEFAULT_FETCH_TIMEOUT_S = 600.0
TIMEOUT_ENV = "RS_EMBED_FETCH_TIMEOUT"


def fetch_timeout(provider: Provider) -> float | None:
    """The provider's `fetch_timeout_s` attribute, else $RS_EMBED_FETCH_TIMEOUT, else the default."""
    if hasattr(provider, "fetch_timeout_s"):
        t = provider.fetch_timeout_s  # type: ignore[attr-defined]
        return None if t is None else float(t)
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if raw:
        try:
            return float(raw) if float(raw) > 0 else None
        except ValueError:
            pass
    return DEFAULT_FETCH_TIMEOUT_S


# ---------------------------------------------------------------- raster cache


class RasterCache:
    """Fetched rasters by (provider instance, request key, source token), LRU-bounded by total bytes.

    Each provider object gets a token that is never reused (unlike `id()`, which a new object
    can inherit from a freed one), so one provider's pixels are never served for another's.
    """

    def __init__(self, max_bytes: int = 256 * 2**20, max_entries: int = 1024) -> None:
        # max_entries bounds what max_bytes does not see: each entry's objects (meta, grid, times: a few kB),
        # which for many tiny ROIs outweigh the pixels and made export memory grow with the ROI count
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._bytes = 0
        self._done: OrderedDict[tuple[int, str, str], Raster] = OrderedDict()
        self._tokens: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._next = itertools.count()
        self._lock = threading.Lock()

    def _token(self, provider: Provider) -> int | None:
        try:
            tok = self._tokens.get(provider)
            if tok is None:
                tok = self._tokens[provider] = next(self._next)
            return tok
        except TypeError:  # not weak-referenceable: do not cache its rasters
            return None

    def key(self, provider: Provider, req: FetchRequest) -> tuple[int, str, str] | None:
        with self._lock:
            tok = self._token(provider)
        if tok is None:
            return None
        source = getattr(provider, "source_token", None)
        return (tok, req.key, str(source(req)) if source is not None else "")

    def get(self, key: tuple[int, str, str] | None) -> Raster | None:
        if key is None:
            return None
        with self._lock:
            r = self._done.get(key)
            if r is not None:
                self._done.move_to_end(key)
            return r

    def put(self, key: tuple[int, str, str] | None, raster: Raster) -> None:
        if key is None:
            return
        with self._lock:
            if key in self._done or raster.data.nbytes > self.max_bytes:
                return
            self._done[key] = raster
            self._bytes += raster.data.nbytes
            while self._bytes > self.max_bytes or len(self._done) > self.max_entries:
                _, old = self._done.popitem(last=False)
                self._bytes -= old.data.nbytes

    def clear(self) -> None:
        with self._lock:
            self._done.clear()
            self._bytes = 0


raster_cache = RasterCache()


# ---------------------------------------------------------------- one request


def _classify(exc: BaseException) -> BaseException:
    """Builtin network failures become TransientProviderError; unknown errors a ProviderError."""
    if isinstance(exc, RsEmbedError):
        return exc
    if isinstance(exc, (ConnectionError, TimeoutError)):
        err: BaseException = TransientProviderError(f"{type(exc).__name__}: {exc}")
    else:
        err = ProviderError(f"{type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


class _CallThread:
    """A daemon thread that runs provider calls one at a time, so a caller can give up on one after a
    timeout. Idle ones are kept for the next calls of any thread: a fresh thread per fetch cost ~4 ms
    (5.8 -> 10 ms per remoteclip fetch + prepare here, GDAL and rasterio setting up per-thread state
    and the allocator handing the new thread memory it must fault in again). One left inside a call
    that timed out is abandoned, never reused."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[tuple[Callable[[], Raster], dict[str, Any], threading.Event] | None] = \
            queue.SimpleQueue()
        threading.Thread(target=self._serve, args=(self.inbox,), name="rs-embed-fetch-call", daemon=True).start()

    @staticmethod
    def _serve(inbox: queue.SimpleQueue) -> None:
        while True:
            job = inbox.get()
            if job is None:
                return
            fn, box, done = job
            try:
                box["raster"] = fn()
            except BaseException as exc:  # handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()
            del fn, box, done, job


_MAX_IDLE_CALL_THREADS = 64
_idle_call_threads: list[_CallThread] = []
_idle_lock = threading.Lock()


def _forget_call_threads() -> None:
    """In a forked child: the parent's threads did not come along."""
    global _idle_lock
    _idle_call_threads.clear()
    _idle_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_call_threads)


def _call_with_timeout(fn: Callable[[], Raster], timeout_s: float | None, what: str) -> Raster:
    if timeout_s is None:
        return fn()
    with _idle_lock:
        runner = _idle_call_threads.pop() if _idle_call_threads else None  # the last used: its state is warm
    if runner is None:
        runner = _CallThread()
    box: dict[str, Any] = {}
    done = threading.Event()
    runner.inbox.put((fn, box, done))
    if not done.wait(timeout_s):  # still inside the call: abandoned
        raise FetchTimeoutError(f"{what} did not finish within {timeout_s:g} s (the provider's fetch_timeout_s)")
    with _idle_lock:
        keep = len(_idle_call_threads) < _MAX_IDLE_CALL_THREADS
        if keep:
            _idle_call_threads.append(runner)
    if not keep:
        runner.inbox.put(None)
    if "error" in box:
        raise box["error"]
    return box["raster"]


def fetch_one(provider: Provider, req: FetchRequest, policy: RetryPolicy = DEFAULT_RETRY,
              timeout_s: float | None = None) -> tuple[Raster, int]:
    """(raster, attempts): from the cache, or from the provider with timeouts and retries.

    Errors come out classified (see `_classify`) with `.attempts` set.
    """
    try:
        key = raster_cache.key(provider, req)
    except Exception as exc:
        err = _classify(exc)
        err.attempts = 1  # type: ignore[attr-defined]
        raise err from exc
    hit = raster_cache.get(key)
    if hit is not None:
        return hit, 0
    name = getattr(provider, "name", type(provider).__name__)

    def attempt() -> Raster:
        try:
            raster = _call_with_timeout(lambda: provider.fetch(req), timeout_s, f"provider {name!r} fetch")
            # a provider that serves a product on its own grid (`native`) is checked for its bands only
            check_delivery(raster, None if getattr(provider, "native", False) else req.grid, req.sensor.bands,
                           f"provider {name!r}")
            return raster
        except Exception as exc:
            raise _classify(exc) from exc

    try:
        raster, attempts = with_retries(attempt, policy)
    except RsEmbedError as exc:
        if not hasattr(exc, "attempts"):
            exc.attempts = 1  # type: ignore[attr-defined]
        raise
    raster_cache.put(key, raster)
    return raster, attempts


def fetch_task(provider: Provider, req: FetchRequest, policy: RetryPolicy, timeout_s: float | None,
               specs: Sequence[tuple[Any, Any]] | None = None, strip: bool = False
               ) -> tuple[Raster | RasterHead | BaseException, int, dict | None]:
    """One unit of worker work: fetch `req`, then prepare every (key, PrepSpec) that needs only it.

    Returns (raster or classified error, attempts, {key: Prepared} or None); never raises. With
    `strip`, the fetched rasters come back as RasterHeads (no pixels): the consumer asked only for
    the prepared inputs, and a worker process then sends back just those.
    """
    try:
        raster, attempts = fetch_one(provider, req, policy, timeout_s)
    except RsEmbedError as exc:
        return exc, getattr(exc, "attempts", 1), None
    except BaseException as exc:  # never let a worker die silently
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return _classify(exc), 1, None
    if not specs:
        return raster, attempts, None
    from .prepare import prepare

    ready = {key: prepare(spec, [raster]) for key, spec in specs}
    if not strip:
        return raster, attempts, ready
    heads: dict[int, RasterHead] = {id(raster): RasterHead.of(raster)}
    for key, p in ready.items():
        if p.fetched is not None:
            head = heads.setdefault(id(p.fetched), RasterHead.of(p.fetched))
            ready[key] = attrs.evolve(p, fetched=head)
    return heads[id(raster)], attempts, ready


# ---------------------------------------------------------------- many requests, ahead of the consumer


# While a stream runs, the GIL is handed over every 0.25 ms instead of Python's 5 ms: each pool thread
# takes the GIL several times per item (send, wake, receive), and a thread that must wait out a busy
# holder's whole interval each time leaves its worker idle. On a 16-core GPU host this took the data path
# from 266 to 401 ROIs/s with 16 workers and from 32 to 46 with one (bench/bench_pipeline.py (a)).
_SWITCH_S = 0.00025
_switch_lock = threading.Lock()
_switch_users = 0  # streams running now (several threads may each run one)
_switch_saved = 0.005


def _short_switch(on: bool) -> None:
    """Enter (on) or leave a stream: the first in saves the interval and shortens it, the last out restores it."""
    global _switch_users, _switch_saved
    with _switch_lock:
        if on:
            if _switch_users == 0:
                _switch_saved = sys.getswitchinterval()
                sys.setswitchinterval(min(_switch_saved, _SWITCH_S))
            _switch_users += 1
        else:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


class Throttle:
    """How many fetch tasks of a stream may start while the model computes on the same CPUs.

    On a CPU device, torch's intra-op threads take every core; data workers that keep running beside
    them do not add throughput, they stall its parallel regions (a preempted thread holds up the rest):
    on 2 cores, a remoteclip forward ran 30 % slower beside 2 workers than alone. So the runner lowers
    the limit to the CPUs the forward leaves free (`forward.cpus_left`, often 0) for the duration of
    each forward; tasks already running finish, and the workers fill the window again between batches.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._limit: int | None = None

    def enter(self) -> None:
        with self._cond:
            while self._limit is not None and self._running >= self._limit:
                self._cond.wait()
            self._running += 1

    def leave(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def limited(self, limit: int | None) -> Iterator[None]:
        """At most `limit` tasks start inside the block (None: no limit)."""
        if limit is None:
            yield
            return
        with self._cond:
            self._limit = limit
        try:
            yield
        finally:
            with self._cond:
                self._limit = None
                self._cond.notify_all()


# Worker processes each keep their own GDAL block cache: a block two processes both need is
# decompressed twice. So requests whose ROIs lie in one cell of LOCALITY_PX request pixels go to the same
# worker process (its "home", the least busy one when the cell is first seen); a worker with nothing of
# its own takes the oldest request of the busiest other one, so none idles while work waits.
LOCALITY_PX = 512
_HOMES = 4096  # cells remembered (a forgotten one is placed again, on the least busy worker)


def locality(req: FetchRequest) -> tuple[str, int, int]:
    """The cell of LOCALITY_PX x LOCALITY_PX request pixels that holds the ROI's centre."""
    g = req.grid
    cell = LOCALITY_PX * g.res
    left, bottom, right, top = g.bounds
    return g.crs, int((left + right) // (2 * cell)), int((bottom + top) // (2 * cell))


class _Dispatch:
    """The task queues of one stream: one per worker, filled by locality (None: one shared queue)."""

    def __init__(self, workers: int, by_locality: bool) -> None:
        self._cond = threading.Condition()
        self._queues: list[deque[Any]] = [deque() for _ in range(workers if by_locality else 1)]
        self._home: OrderedDict[Any, int] = OrderedDict()  # cell -> worker, the most recent _HOMES cells
        self._closed = False

    def put(self, item: Any, req: FetchRequest) -> None:
        with self._cond:
            w = 0
            if len(self._queues) > 1:
                key = locality(req)
                w = self._home.get(key, -1)
                if w < 0:
                    w = self._home[key] = min(range(len(self._queues)), key=lambda k: len(self._queues[k]))
                    if len(self._home) > _HOMES:  # a long export over many places: forget the oldest cell
                        self._home.popitem(last=False)
                self._home.move_to_end(key)
            self._queues[w].append(item)
            self._cond.notify_all()

    def get(self, worker: int) -> Any:
        """The next item for `worker` (its own, else stolen), or None once closed."""
        with self._cond:
            while not self._closed:
                own = self._queues[worker % len(self._queues)]
                if own:
                    return own.popleft()
                busiest = max(self._queues, key=len)
                if busiest:
                    return busiest.popleft()
                self._cond.wait()
            return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class _Slot:
    __slots__ = ("done", "raster", "error", "attempts", "owner", "then")

    def __init__(self, owner: int) -> None:
        self.done = threading.Event()
        self.raster: Raster | None = None
        self.error: BaseException | None = None
        self.attempts = 0
        self.owner = owner  # the request index the prepare specs were sent for
        self.then: Any = None


def fetch_stream(
    provider: Provider,
    requests: Sequence[FetchRequest],
    *,
    policy: RetryPolicy = DEFAULT_RETRY,
    window: int | None = None,
    held: int = 0,
    specs: Callable[[int], tuple[Sequence[tuple[Any, Any]], bool]] | None = None,
    workers: int | None = None,
    throttle: Throttle | None = None,
) -> Iterator[tuple[int, Raster | BaseException, int, Any]]:
    """Yield (index, raster or error, attempts, prepared) in request order, fetching ahead in parallel.

    Distinct keys are fetched once; at most `window` distinct requests are in flight or waiting to be
    consumed, so memory stays bounded whatever the number of requests. The default window is two
    per worker plus `held`, the results the consumer keeps before it frees any (a batch): while it
    runs a batch through the model, the workers fetch the next one instead of idling. Errors are yielded, not raised:
    the consumer decides what a failed item means. `specs(index)` gives the (key, PrepSpec) pairs to
    prepare right after a successful fetch, in the worker (so it overlaps inference), and whether the
    pixels may stay there (a RasterHead comes back instead of the raster); the Prepared results come
    with the raster as a dict (None when nothing was prepared for that index). The workers are threads
    or processes (`rs_embed_core.workers.plan_workers`); a `throttle` lets the consumer hold them back
    while it computes on the same CPUs, where the provider's work is compute (`parallel = "processes"`).
    """
    from .workers import close_all, compute_bound, plan_workers, process_workers, shared_pool

    n = len(requests)
    timeout_s = fetch_timeout(provider)
    if n == 1:  # the interactive single call: no pool at all
        raster, attempts, pre = fetch_task(provider, requests[0], policy, timeout_s, *(specs(0) if specs else ()))
        yield 0, raster, attempts, pre
        return
    count, kind = plan_workers(provider, workers, n)
    if not compute_bound(provider):
        throttle = None  # a network provider's fetches mostly wait on I/O: they keep overlapping the forward
    window = window or 2 * count + held
    keys = [r.key for r in requests]  # each .key hashes the whole request: once per request, not ten times
    remaining: dict[str, int] = {}
    for k in keys:
        remaining[k] = remaining.get(k, 0) + 1
    tasks = _Dispatch(count, by_locality=kind == "processes")
    cancelled = threading.Event()
    procs: list[Any] = []
    pool = shared_pool(fetch_task) if kind == "processes" else None
    if pool is not None:
        procs = pool.take(count, provider) or []
        if not procs:  # a provider the pool's processes cannot load: processes forked with it, for this call
            pool = None
            procs = process_workers(count, provider, fetch_task)

    def work(run: Callable[..., tuple[Any, int, Any]], me: int) -> None:
        while True:
            item = tasks.get(me)
            if item is None:
                return
            req, slot = item
            if throttle is not None:
                throttle.enter()
            if not cancelled.is_set():
                try:
                    result, slot.attempts, slot.then = run(req, policy, timeout_s,
                                                           *(specs(slot.owner) if specs else ()))
                    if isinstance(result, BaseException):
                        slot.error = result
                    else:
                        slot.raster = result
                except BaseException as exc:  # never let a pool thread die silently
                    slot.error, slot.attempts = _classify(exc), 1
            if throttle is not None:
                throttle.leave()
            slot.done.set()

    runners = procs or [lambda *a: fetch_task(provider, *a)] * count
    threads = [threading.Thread(target=work, args=(r, k), name="rs-embed-fetch", daemon=True)
               for k, r in enumerate(runners)]
    _short_switch(True)
    for t in threads:
        t.start()
    slots: dict[str, _Slot] = {}
    ahead = 0
    finished = False
    try:
        for i, req in enumerate(requests):
            while ahead < n and len(slots) < window:
                nxt, nkey = requests[ahead], keys[ahead]
                if nkey not in slots:
                    slots[nkey] = _Slot(ahead)
                    tasks.put((nxt, slots[nkey]), nxt)
                ahead += 1
            key = keys[i]
            if key not in slots:  # its last use was consumed already: fetch again (cache hit)
                slots[key] = _Slot(i)
                tasks.put((req, slots[key]), req)
            slot = slots[key]
            slot.done.wait()  # interruptible: Ctrl-C lands here
            remaining[key] -= 1
            if remaining[key] == 0:
                del slots[key]
            pre = slot.then if slot.owner == i else None
            yield i, (slot.error if slot.error is not None else slot.raster), slot.attempts, pre  # type: ignore[misc]
        finished = True
    finally:
        _short_switch(False)
        cancelled.set()  # queued work is skipped; running calls finish (or hang) on daemon threads
        tasks.close()
        if pool is not None and finished:  # every task answered: the processes serve the next call
            for t in threads:
                t.join()
            pool.give_back(procs)
        else:  # interrupted (Ctrl-C, an error, an abandoned stream): busy processes are terminated
            close_all(procs)
