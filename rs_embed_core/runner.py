"""The one data path: specs -> FetchRequest -> provider.fetch -> preprocess -> batch -> embed.

`run` is the streaming engine: it takes resolved jobs (one per model request) and ROIs, fetches
each distinct input once (requests that differ only in bands become one band-union fetch),
ahead of inference and concurrently (fetching.py), cuts large ROIs into tiles when asked
(tiling.py), runs each job's preprocessing chain, batches per job, and yields
`(item, job, Embedding | ItemError)` as batches finish. Failures are per item: a fetch,
preprocessing or model error becomes an ItemError naming the ROI, and transient provider
errors are retried first. `embed` (behind `get_embeddings_batch`, and so `get_embedding`)
collects one job's stream; export drives the same stream, so single, batch, tiled and export
results agree by construction.
"""

from __future__ import annotations

import importlib.metadata as md
import threading
import warnings
from collections import Counter
from functools import lru_cache
from typing import Any, Iterator, Sequence

import attrs
import numpy as np
from attrs import frozen

from . import __version__
from .card import ModelCard, Step, Variant
from .convert import converter
from .embedder import Embedder
from .assemble import Outcome, Outcomes
from .batching import Batches
from .embedding import Embedding
from .errors import BatchError, ItemError, LowValidDataError, SpecError
from .fetching import Throttle, fetch_stream, raster_cache  # noqa: F401  (raster_cache: re-exported for tests)
from .fetching import RasterCache  # noqa: F401
from .forward import DEFAULT_PRECISION, check_device_precision, check_precision
from .grid import grid_for
from .plan import plan_fetches, users_of
from .prepare import PrepSpec, Prepared, prepare
from .progress import RunProgress
from .preprocess import chain_to_meta, check_chain
from .providers import Provider
from .weights import weights_record
from .workers import check_workers
from .raster import Raster, RasterHead
from .registry import embedder_class, embedder_plugin, provider_factory
from .retry import DEFAULT_RETRY, RetryPolicy
from .specs import BBox, OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from .tiling import check_input_prep, check_tile_size

DEFAULT_BATCH_SIZE = 16
DEFAULT_MIN_VALID_FRACTION = 0.2
ON_LOW_VALID = ("warn", "error", "allow")


SATURATION_WARN = 0.5  # warn when a step clipped more than this share of an input's valid values


class SaturatedInputWarning(UserWarning):
    """A large share of some model inputs was clipped by the chain: the data's range does not fit the card's."""


class LowValidDataWarning(UserWarning):
    """Some inputs had less valid data than `min_valid_fraction`: their embeddings describe fill values."""


# ---------------------------------------------------------------- resolution (no fetch, no model work)


def resolve_provider(backend: str | Provider) -> Provider:
    """A registered name ("local"), "name:argument" ("local:/data/scenes"), "auto", or a provider object.

    "auto" is the Earth Engine provider when it is installed and finds credentials (without any
    network call), else the local provider ($RS_EMBED_LOCAL_PATH), with a one-line notice.
    """
    if isinstance(backend, str):
        name, _, arg = backend.partition(":")
        name = name.strip()
        if name.lower() == "auto":
            return _auto_provider(arg)
        factory = provider_factory(name)
        return factory(arg) if arg else factory()
    if hasattr(backend, "fetch") and hasattr(backend, "check"):
        return backend  # type: ignore[return-value]
    raise SpecError(f"backend must be a provider name or a provider object, got {backend!r}")


def _auto_provider(arg: str) -> Provider:
    from .errors import UnknownProviderError

    try:
        gee = provider_factory("gee")
    except UnknownProviderError:
        gee = None
    available = getattr(gee, "available", None)
    if gee is not None and callable(available) and available():
        warnings.warn("backend='auto': using Google Earth Engine (credentials found)", stacklevel=3)
        return gee(arg) if arg else gee()
    why = "no Earth Engine provider installed" if gee is None else "no Earth Engine credentials found"
    warnings.warn(f"backend='auto': {why}; using the local provider", stacklevel=3)
    local = provider_factory("local")
    return local(arg) if arg else local()


