"""The one data path: specs -> FetchRequest -> provider.fetch -> preprocess -> batch -> embed.

`get_embedding` is `get_embeddings_batch([x])[0]`, and every later entry point (export, CLI)
drives this same runner, so single, batch and export results agree by construction.
"""

from __future__ import annotations

import importlib.metadata as md
import itertools
import threading
import weakref
from functools import lru_cache
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterable, Sequence

import numpy as np

from . import __version__
from .card import ModelCard, Step, Variant
from .convert import converter
from .embedder import BatchContext, Embedder, EmbedOutput
from .embedding import Embedding
from .errors import SpecError
from .grid import grid_for
from .preprocess import apply_chain, chain_to_meta
from .providers import FetchRequest, Provider
from .raster import Raster
from .registry import embedder_class, embedder_plugin, preprocessor, provider_factory
from .specs import BBox, OutputSpec, PointBuffer, SensorSpec, TemporalSpec, check_input_prep

DEFAULT_BATCH_SIZE = 16


# ---------------------------------------------------------------- resolution (no fetch, no model work)


def resolve_provider(backend: str | Provider) -> Provider:
    """A registered name ("local"), "name:argument" ("local:/data/scenes"), or a provider object."""
    if isinstance(backend, str):
        name, _, arg = backend.partition(":")
        factory = provider_factory(name.strip())
        return factory(arg) if arg else factory()
    if hasattr(backend, "fetch") and hasattr(backend, "check"):
        return backend  # type: ignore[return-value]
    raise SpecError(f"backend must be a provider name or a provider object, got {backend!r}")


def resolve_device(device: str, uses_torch: bool) -> str:
    """"auto" picks cuda > mps > cpu; numpy-only models always run on "cpu"."""
    if not uses_torch:
        if device not in ("auto", "cpu"):
            raise SpecError(f"this model runs on numpy (CPU) only; device={device!r} is not available for it")
        return "cpu"
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise SpecError(f"device {device!r} is not usable here: {exc}") from None
    return device


def default_sensor(card: ModelCard) -> SensorSpec:
    i = card.input
    return SensorSpec(i.collection, i.bands, i.gsd_m, composite=i.composite,
                      frames=i.frames if i.composite != "none" else 1)


def _check_spatials(spatials: Sequence[Any]) -> list[PointBuffer | BBox]:
    if isinstance(spatials, (PointBuffer, BBox)):
        raise SpecError("spatials must be a list of PointBuffer/BBox; use get_embedding for one ROI")
    out = list(spatials)
    if not out:
        raise SpecError("spatials is empty")
    for s in out:
        if not isinstance(s, (PointBuffer, BBox)):
            raise SpecError(f"not a spatial spec: {s!r} (use PointBuffer or BBox)")
    return out


# ---------------------------------------------------------------- embedder cache


_models: dict[tuple[Any, ...], Embedder] = {}
_models_lock = threading.Lock()


def load_embedder(cls: type, variant: Variant, device: str) -> Embedder:
    """One loaded instance per (class, variant, weights, device), built lazily."""
    key = (cls, variant.name, variant.weights, device)
    with _models_lock:
        emb = _models.get(key)
        if emb is None:
            emb = cls(variant, device)
            emb.load()
            _models[key] = emb
        return emb


def clear_model_cache() -> None:
    with _models_lock:
        _models.clear()


# ---------------------------------------------------------------- raster cache (by request key)


class RasterCache:
    """Fetched rasters by (provider instance, request key), LRU-bounded by total bytes.

    Each provider object gets a token that is never reused (unlike `id()`, which a new object
    can inherit from a freed one), so one provider's pixels are never served for another's.
    """

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._bytes = 0
        self._done: OrderedDict[tuple[int, str], Raster] = OrderedDict()
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

    def get(self, provider: Provider, req: FetchRequest) -> Raster | None:
        with self._lock:
            tok = self._token(provider)
            r = None if tok is None else self._done.get((tok, req.key))
            if r is not None:
                self._done.move_to_end((tok, req.key))
            return r

    def put(self, provider: Provider, req: FetchRequest, raster: Raster) -> None:
        with self._lock:
            tok = self._token(provider)
            if tok is None:
                return
            key = (tok, req.key)
            if key in self._done or raster.data.nbytes > self.max_bytes:
                return
            self._done[key] = raster
            self._bytes += raster.data.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._done.popitem(last=False)
                self._bytes -= old.data.nbytes

    def clear(self) -> None:
        with self._lock:
            self._done.clear()
            self._bytes = 0


