"""What runs on the cluster: the fetch stage (CPU tasks) and the forward stage (one actor per worker).

The fetch stage calls the core's `fetch_task` (timeouts, retries, delivery checks) for each distinct
request of a chunk of ROIs. The forward stage hands those rasters to the core's own `runner.run`
through `Prefetched`, a provider that serves them back, so preprocessing, tiling, batching, the
forward, non-finite isolation, item errors and every Embedding's meta are the local export's code,
not a copy of it. What the second pass cannot know (how many attempts a fetch took on the fetch
stage) is put back from the fetch results.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import attrs

from rs_embed_core.embedding import Embedding
from rs_embed_core.errors import ItemError, UnknownModelError
from rs_embed_core.fetching import fetch_task, fetch_timeout
from rs_embed_core.plan import plan_fetches
from rs_embed_core.providers import FetchRequest, Provider
from rs_embed_core.raster import Raster, RasterHead
from rs_embed_core.retry import RetryPolicy
from rs_embed_core.specs import SensorSpec
from rs_embed_core.workers import _readable

Fetched = dict[str, tuple["Raster | BaseException", int]]  # request key -> (raster or error, attempts)
NO_RETRY = RetryPolicy(max_retries=0)  # the fetch stage already retried


def fetch_requests(provider: Provider, requests: Sequence[FetchRequest], policy: RetryPolicy,
                   threads: int) -> Fetched:
    """The fetch stage for one chunk: every distinct request once, `threads` at a time; never raises."""
    timeout_s = fetch_timeout(provider)
    distinct = list({r.key: r for r in requests}.values())

    def one(req: FetchRequest) -> tuple[str, tuple[Raster | BaseException, int]]:
        result, attempts, _ = fetch_task(provider, req, policy, timeout_s)
        if isinstance(result, BaseException):
            result.attempts = attempts  # type: ignore[attr-defined]
            result = _readable(result)  # it must survive the object store
        return req.key, (result, attempts)

    if threads <= 1 or len(distinct) <= 1:
        return dict(map(one, distinct))
    with ThreadPoolExecutor(min(threads, len(distinct)), thread_name_prefix="rs-embed-ray-fetch") as pool:
        return dict(pool.map(one, distinct))


class Prefetched:
    """A provider that serves what the fetch stage got, under the real provider's name (for the meta).

    Its slots leave out `__weakref__` on purpose: the core's raster cache then skips it, so a worker
    does not keep rasters it will never be asked for again."""

    __slots__ = ("name", "native", "max_concurrency", "fetch_timeout_s", "_got")

    def __init__(self, got: Fetched, name: str, native: bool, threads: int = 2) -> None:
        self._got, self.name, self.native = got, name, native
        self.max_concurrency, self.fetch_timeout_s = threads, None

    def check(self, sensor: SensorSpec) -> None:
        """The driver checked the sensors against the real provider already."""

    def fetch(self, request: FetchRequest) -> Raster:
        result = self._got[request.key][0]
        if isinstance(result, BaseException):
            raise result
        return result


def _register_driver_models(jobs: Sequence[Any], plugin_of: dict[str, str]) -> None:
    """Register, in this worker, the models the driver has but this worker's installed plugins lack
    (models registered in-process on the driver), under the driver's plugin name: the embeddings'
    meta then names the same plugin as a local run's."""
    from rs_embed_core.hookspecs import hookimpl
    from rs_embed_core.plugins import pm
    from rs_embed_core.registry import embedder_class

    missing: dict[str, list[type]] = {}
    for job in jobs:
        try:
            if embedder_class(job.card.id) is job.cls:
                continue
        except UnknownModelError:
            pass
        missing.setdefault(plugin_of[job.card.id], []).append(job.cls)

    for name, classes in missing.items():
        class _DriverModels:
            @hookimpl
            def register_embedders(self, register: Any, classes: list[type] = classes) -> None:
                for cls in classes:
                    register(cls)

        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
        pm.register(_DriverModels(), name=name)


class ForwardWorker:
    """One forward worker: loads every job's weights once, then embeds chunk after chunk."""

    def __init__(self, jobs: Sequence[Any], temporal: Any, provider_name: str, native: bool,
                 plugin_of: dict[str, str], batch_size: int, min_valid_fraction: float, on_low_valid: str) -> None:
        self.jobs, self.temporal = list(jobs), temporal
        self.provider_name, self.native = provider_name, native
        self.batch_size, self.min_valid_fraction, self.on_low_valid = batch_size, min_valid_fraction, on_low_valid
        self.error: BaseException | None = None
        try:
            _register_driver_models(self.jobs, plugin_of)
            for job in self.jobs:
                job.embedder()  # the weights, once per worker (the core's model cache)
        except Exception as exc:  # noqa: BLE001 - reported by ready(), as the driver's own error
            self.error = exc

    def ready(self) -> int:
        if self.error is not None:
            raise self.error
        return os.getpid()

    def pid(self) -> int:
        return os.getpid()

    def embed(self, spatials: Sequence[Any], names: Sequence[str] | None, got: Fetched, offset: int
              ) -> tuple[list[tuple[int, int, Embedding | ItemError]], list[tuple[type, str]], dict[str, RasterHead]]:
        """(results as (index, job, Embedding | ItemError), warnings raised, heads of the good fetches)."""
        from rs_embed_core.runner import run

        requests, needs = plan_fetches(self.jobs, spatials, self.temporal)
        attempts = {key: a for key, (_, a) in got.items()}
        results = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for k, j, res in run(self.jobs, spatials, self.temporal, Prefetched(got, self.provider_name, self.native),
                                 names=names, batch_size=self.batch_size, progress=False, retry=NO_RETRY,
                                 min_valid_fraction=self.min_valid_fraction, on_low_valid=self.on_low_valid):
                keys = [requests[n.request].key for n in needs[k][j]]
                if isinstance(res, ItemError):
                    failed = [key for key in keys if isinstance(got[key][0], BaseException)]
                    tries = attempts[failed[0]] if res.stage == "fetch" and failed else res.attempts
                    res = attrs.evolve(res, index=offset + k, attempts=tries, cause=None)
                else:  # the most attempts any fetch of this item took (the runner's item_attempts)
                    item_keys = [requests[n.request].key for per_job in needs[k] for n in per_job]
                    res.meta["attempts"] = max([1, *(attempts[key] for key in item_keys)])
                results.append((offset + k, j, res))
        heads = {key: RasterHead.of(r) for key, (r, _) in got.items() if isinstance(r, Raster)}
        kept = [(w.category, str(w.message)) for w in caught if issubclass(w.category, UserWarning)]
        return results, kept, heads