_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def resolve_device(device: str | None, uses_torch: bool) -> str:
    """"auto" (or None) picks cuda > mps > cpu; numpy-only models always run on "cpu"."""
    if device is None:
        device = "auto"
    if not isinstance(device, str):
        raise SpecError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {device!r}")
    if not uses_torch:
        if device not in ("auto", "cpu"):
            raise SpecError(f"this model runs on numpy (CPU) only; device={device!r} is not available for it")
        return "cpu"
    if device != "auto" and device.split(":")[0] not in _DEVICE_TYPES:
        raise SpecError(f"device {device!r} cannot run a model; use 'auto', 'cpu', 'cuda[:N]', 'mps' or 'xpu'")
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


def _sensors(sensor: SensorSpec | Sequence[SensorSpec] | None, card: ModelCard) -> tuple[SensorSpec, ...]:
    """One sensor, or several served on one grid (e.g. optical + SAR), merged band-wise."""
    if sensor is None:
        return (default_sensor(card),)
    many = tuple(sensor) if isinstance(sensor, (list, tuple)) else (sensor,)
    if not many or not all(isinstance(s, SensorSpec) for s in many):
        raise SpecError(f"sensor must be a SensorSpec or a tuple of them, got {sensor!r}")
    names = [b for s in many for b in s.bands]
    if len(set(names)) != len(names):
        raise SpecError(f"the sensors of a multi-sensor request share band names {sorted({b for b in names if names.count(b) > 1})}")
    return many


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


# ---------------------------------------------------------------- jobs


@frozen(eq=False)
class Job:
    """One model request, validated and resolved: everything `run` needs except the pixels."""

    cls: type
    card: ModelCard
    variant: Variant
    sensors: tuple[SensorSpec, ...]
    steps: tuple[Step, ...]
    output: OutputSpec
    input_prep: Any
    device: str
    precision: str = DEFAULT_PRECISION

    @property
    def model_id(self) -> str:
        return self.card.id

    def embedder(self) -> Embedder:
        return load_embedder(self.cls, self.variant, self.device)

    def prep_spec(self, bands: Sequence[tuple[str, ...]], refuse_low_valid: float | None) -> PrepSpec:
        return PrepSpec(tuple(bands), self.steps, self.input_prep, self.card.input.image_size,
                        self.sensors[0].fill_value, refuse_low_valid)

    @property
    def want(self) -> str:
        return "grid" if self.output.mode == "grid" or self.output.pooling != "model" or self.input_prep != "resize" \
            else "pooled"


def prepare_job(
    model: str,
    *,
    output: OutputSpec,
    provider: Provider,
    device: str | None = "auto",
    input_prep: Any = "resize",
    sensor: SensorSpec | Sequence[SensorSpec] | None = None,
    variant: str | None = None,
    preprocessing: Sequence[Any] | None = None,
    weights: Any = None,
    precision: str = DEFAULT_PRECISION,
) -> Job:
    """Validate one model request against the registry and the provider (headers only, no pixels)."""
    precision = check_precision(precision)
    if not isinstance(output, OutputSpec):
        raise SpecError(f"output must be an OutputSpec (OutputSpec.pooled() / .grid()), got {output!r}")
    input_prep = check_input_prep(input_prep)
    cls = embedder_class(model)
    card: ModelCard = cls.card
    check_tile_size(input_prep, card.input.image_size)
    var = card.variant(variant)
    if weights is not None:
        from .weights import local_weights

        if not cls.uses_torch:  # the numpy models (baselines, products) learn nothing: weights would be ignored
            raise SpecError(f"model {card.id!r} has no learned weights, so weights= cannot apply to it; drop weights=")

        var = attrs.evolve(var, weights=local_weights(weights, var))
    sensors = _sensors(sensor, card)
    steps = tuple(Step.of(s) for s in (cls.default_chain(sensors[0]) if preprocessing is None else preprocessing))
    check_chain(steps)
    cls.check_request(var, sensors, steps)
    for s in sensors:
        provider.check(s)
    dev = resolve_device(device, cls.uses_torch)
    precision = check_device_precision(precision, dev, bool(cls.uses_torch))
    return Job(cls, card, var, sensors, tuple(steps), output, input_prep, dev, precision)


