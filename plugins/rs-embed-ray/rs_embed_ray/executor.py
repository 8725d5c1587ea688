"""RayExecutor: export_batch's stream on a Ray cluster; export's own code writes every file on the driver.

`export_batch` validates the request, pins it, reads the journal and works out what is left, exactly
as locally; it then asks this executor instead of `runner.run` for the stream of (item, job, result).
Here the ROIs are cut into chunks (a multiple of the batch size); each chunk's distinct fetches
(`plan_fetches`: one per input for all models) run as a CPU task, and its preprocessing and forward in
one of a pool of actors that load the weights once (`num_gpus` each when the models run on CUDA). A
chunk's fetch result goes from its task to its actor through the object store; only the embeddings
come back to the driver, which writes parts and journal records as they arrive. So a killed driver
loses only the chunks in flight, and `resume=True` redoes just those; a killed task or actor is
retried by Ray, and since a chunk's results reach the driver once, as a whole, no row is written twice.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

from rs_embed_core.embedding import Embedding
from rs_embed_core.errors import ExecutorError, ItemError, SpecError
from rs_embed_core.plan import plan_fetches, users_of
from rs_embed_core.providers import Provider
from rs_embed_core.retry import DEFAULT_RETRY, RetryPolicy
from rs_embed_core.workers import plan_workers

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of "host:port" or "ray://host:port"; None for "auto" / "local" (no socket to probe)."""
    if address in ("auto", "local"):
        return None
    m = re.fullmatch(r"(?:[a-z]+://)?\[?([^\]/]+?)\]?:(\d+)/?", address.strip())
    if m is None:
        raise SpecError(f"Ray address {address!r} is not host:port, ray://host:port, 'auto' or 'local'")
    return m.group(1), int(m.group(2))


