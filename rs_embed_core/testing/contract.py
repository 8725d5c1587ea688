"""Contract checks every embedder must pass, run through the public API like a user would.

`check_embedder_contract` embeds a few overlapping ROIs from a FakeProvider and checks shapes,
dtype, finiteness, determinism, batch == single, grid georeferencing and metadata.
`check_strict_loading` proves that `load()` refuses weights files that do not fit the
architecture, using an offline Hub cache of random weights (no network, no real checkpoint).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import attrs
import numpy as np
from attrs import frozen

from ..card import ModelCard, Variant, WeightsSpec
from ..errors import BatchError, UnknownModelError, WeightsError
from ..specs import BBox, OutputSpec, PointBuffer, TemporalSpec
from ..weights import CACHE_ENV
from .hub import file_sha256, hf_cache_file, offline_hub, random_weights_file
from .provider import S2_L2A_BANDS, FakeProvider

DEFAULT_TEMPORAL = ("2022-06-01", "2022-09-01")


def _fail(msg: str) -> None:
    raise AssertionError(msg)


def _require(cond: bool, msg: str) -> None:
    if not cond:  # not `assert`: checks must survive python -O
        _fail(msg)


def _cls(model: str | type) -> type:
    if isinstance(model, str):
        from ..registry import embedder_class

        return embedder_class(model)
    return model


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """The largest |a - b|; NaN at the same places in both counts as equal, NaN in one only as infinite."""
    if not a.size:
        return 0.0
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        return float("inf")
    d = np.abs(np.where(nan_a, 0.0, a.astype(np.float64)) - np.where(nan_b, 0.0, b.astype(np.float64)))
    return float(np.max(d))


def default_spatials(card: ModelCard) -> list[PointBuffer]:
    """Two overlapping square ROIs whose fetch is about the model's input size (32 px if any size)."""
    n = card.input.image_size or 32
    buffer_m = card.input.gsd_m * n / 2.0
    lon, lat = 121.5, 31.2
    shift_deg = (buffer_m / 2.0) / (111_320.0 * math.cos(math.radians(lat)))  # a quarter of the ROI east
    return [PointBuffer(lon, lat, buffer_m), PointBuffer(lon + shift_deg, lat, buffer_m)]


@frozen
class ContractReport:
    model: str
    variant: str
    rois: int
    pooled_dim: int
    grid_shapes: tuple[tuple[int, int, int], ...]
    max_batch_single_diff: float  # largest |batch - single| over pooled and grid outputs
    provider_calls: int
    checks: tuple[str, ...]


def _calls(provider: Any) -> int:
    """Fetches a provider made so far: an int (FakeProvider) or per-call-kind counts (the gee provider)."""
    calls = getattr(provider, "calls", 0)
    return sum(calls.values()) if isinstance(calls, dict) else int(calls)