@lru_cache(maxsize=None)
def _dist_of_module(mod: str) -> tuple[str, str] | None:
    try:
        dist = md.packages_distributions().get(mod, [None])[0]
        return (dist, md.version(dist)) if dist else None
    except Exception:  # versions are informative only
        return None


@lru_cache(maxsize=None)
def _versions(cls: type, uses_torch: bool) -> dict[str, str]:
    v = {"rs_embed": __version__, "numpy": np.__version__}
    dist = _dist_of_module(cls.__module__.split(".")[0])
    if dist:
        v[dist[0]] = dist[1]
    if uses_torch:
        import torch

        v["torch"] = torch.__version__
    return v


def job_meta(job: Job, provider: Provider, temporal: TemporalSpec, valid_policy: dict[str, Any]) -> dict[str, Any]:
    """The part of every Embedding's meta that is the same for all items of a job."""
    w = job.variant.weights
    sensors = [converter.unstructure(s) for s in job.sensors]
    return {
        "model": job.card.id,
        "variant": job.variant.name,
        "weights": weights_record(w),
        "plugin": embedder_plugin(job.card.id),
        "provider": getattr(provider, "name", type(provider).__name__),
        "sensor": sensors[0] if len(sensors) == 1 else sensors,
        "temporal": converter.unstructure(temporal),
        "output": converter.unstructure(job.output),
        "input_prep": job.input_prep if isinstance(job.input_prep, str) else converter.unstructure(job.input_prep),
        "preprocessing": chain_to_meta(job.steps),
        "device": job.device,
        "precision": job.precision,
        "valid_policy": valid_policy,
        "versions": _versions(job.cls, bool(job.cls.uses_torch)),
    }


# ---------------------------------------------------------------- the stream


class _InputChecks:
    """The run's input policy: too little valid data (warned, refused or allowed) and preprocessing that
    clipped most of an input, both reported once at the end of the run."""

    def __init__(self, n_items: int, min_valid_fraction: float, on_low_valid: str) -> None:
        self.n, self.min_valid, self.on_low_valid = n_items, min_valid_fraction, on_low_valid
        self.low_valid: list[int] = []
        self.saturated: dict[str, list[int]] = {}

    def check(self, i: int, job: Job, ready: Prepared) -> BaseException | None:
        """The error that refuses item i's input for `job`, or None (noting what to warn about)."""
        if ready.fetched.valid_fraction < self.min_valid and self.on_low_valid != "allow":
            if self.on_low_valid == "error":
                return LowValidDataError(
                    f"only {ready.fetched.valid_fraction:.1%} of the input is valid (min_valid_fraction="
                    f"{self.min_valid}); the embedding would describe fill values")
            self.low_valid.append(i)
        for step, frac in ready.prepped[0].meta.get("saturated", {}).items():
            if frac > SATURATION_WARN:
                self.saturated.setdefault(f"{job.card.id}:{step}", []).append(i)
        return None

    def warn(self) -> None:
        for where, items in self.saturated.items():
            model, step = where.split(":", 1)
            warnings.warn(
                f"{len(set(items))} of {self.n} ROI(s): step {step!r} of {model}'s chain clipped more than "
                f"{SATURATION_WARN:.0%} of the input (items {sorted(set(items))[:10]}): the data's value range does "
                "not fit what the model expects (e.g. Landsat or 8-bit RGB fed through a Sentinel-2 chain). Pass the "
                "right sensor= (its band table gives the DN scale) or override preprocessing=.",
                SaturatedInputWarning, stacklevel=4,
            )
        if self.low_valid:
            k = len(set(self.low_valid))
            warnings.warn(
                f"{k} of {self.n} ROI(s) had less than {self.min_valid:.0%} valid input (items "
                f"{sorted(set(self.low_valid))[:10]}{' ...' if k > 10 else ''}): their embeddings mostly describe "
                "fill values. Check the time window / data coverage, or pass on_low_valid='allow' or 'error'.",
                LowValidDataWarning, stacklevel=4,
            )