raster_cache = RasterCache()


def fetch_all(provider: Provider, requests: Sequence[FetchRequest], *, window: int | None = None) -> Iterable[Raster]:
    """Yield rasters in request order, fetching distinct keys concurrently ahead of the consumer.

    At most `window` distinct requests are in flight or waiting to be consumed, so fetch overlaps
    with whatever the consumer does (inference) without holding thousands of rasters.
    """
    workers = max(1, int(getattr(provider, "max_concurrency", 4)))
    window = window or 2 * workers
    futures: dict[str, Future[Raster]] = {}
    remaining: dict[str, int] = {}
    for r in requests:
        remaining[r.key] = remaining.get(r.key, 0) + 1

    def fetch_one(req: FetchRequest) -> Raster:
        hit = raster_cache.get(provider, req)
        if hit is not None:
            return hit
        raster = provider.fetch(req)
        raster_cache.put(provider, req, raster)
        return raster

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rs-embed-fetch") as pool:
        ahead = 0
        try:
            for i, req in enumerate(requests):
                while ahead < len(requests) and len(futures) < window:
                    nxt = requests[ahead]
                    if nxt.key not in futures:
                        futures[nxt.key] = pool.submit(fetch_one, nxt)
                    ahead += 1
                if req.key not in futures:  # already consumed its last use, fetch again (cache hit)
                    futures[req.key] = pool.submit(fetch_one, req)
                raster = futures[req.key].result()
                remaining[req.key] -= 1
                if remaining[req.key] == 0:
                    del futures[req.key]
                yield raster
        finally:
            for f in futures.values():
                f.cancel()


# ---------------------------------------------------------------- embedding


def _to_numpy(a: Any) -> np.ndarray | None:
    if a is None:
        return None
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


def _forward(embedder: Embedder, x: np.ndarray, ctx: BatchContext) -> tuple[np.ndarray | None, np.ndarray | None]:
    if embedder.uses_torch:
        import torch

        with torch.inference_mode():
            out = embedder.forward(torch.from_numpy(x).to(embedder.device), ctx)
    else:
        out = embedder.forward(x, ctx)
    if not isinstance(out, EmbedOutput):
        raise TypeError(f"{type(embedder).__name__}.forward must return EmbedOutput, got {type(out).__name__}")
    return _to_numpy(out.pooled), _to_numpy(out.grid)


@lru_cache(maxsize=None)
def _dist_of_module(mod: str) -> tuple[str, str] | None:
    try:
        dist = md.packages_distributions().get(mod, [None])[0]
        return (dist, md.version(dist)) if dist else None
    except Exception:  # versions are informative only
        return None


def _versions(cls: type, uses_torch: bool) -> dict[str, str]:
    v = {"rs_embed": __version__, "numpy": np.__version__}
    dist = _dist_of_module(cls.__module__.split(".")[0])
    if dist:
        v[dist[0]] = dist[1]
    if uses_torch:
        import torch

        v["torch"] = torch.__version__
    return v