def check_embedder_contract(
    model: str | type,
    *,
    provider: Any = None,
    variant: str | None = None,
    spatials: Sequence[PointBuffer | BBox] | None = None,
    temporal: TemporalSpec | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> ContractReport:
    """Run `model` (a registered id, or its registered Embedder class) through the public API and check it.

    Checks: pooled shape (pooled_dim,), grid shape (grid_dim, h, w) with a GridSpec covering the
    input footprint and a cell valid mask, float32, all finite (but grid cells that saw no valid input,
    NaN by design), two identical calls give identical output, every batch
    item equals its single call (within rtol/atol of the output's scale), meta names the
    model, variant, preprocessing and precision, and (torch models) bf16 / fp16 autocast on the CPU
    stays within cosine 0.999 of fp32. Raises AssertionError saying which check failed.
    """
    from ..api import get_embedding, get_embeddings_batch
    from ..grid import grid_for

    from ..registry import embedder_class

    cls = _cls(model)
    card: ModelCard = cls.card
    try:
        found = embedder_class(card.id)
    except UnknownModelError:
        found = None
    _require(found is cls,
             f"{card.id}: the registry resolves this id to {found!r}, not {cls!r}; register the plugin "
             "first (its entry point, or rs_embed_core.plugins.pm.register(plugin) in a test)")
    var = card.variant(variant)
    if provider is None:
        extra = tuple(b for b in card.input.bands if b not in S2_L2A_BANDS)
        provider = FakeProvider(bands=S2_L2A_BANDS + extra)
    rois = list(spatials) if spatials is not None else default_spatials(card)
    when = temporal or TemporalSpec.range(*DEFAULT_TEMPORAL)
    kw = dict(temporal=when, backend=provider, device="cpu", variant=var.name)
    calls_before = _calls(provider)
    checks: list[str] = []
    worst = 0.0
    who = f"{card.id}/{var.name}"

    def check_item(e: Any, what: str, i: int) -> None:
        _require(isinstance(e.data, np.ndarray), f"{who} {what}[{i}]: data is {type(e.data).__name__}, not ndarray")
        _require(e.data.dtype == np.float32, f"{who} {what}[{i}]: dtype {e.data.dtype}, expected float32")
        seen = e.data if e.valid is None else e.data[:, e.valid > 0]  # cells that saw no valid input are NaN
        bad = int(np.size(seen) - np.count_nonzero(np.isfinite(seen)))
        _require(bad == 0, f"{who} {what}[{i}]: {bad} non-finite values (NaN/inf)")
        meta = e.meta
        _require(meta.get("model") == card.id, f"{who} {what}[{i}]: meta['model'] is {meta.get('model')!r}")
        _require(meta.get("variant") == var.name, f"{who} {what}[{i}]: meta['variant'] is {meta.get('variant')!r}")
        _require(isinstance(meta.get("preprocessing"), list), f"{who} {what}[{i}]: meta has no 'preprocessing' list")

    def same(batch: Any, single: Any, what: str, i: int) -> float:
        _require(batch.data.shape == single.data.shape,
                 f"{who} {what}[{i}]: batch shape {batch.data.shape} != single shape {single.data.shape}")
        d = _max_diff(batch.data, single.data)
        finite = np.abs(single.data[np.isfinite(single.data)])
        scale = float(finite.max()) if finite.size else 0.0
        _require(d <= atol + rtol * scale,
                 f"{who} {what}[{i}]: batch item differs from its single call by {d:.3g} "
                 f"(allowed {atol + rtol * scale:.3g}); batching must not change results")
        return d

    # pooled
    try:
        pooled = get_embeddings_batch(card.id, rois, output=OutputSpec.pooled(), **kw)
    except BatchError as exc:  # e.g. the runtime's own output-shape check: say it as a failed check
        _fail(f"{who}: {exc.errors[0].stage} failed: {exc.errors[0].error_type}: {exc.errors[0].message}")
    _require(len(pooled) == len(rois), f"{who}: {len(pooled)} pooled embeddings for {len(rois)} ROIs")
    for i, e in enumerate(pooled):
        check_item(e, "pooled", i)
        _require(e.data.shape == (var.pooled_dim,),
                 f"{who} pooled[{i}]: shape {e.data.shape}, card says ({var.pooled_dim},)")
    checks += ["pooled shape", "float32", "finite", "meta"]
    singles = [get_embedding(card.id, r, output=OutputSpec.pooled(), **kw) for r in rois]
    again = get_embedding(card.id, rois[0], output=OutputSpec.pooled(), **kw)
    _require(np.array_equal(again.data, singles[0].data),
             f"{who}: two identical calls differ by {_max_diff(again.data, singles[0].data):.3g}; "
             "forward must be deterministic (eval mode, no dropout, no random or call-dependent state)")
    for i, (b, s) in enumerate(zip(pooled, singles)):
        worst = max(worst, same(b, s, "pooled", i))
    checks += ["deterministic", "batch == single (pooled)"]
    checks += _check_precisions(card.id, rois, pooled, kw, who, bool(cls.uses_torch))

    # grid
    grids = get_embeddings_batch(card.id, rois, output=OutputSpec.grid(), **kw)
    shapes = []
    for i, (e, roi) in enumerate(zip(grids, rois)):
        check_item(e, "grid", i)
        _require(e.data.ndim == 3 and e.data.shape[0] == var.grid_dim,
                 f"{who} grid[{i}]: shape {e.data.shape}, card says ({var.grid_dim}, h, w)")
        _require(e.grid is not None, f"{who} grid[{i}]: no GridSpec, the token grid cannot be georeferenced")
        _require(e.grid.shape == e.data.shape[1:],
                 f"{who} grid[{i}]: GridSpec shape {e.grid.shape} != data {e.data.shape[1:]}")
        _require(e.valid is not None and e.valid.shape == e.data.shape[1:],
                 f"{who} grid[{i}]: no cell valid mask of shape {e.data.shape[1:]}")
        inp = grid_for(roi, card.input.gsd_m)
        _require(e.grid.crs == inp.crs, f"{who} grid[{i}]: crs {e.grid.crs} != input crs {inp.crs}")
        off = max(abs(a - b) for a, b in zip(e.grid.bounds, inp.bounds))
        _require(off <= 1e-6 * max(1.0, max(abs(v) for v in inp.bounds)),
                 f"{who} grid[{i}]: footprint {e.grid.bounds} != input footprint {inp.bounds}")
        shapes.append(tuple(int(n) for n in e.data.shape))
    for i, roi in enumerate(rois):
        worst = max(worst, same(grids[i], get_embedding(card.id, roi, output=OutputSpec.grid(), **kw), "grid", i))
    checks += ["grid shape", "grid footprint", "batch == single (grid)"]

    return ContractReport(
        model=card.id, variant=var.name, rois=len(rois), pooled_dim=var.pooled_dim,
        grid_shapes=tuple(shapes), max_batch_single_diff=worst,
        provider_calls=_calls(provider) - calls_before, checks=tuple(checks),
    )


MIN_PRECISION_COSINE = 0.999


def _check_precisions(model: str, rois: Sequence[Any], fp32: Sequence[Any], kw: dict[str, Any], who: str,
                      uses_torch: bool) -> list[str]:
    """Every reduced precision the CPU can run stays within cosine MIN_PRECISION_COSINE of fp32."""
    from ..api import get_embeddings_batch
    from ..forward import PRECISIONS, _supported

    _require(all(e.meta.get("precision") == "fp32" for e in fp32), f"{who}: meta['precision'] is not 'fp32'")
    if not uses_torch:
        return ["precision fp32 (numpy model)"]
    done = []
    for precision in PRECISIONS[2:]:  # bf16, fp16: TF32 exists on CUDA only
        if _supported(precision, "cpu") is not None:
            continue
        low = get_embeddings_batch(model, rois, output=OutputSpec.pooled(), precision=precision, **kw)
        for i, (a, b) in enumerate(zip(fp32, low)):
            _require(b.meta.get("precision") == precision and b.data.dtype == np.float32,
                     f"{who} {precision}[{i}]: meta precision {b.meta.get('precision')!r}, dtype {b.data.dtype}")
            _require(bool(np.isfinite(b.data).all()), f"{who} {precision}[{i}]: non-finite values")
            cos = float(np.dot(a.data, b.data) / max(np.linalg.norm(a.data) * np.linalg.norm(b.data), 1e-30))
            _require(cos >= MIN_PRECISION_COSINE,
                     f"{who} {precision}[{i}]: cosine to fp32 is {cos:.6f} < {MIN_PRECISION_COSINE}")
        done.append(f"precision {precision} ~ fp32")
    return done


# --------------------------------------------------------------------------- random weights, strict loading


@contextlib.contextmanager
def registered(*embedders: type, name: str | None = None) -> Iterator[None]:
    """Within the block, these Embedder classes are registered in-process as one plugin (tests of a
    plugin, or of a tiny variant of it); on exit the plugin is unregistered and loaded models dropped."""
    from ..hookspecs import hookimpl
    from ..plugins import pm
    from ..runner import clear_model_cache

    class _Plugin:
        @hookimpl
        def register_embedders(self, register: Any) -> None:
            for cls in embedders:
                register(cls)

    plugin = _Plugin()
    pm.register(plugin, name=name or "test:" + ",".join(c.card.id for c in embedders))
    try:
        yield
    finally:
        pm.unregister(plugin)
        clear_model_cache()


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def _offline(root: Path) -> Iterator[None]:
    """Offline Hub at root/hub, rs-embed cache (hash records, conversions) at root/rs-embed."""
    with offline_hub(root / "hub"), _env(CACHE_ENV, str(root / "rs-embed")):
        yield


RANDOM_ORG = "random-weights"


def random_repo_id(repo_id: str) -> str:
    """The repo id random weights are served under: "chendelong/RemoteCLIP" -> "random-weights/chendelong.RemoteCLIP",
    so every Embedding's meta and every export manifest made with them says so in `weights.repo_id`."""
    if repo_id.startswith(f"{RANDOM_ORG}/"):  # already random (random_weights inside random_weights)
        return repo_id
    return f"{RANDOM_ORG}/{repo_id.replace('/', '.')}"  # the Hub allows no '--' in a repo id


def _template_digest(sd: Mapping[str, Any]) -> str:
    """Keys, shapes and dtypes of a template: what, with the seed, fixes a random file's content."""
    items = sorted((k, tuple(int(n) for n in _shape(v)), str(getattr(v, "dtype", "float32"))) for k, v in sd.items())
    return hashlib.sha1(repr(items).encode()).hexdigest()


def _write_weights(var: Variant, root: Path, label: str, sd: Mapping[str, Any], seed: int = 0,
                   repo_id: str | None = None) -> WeightsSpec:
    """Random weights for `sd` served from the offline cache under a revision of their own.

    The revision is content-addressed (repo, file, label, seed and the template's keys/shapes/dtypes): a
    second call with the same cache folder serves the file the first one wrote instead of writing it again,
    so a session-wide cache folder builds each full-size checkpoint once. The file is written once, straight
    into the Hub snapshot (one copy on disk).
    """
    assert var.weights is not None
    ws = var.weights
    repo = repo_id or ws.repo_id
    revision = hashlib.sha1(f"{repo}:{ws.filename}:{label}:{seed}:{_template_digest(sd)}".encode()).hexdigest()
    dest = hf_cache_file(root / "hub", repo, revision, ws.filename)
    digest_file = root / "sha256" / revision
    if not (dest.is_file() and digest_file.is_file()):
        part = dest.with_name(f".part-{dest.name}")  # a run stopped mid-write leaves no file that looks finished
        random_weights_file(sd, part, seed=seed).replace(dest)
        digest_file.parent.mkdir(parents=True, exist_ok=True)
        digest_file.write_text(file_sha256(dest))
    return WeightsSpec(repo, revision, ws.filename, digest_file.read_text().strip(), ws.license)


def _try_load(cls: type, var: Variant, spec: WeightsSpec) -> WeightsError | None:
    embedder = cls(attrs.evolve(var, weights=spec), "cpu")
    try:
        embedder.load()
    except WeightsError as exc:
        return exc
    return None


def _expected_keys(cls: type, var: Variant, root: Path, who: str) -> dict[str, Any]:
    """Ask the model which tensors it wants: a file with one unknown key makes strict_load list them."""
    import torch

    probe = _try_load(cls, var, _write_weights(var, root, "probe", {"rs_embed_probe": (1,)}))
    _require(probe is not None, f"{who}: load() accepted a weights file holding only an unknown key")
    expected = getattr(probe, "expected", None)
    _require(expected is not None,
             f"{who}: load() raised WeightsError without the expected keys ({probe}); load through "
             "rs_embed_core.weights.strict_load, or pass state_dict= with the file's keys")
    return {k: torch.zeros(shape, dtype=getattr(torch, dtype.removeprefix("torch.")))
            for k, (shape, dtype) in expected.items()}


def _weighted_variant(model: str | type, variant: str | None) -> tuple[type, ModelCard, Variant, str]:
    cls = _cls(model)
    card: ModelCard = cls.card
    var = card.variant(variant)
    return cls, card, var, f"{card.id}/{var.name}"


@contextlib.contextmanager
def random_weights(
    model: str | type,
    variant: str | None,
    cache_dir: str | Path,
    *,
    state_dict: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Iterator[WeightsSpec]:
    """Within the block, `variant` of `model` loads random weights from an offline Hub cache.

    The keys come from the same probe as `check_strict_loading` (or from `state_dict`). The
    class's `card` is swapped for one whose variant points at the random file (restored on exit),
    so the public API and `check_embedder_contract` run the model end to end without real
    weights. The file is served under `random_repo_id(...)` ("random-weights/ORG.NAME"), which
    every Embedding's meta and export manifest record: nothing made with it passes for the real
    model. One copy of the file is kept in `cache_dir` (plus, for a pickle checkpoint, the
    safetensors conversion every user's cache holds too), and a later call with the same cache_dir,
    model, variant and seed reuses it. Process-wide state: not for tests running side by side in threads.
    """
    cls, card, var, who = _weighted_variant(model, variant)
    if var.weights is None:
        raise ValueError(f"{who} has no weights to replace")
    root = Path(cache_dir)
    with _offline(root):
        template = dict(state_dict) if state_dict is not None else _expected_keys(cls, var, root, who)
        spec = _write_weights(var, root, "random", template, seed, repo_id=random_repo_id(var.weights.repo_id))
        patched = attrs.evolve(card, variants=tuple(
            attrs.evolve(v, weights=spec) if v is var else v for v in card.variants))
        own = cls.__dict__.get("card")
        cls.card = patched
        try:
            yield spec
        finally:
            if own is None:
                del cls.card
            else:
                cls.card = own


@frozen
class StrictLoadingReport:
    model: str
    variant: str
    keys: int  # tensors the model expects
    checks: tuple[str, ...]
    skipped: str | None = None


def check_strict_loading(
    model: str | type,
    variant: str | None,
    cache_dir: str | Path,
    *,
    state_dict: Mapping[str, Any] | None = None,
) -> StrictLoadingReport:
    """Prove `load()` accepts a file that fits and refuses one with an extra, a missing or a mis-shaped key.

    How it works, with no network and no real checkpoint: for each case it writes random weights
    into an offline Hub cache under `cache_dir` (its own fake revision, same repo and filename as
    the variant) and instantiates the embedder with `attrs.evolve(variant, weights=<patched
    WeightsSpec>)` so `weights_file` finds and verifies that file. The keys the model expects come
    from a probe: a file holding one unknown tensor must make `load()` raise the WeightsError of
    `rs_embed_core.weights.strict_load`, which carries the module's `.expected` {key: (shape, dtype)}.
    A plugin that renames checkpoint keys before loading passes the file-side `state_dict`
    (name -> tensor/array/shape) instead. Each case writes a full-size file: use a small variant.
    """
    import torch

    cls, card, var, who = _weighted_variant(model, variant)
    if var.weights is None:
        return StrictLoadingReport(card.id, var.name, 0, (), skipped="variant has no weights")
    root = Path(cache_dir)

    def attempt(label: str, sd: Mapping[str, Any]) -> WeightsError | None:
        return _try_load(cls, var, _write_weights(var, root, label, sd))

    with _offline(root):
        template = dict(state_dict) if state_dict is not None else _expected_keys(cls, var, root, who)
        _require(len(template) > 0, f"{who}: the model expects no weights")
        named = state_dict is None  # error texts use module-side names, which are the file's names here

        err = attempt("good", template)
        _require(err is None, f"{who}: a file with exactly the expected keys and shapes was refused: {err}")

        extra_key = "rs_embed_unexpected_key"
        err = attempt("extra", {**template, extra_key: (1,)})
        _require(err is not None, f"{who}: load() accepted a file with an extra key {extra_key!r}")
        _require(not named or extra_key in str(err), f"{who}: the extra-key error does not name the key: {err}")

        missing_key = sorted(template)[0]
        err = attempt("missing", {k: v for k, v in template.items() if k != missing_key})
        _require(err is not None, f"{who}: load() accepted a file missing key {missing_key!r}")
        _require(not named or missing_key in str(err), f"{who}: the missing-key error does not name the key: {err}")

        checks = ["fitting file loads", "extra key refused", "missing key refused"]
        shaped = next((k for k in sorted(template) if len(_shape(template[k])) >= 1), None)
        if shaped is not None:
            bad = (_shape(template[shaped])[0] + 1, *_shape(template[shaped])[1:])
            err = attempt("shape", {**template, shaped: torch.zeros(bad)})
            _require(err is not None, f"{who}: load() accepted {shaped!r} with shape {bad}")
            checks.append("wrong shape refused")
    return StrictLoadingReport(card.id, var.name, len(template), tuple(checks))


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else tuple(v.shape)