def run(
    jobs: Sequence[Job],
    spatials: Sequence[PointBuffer | BBox],
    temporal: TemporalSpec,
    provider: Provider,
    *,
    names: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
    on_low_valid: str = "warn",
    on_input: Any = None,
    input_pixels: bool = False,
    workers: int | None = None,
) -> Iterator[Outcome]:
    """Yield (item index, job index, Embedding or ItemError) for every ROI x job, as batches finish.

    The composition of the stages: plan (plan.py) -> fetch + prepare in workers (fetching.py,
    workers.py, prepare.py) -> batch + forward (batching.py) -> assemble (assemble.py). Models are
    loaded before the first fetch (weights errors come first). Memory stays flat in the number of
    ROIs: fetches run a bounded window ahead, each job holds at most one batch (and on a GPU one more
    in flight).
    `on_input(request, raster, items)` is called once per distinct fetch that succeeded (export
    saves inputs through it); `items` are the ROI indices that use it. The raster holds its pixels
    when `input_pixels`; otherwise it may be a RasterHead (the pixels stayed in a worker process).
    """
    spatials = list(spatials)
    valid_policy = {"min_valid_fraction": min_valid_fraction, "on_low_valid": on_low_valid}
    embedders = [job.embedder() for job in jobs]
    metas = [job_meta(job, provider, temporal, valid_policy) for job in jobs]
    requests, needs = plan_fetches(jobs, spatials, temporal)
    users = users_of(needs)  # request -> (item, job) that wait for it
    keys = [r.key for r in requests]
    same_key = Counter(keys)
    refuse = min_valid_fraction if on_low_valid == "error" else None
    bar = RunProgress(len(spatials) * len(jobs), "embed " + ",".join(j.card.id for j in jobs), progress, len(requests))
    out = Outcomes(jobs, spatials, names, metas, bar)
    throttle = Throttle()  # the fetch workers hold back while a forward computes on their CPUs
    batches = Batches(jobs, embedders, out, spatials, temporal, batch_size, throttle)
    checks = _InputChecks(len(spatials), min_valid_fraction, on_low_valid)
    got: dict[int, Raster | RasterHead | BaseException] = {}  # fetched, until every user took it
    attempts_of: dict[int, int] = {}  # request -> attempts its fetch took
    taken: dict[int, int] = {}

    def specs(r: int) -> tuple[list[tuple[tuple[int, int], PrepSpec]], bool]:
        """What the worker that fetches request r prepares (every (item, job) that needs only it), and
        whether its pixels may stay in the worker (nobody here needs more than the prepared inputs)."""
        pairs = [((i, j), jobs[j].prep_spec([needs[i][j][0].bands], refuse))
                 for i, j in users.get(r, []) if len(needs[i][j]) == 1]
        alone = same_key[keys[r]] == 1  # an identical request later reuses this fetch's raster
        return pairs, alone and not input_pixels and len(pairs) == len(users.get(r, []))

    def consume(i: int, j: int, ready: Prepared | None) -> Iterator[Outcome]:
        """Every input of (item i, job j) has arrived: prepare it here if no worker did, check it, batch it."""
        if ready is None:  # several fetches make this input (e.g. two sensors): merged and prepared here
            rasters = []
            for need in needs[i][j]:
                r = got[need.request]
                if isinstance(r, BaseException):
                    yield out.finish(i, j, out.error(i, j, "fetch", r, attempts_of.get(need.request, 1)))
                    return
                rasters.append(r)
            ready = prepare(jobs[j].prep_spec([n.bands for n in needs[i][j]], refuse), rasters)
        if ready.error is not None:
            yield out.finish(i, j, out.error(i, j, *ready.error))
            return
        refused = checks.check(i, jobs[j], ready)
        if refused is not None:
            yield out.finish(i, j, out.error(i, j, "fetch", refused))
            return
        yield from batches.add(i, j, ready)

    try:
        for r, result, attempts, pre in fetch_stream(provider, requests, policy=retry, specs=specs,
                                                     workers=workers, held=batch_size, throttle=throttle):
            got[r] = result
            attempts_of[r] = attempts
            bar.fetch_done()
            if on_input is not None and isinstance(result, (Raster, RasterHead)):
                on_input(requests[r], result, sorted({i for i, _ in users.get(r, [])}))
            for i, j in users.get(r, []):
                if all(n.request in got for n in needs[i][j]):
                    for n in needs[i][j]:
                        out.attempts[i] = max(out.attempts.get(i, 1), attempts_of[n.request])
                    yield from consume(i, j, None if pre is None else pre.get((i, j)))
                    for n in needs[i][j]:
                        taken[n.request] = taken.get(n.request, 0) + 1
                        if taken[n.request] == len(users[n.request]):
                            got.pop(n.request, None)
        yield from batches.flush_all()
    finally:
        bar.close()
    checks.warn()


