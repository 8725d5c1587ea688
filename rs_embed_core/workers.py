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

import multiprocessing
import os
import pickle
import signal
import sys
import threading
from multiprocessing.connection import wait
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


def plan_workers(provider: Any, workers: int | None, tasks: int) -> tuple[int, str]:
    """(how many, "processes" | "threads") for `tasks` fetches from `provider`."""
    processes = getattr(provider, "parallel", "threads") == "processes"
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


def _child_main(conn: Any, provider: Any, task: Callable[..., tuple[Any, int, Any]]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    from .providers import reading

    reading.forget_datasets()  # handles inherited through fork share file offsets with the parent
    if "torch" in sys.modules:  # a forked copy of a process that ran torch: no intra-op thread pool here
        sys.modules["torch"].set_num_threads(1)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if msg is None:
            return
        try:
            result = _travel(task(provider, *msg))
        except Exception as exc:  # noqa: BLE001 - a bug in the task fails its item, not the worker
            result = (_readable(ProviderError(f"{type(exc).__name__} in a worker process: {exc}")), 1, None)
        try:
            _send(conn, result)
        except (EOFError, OSError):
            return


# Results travel as a small pickle (protocol 5) whose arrays go out of band, each written straight from
# its memory into the pipe and read straight into a fresh buffer on the other side: two copies in all,
# both in system calls that release the GIL, instead of four through pickled bytes.


def _send(conn: Any, obj: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    conn.send_bytes(pickle.dumps((head, [v.nbytes for v in views])))
    for v in views:
        conn.send_bytes(v)


def _recv(conn: Any) -> Any:
    head, sizes = pickle.loads(conn.recv_bytes())
    buffers = []
    for n in sizes:
        buf = bytearray(n)  # writable, so the arrays rebuilt on it are too
        if n:
            conn.recv_bytes_into(buf)
        else:
            conn.recv_bytes()
        buffers.append(buf)
    return pickle.loads(head, buffers=buffers)


class ProcessWorker:
    """One child process that runs `task(provider, *payload)` for the thread that owns it."""

    def __init__(self, ctx: Any, provider: Any, task: Callable[..., tuple[Any, int, Any]]) -> None:
        self._ctx, self._provider, self._task = ctx, provider, task
        self.closing = False
        self._start()

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(target=_child_main, args=(child, self._provider, self._task),
                                      name="rs-embed-worker", daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def __call__(self, *payload: Any) -> tuple[Any, int, Any]:
        try:
            self.conn.send(payload)
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


def process_workers(n: int, provider: Any, task: Callable[..., tuple[Any, int, Any]]) -> list[ProcessWorker]:
    """`n` worker processes, all started here (in the calling thread, before any pool thread runs)."""
    ctx = multiprocessing.get_context(_start_method())
    if ctx.get_start_method() != "fork":
        try:
            pickle.dumps(provider)
        except Exception as exc:  # noqa: BLE001
            raise SpecError(f"workers > 1 with start method {ctx.get_start_method()!r} needs a picklable "
                            f"provider; {type(provider).__name__} is not ({exc}). Pass workers=1.") from None
    started: list[ProcessWorker] = []
    try:
        for _ in range(n):
            started.append(ProcessWorker(ctx, provider, task))
    except BaseException:
        close_all(started)
        raise
    return started


def close_all(workers: list[ProcessWorker]) -> None:
    """Close every worker at once (a busy one is terminated), so shutdown takes one grace period."""
    for w in workers:
        w.closing = True
    threads = [threading.Thread(target=w.close, daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