class RayExecutor:
    """Runs export_batch's fetches and models on Ray. `address`: the cluster (host:port, ray://host:port,
    "auto"; None: $RAY_ADDRESS, else the Ray instance this process already joined, else a new local one).

    `workers`: forward actors (default: one per GPU the cluster has when the models run on CUDA, else
    half its CPUs, at least one); `worker_cpus` / `worker_gpus` each holds (gpus default: 1 on CUDA);
    `fetch_cpus`: what one fetch task holds (fetches wait on the network, so less than a CPU);
    `chunk_size`: ROIs per task (default 4 batches; rounded up to whole batches so batches are the local
    run's); `connect_timeout_s`: how long an unreachable address may take to be refused.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, workers: int | None = None, worker_cpus: float = 1.0,
                 worker_gpus: float | None = None, fetch_cpus: float = 0.5, chunk_size: int | None = None,
                 connect_timeout_s: float = 10.0, max_restarts: int = 3, runtime_env: dict[str, Any] | None = None
                 ) -> None:
        for what, v in (("workers", workers), ("chunk_size", chunk_size)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise SpecError(f"RayExecutor {what} must be None or an int >= 1, got {v!r}")
        for what, v in (("worker_cpus", worker_cpus), ("fetch_cpus", fetch_cpus), ("worker_gpus", worker_gpus or 0),
                        ("connect_timeout_s", connect_timeout_s)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise SpecError(f"RayExecutor {what} must be a number >= 0, got {v!r}")
        if address is not None:
            _host_port(address)  # its form, before anything else
        self.address, self.workers, self.worker_cpus, self.worker_gpus = address, workers, worker_cpus, worker_gpus
        self.fetch_cpus, self.chunk_size, self.connect_timeout_s = fetch_cpus, chunk_size, connect_timeout_s
        self.max_restarts, self.runtime_env = max_restarts, runtime_env
        self._owned = False
        self.actors: list[Any] = []  # the forward workers of the run in progress (tests kill one)

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, workers={self.workers!r})"

    # ------------------------------------------------------------ before any work

    def start(self, out: Path) -> None:
        """Refuse an output this driver cannot write, then join the cluster (an unreachable one within
        `connect_timeout_s`)."""
        _check_writable(out)
        import ray

        address = self.address or os.environ.get("RAY_ADDRESS") or None
        hp = _host_port(address) if address else None
        if hp is not None:
            try:
                socket.create_connection(hp, timeout=self.connect_timeout_s).close()
            except OSError as exc:
                raise ExecutorError(f"cannot reach the Ray cluster at {address} ({exc}; waited at most "
                                    f"{self.connect_timeout_s:g} s); is it up, and is this the head's address?") from None
        if ray.is_initialized():  # this process joined a Ray instance already: work there
            return
        try:
            ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, logging_level="WARNING",
                     runtime_env=self.runtime_env)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ...
            raise ExecutorError(f"cannot join the Ray cluster at {address or 'a new local instance'}: "
                                f"{type(exc).__name__}: {exc}") from exc
        self._owned = True

    def close(self) -> None:
        import ray

        self._kill_actors()
        if self._owned and ray.is_initialized():
            ray.shutdown()
        self._owned = False

    # ------------------------------------------------------------ the stream

    def run(self, jobs: Sequence[Any], spatials: Sequence[Any], temporal: Any, provider: Provider, *,
            names: Sequence[str] | None = None, batch_size: int = 16, progress: bool | None = None,
            retry: RetryPolicy = DEFAULT_RETRY, min_valid_fraction: float = 0.2, on_low_valid: str = "warn",
            on_input: Any = None, input_pixels: bool = False, workers: int | None = None
            ) -> Iterator[tuple[int, int, Embedding | ItemError]]:
        """What `runner.run` yields, for the same arguments, as chunks finish on the cluster."""
        import ray
        from tqdm.auto import tqdm

        from .stages import ForwardWorker, fetch_requests

        _check_picklable(provider, jobs)
        spatials = list(spatials)
        requests, needs = plan_fetches(jobs, spatials, temporal)
        users = users_of(needs)
        of_item = [sorted({n.request for per_job in per_item for n in per_job}) for per_item in needs]
        chunk = -(-(self.chunk_size or 4 * batch_size) // batch_size) * batch_size
        bounds = [(lo, min(lo + chunk, len(spatials))) for lo in range(0, len(spatials), chunk)]
        threads, _ = plan_workers(provider, workers, chunk)

        cuda = any(str(job.device).startswith("cuda") for job in jobs)
        gpus = self.worker_gpus if self.worker_gpus is not None else (1.0 if cuda else 0.0)
        count = self._count(gpus)
        from rs_embed_core.registry import embedder_plugin

        plugin_of = {job.card.id: embedder_plugin(job.card.id) for job in jobs}
        actor_cls = ray.remote(concurrency_groups={"control": 1})(ForwardWorker).options(  # control: pid() mid-chunk
            num_cpus=self.worker_cpus, num_gpus=gpus, max_restarts=self.max_restarts,
            max_task_retries=self.max_restarts)
        name = getattr(provider, "name", type(provider).__name__)
        native = bool(getattr(provider, "native", False))
        self.actors = [actor_cls.remote(jobs, temporal, name, native, plugin_of, batch_size, min_valid_fraction,
                                        on_low_valid) for _ in range(count)]
        fetch = ray.remote(fetch_requests).options(num_cpus=self.fetch_cpus, max_retries=self.max_restarts)
        provider_ref = ray.put(provider)
        bar = tqdm(total=len(spatials) * len(jobs), unit="emb", leave=False, desc="embed on ray " + ",".join(
            j.card.id for j in jobs), disable={None: None, True: False, False: True}[progress])
        in_flight: dict[Any, tuple[int, Any]] = {}
        try:
            _get(ray, [a.ready.remote() for a in self.actors])  # weights errors first, as locally
            todo = list(range(len(bounds)))[::-1]
            while todo or in_flight:
                while todo and len(in_flight) < 2 * count:
                    c = todo.pop()
                    lo, hi = bounds[c]
                    reqs = [requests[r] for i in range(lo, hi) for r in of_item[i]]
                    got = fetch.remote(provider_ref, reqs, retry, threads)
                    actor = self.actors[c % count]
                    ref = actor.embed.remote(spatials[lo:hi], None if names is None else list(names[lo:hi]), got, lo)
                    in_flight[ref] = (c, got)
                done, _ = ray.wait(list(in_flight), num_returns=1)
                c, got = in_flight.pop(done[0])
                results, caught, heads = _get(ray, done[0])
                lo, hi = bounds[c]
                if on_input is not None:
                    full = _get(ray, got) if input_pixels else None
                    for r in sorted({r for i in range(lo, hi) for r in of_item[i]}):
                        key = requests[r].key
                        if key in heads:
                            raster = full[key][0] if full is not None else heads[key]
                            on_input(requests[r], raster, sorted({i for i, _ in users.get(r, [])}))
                for category, message in caught:
                    warnings.warn(message, category, stacklevel=3)
                for res in results:
                    bar.update(1)
                    yield res
        finally:
            for ref in in_flight:
                ray.cancel(ref, force=False)
            bar.close()
            self._kill_actors()

    def _count(self, gpus: float) -> int:
        import ray

        res = ray.cluster_resources()
        cpus, have_gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
        if self.workers is not None:
            count = self.workers
        elif gpus > 0:
            count = max(1, int(have_gpus // gpus))
        else:
            count = max(1, int(cpus // 2))
        if gpus > 0 and have_gpus < gpus:
            raise ExecutorError(f"the models run on CUDA but the Ray cluster has {have_gpus:g} GPU(s); add GPU "
                                "nodes, or export with device='cpu'")
        if cpus - count * self.worker_cpus < self.fetch_cpus:
            raise ExecutorError(f"the Ray cluster has {cpus:g} CPU(s): {count} worker(s) x {self.worker_cpus:g} "
                                f"CPU leave less than fetch_cpus={self.fetch_cpus:g} for the fetch tasks; "
                                "use fewer workers, a smaller worker_cpus, or a bigger cluster")
        return count

    def _kill_actors(self) -> None:
        if not self.actors:
            return
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []


def _get(ray: Any, refs: Any) -> Any:
    """ray.get, with a remote error re-raised as itself (the local run's error type) rather than wrapped."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise
    except ray.exceptions.RayActorError as exc:
        raise ExecutorError(f"a Ray forward worker died and was not restarted: {str(exc)[:300]}") from exc


def _check_writable(out: Path) -> None:
    """The driver writes every file: `out` (or its nearest existing folder) must be a local, writable folder."""
    text = str(out)
    if _URL.match(text) or "://" in text:
        raise ExecutorError(f"out {text!r} is a URL; the export writers write a file system path (mount the "
                            "bucket, e.g. with s3fs or gcsfuse, and export to the mount)")
    probe = Path(out).expanduser().absolute()
    while not probe.exists():
        probe = probe.parent
    target = probe if probe.is_dir() else probe.parent
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".rs-embed-probe-"):
            pass
    except OSError as exc:
        raise ExecutorError(f"out {out} cannot be written from this driver ({exc.strerror or exc}); "
                            "choose a writable folder") from None


def _check_picklable(provider: Provider, jobs: Sequence[Any]) -> None:
    """The provider and the models travel to the workers: refuse, before any fetch, what cannot."""
    from ray import cloudpickle

    for what, obj in (("provider", provider), ("models", list(jobs))):
        try:
            cloudpickle.dumps(obj)
        except Exception as exc:  # noqa: BLE001 - whatever stops it from travelling
            name = getattr(obj, "name", type(obj).__name__) if what == "provider" else "the export's models"
            raise ExecutorError(f"{what} {name!r} cannot be sent to Ray workers ({type(exc).__name__}: {exc}); "
                                "a provider must pickle (give it __getstate__ without locks or open handles)") from None