def embed(
    model: str,
    spatials: Sequence[PointBuffer | BBox],
    *,
    temporal: TemporalSpec,
    output: OutputSpec,
    backend: str | Provider,
    device: str = "auto",
    input_prep: str = "resize",
    sensor: SensorSpec | None = None,
    variant: str | None = None,
    preprocessing: Sequence[Any] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
) -> list[Embedding]:
    """Embed every ROI with one model. Validation happens first; then load, fetch and infer."""
    # 1. validate everything cheap, before any network or model work
    spatials = _check_spatials(spatials)
    if not isinstance(temporal, TemporalSpec):
        raise SpecError(f"temporal must be a TemporalSpec, got {temporal!r}")
    if not isinstance(output, OutputSpec):
        raise SpecError(f"output must be an OutputSpec (OutputSpec.pooled() / .grid()), got {output!r}")
    if sensor is not None and not isinstance(sensor, SensorSpec):
        raise SpecError(f"sensor must be a SensorSpec, got {sensor!r}")
    if int(batch_size) < 1:
        raise SpecError(f"batch_size must be >= 1, got {batch_size}")
    check_input_prep(input_prep)
    cls = embedder_class(model)
    card: ModelCard = cls.card
    var = card.variant(variant)
    sensor = sensor or default_sensor(card)
    steps = card.preprocessing if preprocessing is None else tuple(Step.of(s) for s in preprocessing)
    for s in steps:
        preprocessor(s.name)
    provider = resolve_provider(backend)
    provider.check(sensor)
    dev = resolve_device(device, cls.uses_torch)
    requests = [FetchRequest(grid_for(s, sensor.scale_m), temporal, sensor) for s in spatials]

    # 2. load the model (weights errors surface before pixels are fetched)
    embedder = load_embedder(cls, var, dev)

    base_meta = {
        "model": card.id,
        "variant": var.name,
        "weights": None if var.weights is None else {
            "repo_id": var.weights.repo_id, "revision": var.weights.revision, "filename": var.weights.filename,
        },
        "plugin": embedder_plugin(card.id),
        "provider": getattr(provider, "name", type(provider).__name__),
        "sensor": converter.unstructure(sensor),
        "temporal": converter.unstructure(temporal),
        "output": converter.unstructure(output),
        "input_prep": input_prep,
        "preprocessing": chain_to_meta(steps),
        "device": dev,
        "versions": _versions(cls, cls.uses_torch),
    }

    # 3. fetch (concurrently, ahead) -> preprocess -> batch -> forward
    from tqdm.auto import tqdm

    results: list[Embedding | None] = [None] * len(requests)
    pending: list[tuple[int, Raster, Raster]] = []  # (index, fetched, preprocessed)
    bar = tqdm(total=len(requests), desc=f"embed {card.id}", unit="roi",
               disable={None: None, True: False, False: True}[progress], leave=False)
    want = "grid" if output.mode == "grid" or output.pooling != "model" else "pooled"

    def flush() -> None:
        groups: dict[tuple[int, ...], list[tuple[int, Raster, Raster]]] = {}
        for item in pending:
            groups.setdefault(item[2].shape, []).append(item)
        for items in groups.values():
            x = np.stack([p.data for _, _, p in items])
            ctx = BatchContext(
                grids=tuple(p.grid for _, _, p in items),
                centers_lonlat=tuple(spatials[i].center for i, _, _ in items),
                times=tuple(p.times for _, _, p in items),
                temporal=temporal,
                sensor=sensor,
                want=want,
                band_names=items[0][2].bands,
                valid=np.stack([p.valid for _, _, p in items]),
            )
            pooled, grid = _forward(embedder, x, ctx)
            for b, (i, fetched, prepped) in enumerate(items):
                results[i] = _make_embedding(
                    card, output, pooled, grid, b, prepped, fetched, spatials[i], base_meta
                )
        bar.update(len(pending))
        pending.clear()

    try:
        for i, raster in enumerate(fetch_all(provider, requests)):
            pending.append((i, raster, apply_chain(raster, steps)))
            if len(pending) >= batch_size:
                flush()
        if pending:
            flush()
    finally:
        bar.close()
    return [r for r in results if r is not None]


def _make_embedding(
    card: ModelCard,
    output: OutputSpec,
    pooled: np.ndarray | None,
    grid: np.ndarray | None,
    b: int,
    prepped: Raster,
    fetched: Raster,
    spatial: PointBuffer | BBox,
    base_meta: dict[str, Any],
) -> Embedding:
    meta = {
        **base_meta,
        "spatial": converter.unstructure(spatial),
        "input_grid": converter.unstructure(fetched.grid),
        "input_shape": list(prepped.shape),
        "valid_fraction": fetched.valid_fraction,
        "source": fetched.meta,
    }
    if output.mode == "grid":
        if grid is None:
            raise SpecError(f"model {card.id!r} does not produce a grid output")
        g = grid[b]
        return Embedding(g, {**meta, "output_kind": "grid"}, prepped.grid.resized(g.shape[2], g.shape[1]))
    if output.pooling == "model":
        if pooled is not None:
            vec = pooled[b]
        elif grid is not None:
            vec = grid[b].mean(axis=(1, 2))
        else:
            raise SpecError(f"model {card.id!r} returned no output")
        meta["pooling"] = card.pooled
    else:
        if grid is None:
            raise SpecError(f"model {card.id!r} has no token grid to {output.pooling}-pool; use pooling='model'")
        vec = grid[b].mean(axis=(1, 2)) if output.pooling == "mean" else grid[b].max(axis=(1, 2))
        meta["pooling"] = f"{output.pooling} of the token grid"
    return Embedding(np.ascontiguousarray(vec, dtype=np.float32), {**meta, "output_kind": "pooled"}, None)