# ---------------------------------------------------------------- one model, collected


def embed(
    model: str,
    spatials: Sequence[PointBuffer | BBox],
    *,
    temporal: TemporalSpec,
    output: OutputSpec,
    backend: str | Provider,
    device: str | None = "auto",
    input_prep: Any = "resize",
    sensor: SensorSpec | Sequence[SensorSpec] | None = None,
    variant: str | None = None,
    preprocessing: Sequence[Any] | None = None,
    weights: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
    continue_on_error: bool = False,
    max_retries: int | None = None,
    min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
    on_low_valid: str = "warn",
    workers: int | None = None,
    precision: str = DEFAULT_PRECISION,
) -> list[Embedding | ItemError]:
    """Embed every ROI with one model, in input order. Validation happens first; then load, fetch, infer.

    A failed ROI raises BatchError (after the others ran; it lists every failure and carries the
    partial results) unless `continue_on_error`, which puts an ItemError in its place.
    """
    spatials = _check_spatials(spatials)
    if not isinstance(temporal, TemporalSpec):
        raise SpecError(f"temporal must be a TemporalSpec, got {temporal!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SpecError(f"batch_size must be an int >= 1, got {batch_size!r}")
    policy = check_run_options(max_retries, min_valid_fraction, on_low_valid)
    workers = check_workers(workers)
    check_precision(precision)
    embedder_class(model)  # an unknown model is the first thing to say
    provider = resolve_provider(backend)
    job = prepare_job(model, output=output, provider=provider, device=device, input_prep=input_prep, sensor=sensor,
                      variant=variant, preprocessing=preprocessing, weights=weights, precision=precision)
    for s in spatials:  # size guard before any model or network work
        grid_for(s, job.sensors[0].scale_m)
    results: list[Embedding | ItemError | None] = [None] * len(spatials)
    for i, _, r in run([job], spatials, temporal, provider, batch_size=batch_size, progress=progress, retry=policy,
                       min_valid_fraction=min_valid_fraction, on_low_valid=on_low_valid, workers=workers):
        results[i] = r
    errors = [r for r in results if isinstance(r, ItemError)]
    if errors and not continue_on_error:
        raise BatchError(errors, results)  # type: ignore[arg-type]
    return results  # type: ignore[return-value]


def check_run_options(max_retries: int | None, min_valid_fraction: float, on_low_valid: str) -> RetryPolicy:
    if on_low_valid not in ON_LOW_VALID:
        raise SpecError(f"on_low_valid must be one of {ON_LOW_VALID}, got {on_low_valid!r}")
    if isinstance(min_valid_fraction, bool) or not isinstance(min_valid_fraction, (int, float)) \
            or not 0.0 <= min_valid_fraction <= 1.0:
        raise SpecError(f"min_valid_fraction must be a number in [0, 1], got {min_valid_fraction!r}")
    if max_retries is None:
        return DEFAULT_RETRY
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise SpecError(f"max_retries must be an int >= 0, got {max_retries!r}")
    return attrs.evolve(DEFAULT_RETRY, max_retries=max_retries)
