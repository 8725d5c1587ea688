"""The public functions, named and defaulted as in the user documentation."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .card import ModelCard
from .embedding import Embedding
from .providers import FetchRequest, Provider
from .registry import embedder_class, tables
from .card import WeightsSpec
from .errors import BatchError
from .runner import DEFAULT_MIN_VALID_FRACTION, embed, resolve_provider
from .tiling import TileSpec
from .specs import BBox, OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from .errors import SpecError
from .grid import grid_for

DEFAULT_BACKEND = "local"


def get_embeddings_batch(
    model: str,
    spatials: Sequence[PointBuffer | BBox],
    temporal: TemporalSpec,
    output: OutputSpec = OutputSpec.pooled(),
    backend: str | Provider = DEFAULT_BACKEND,
    device: str | None = "auto",
    input_prep: str | TileSpec = "resize",
    *,
    sensor: SensorSpec | Sequence[SensorSpec] | None = None,
    variant: str | None = None,
    preprocessing: Sequence[Any] | None = None,
    weights: str | Path | WeightsSpec | None = None,
    batch_size: int = 16,
    progress: bool | None = None,
    continue_on_error: bool = False,
    max_retries: int | None = None,
    min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
    on_low_valid: str = "warn",
    workers: int | None = None,
    precision: str = "fp32",
) -> list[Embedding]:
    """One embedding per ROI, in order. Distinct inputs are fetched once, concurrently, and the
    model runs on batches of `batch_size`.

    `preprocessing` replaces the card's chain (list of Step or (name, params)); `sensor` replaces
    the card's default input sensor (a tuple of sensors is fetched on one grid and merged
    band-wise); `weights` runs your own checkpoint (a path, pinned by its sha256, or a
    WeightsSpec). `input_prep`: "resize", "tile", "auto" or a TileSpec (see tiling.py).
    A failed ROI (after `max_retries` retries of transient provider errors) raises BatchError
    naming every failed ROI, unless `continue_on_error=True`, which returns ItemError records
    in their places. Inputs with less than `min_valid_fraction` valid pixels warn (once per
    call), raise per item (`on_low_valid="error"`) or pass (`"allow"`). `workers`: how many
    fetch + preprocessing workers run ahead of the model (processes for local files, threads for
    network providers; None = one per CPU this process may use, or the provider's own concurrency).
    `precision`: "fp32" (default, reference-equal; TF32 off), "tf32", "bf16" or "fp16" (autocast),
    refused where the device cannot do it and recorded in each embedding's meta.
    """
    if isinstance(temporal, TemporalSpec) and str(model).lower() in tables().embedders:
        embedder_class(model).check_temporal(temporal)  # a window the model cannot serve fails before any fetch
    return embed(  # type: ignore[return-value]
        model, spatials, temporal=temporal, output=output, backend=backend, device=device,
        input_prep=input_prep, sensor=sensor, variant=variant, preprocessing=preprocessing, weights=weights,
        batch_size=batch_size, progress=progress, continue_on_error=continue_on_error, max_retries=max_retries,
        min_valid_fraction=min_valid_fraction, on_low_valid=on_low_valid, workers=workers, precision=precision,
    )


def get_embedding(
    model: str,
    spatial: PointBuffer | BBox,
    temporal: TemporalSpec,
    output: OutputSpec = OutputSpec.pooled(),
    backend: str | Provider = DEFAULT_BACKEND,
    device: str | None = "auto",
    input_prep: str | TileSpec = "resize",
    *,
    sensor: SensorSpec | Sequence[SensorSpec] | None = None,
    variant: str | None = None,
    preprocessing: Sequence[Any] | None = None,
    weights: str | Path | WeightsSpec | None = None,
    max_retries: int | None = None,
    min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
    on_low_valid: str = "warn",
    precision: str = "fp32",
    progress: bool | None = None,
) -> Embedding:
    """The embedding of one ROI: exactly `get_embeddings_batch(model, [spatial], ...)[0]`.

    A failure raises the original typed error (ProviderError, DataNotFoundError, ...). `progress`: None
    shows fetch and tile progress on a terminal only when the call lasts more than a couple of seconds
    (a tiled ROI), then a one-line summary; True always, False never.
    """
    if not isinstance(spatial, (PointBuffer, BBox)):
        raise SpecError(f"spatial must be a PointBuffer or BBox, got {spatial!r}")
    try:
        return get_embeddings_batch(
            model, [spatial], temporal, output, backend, device, input_prep,
            sensor=sensor, variant=variant, preprocessing=preprocessing, weights=weights, progress=progress,
            max_retries=max_retries, min_valid_fraction=min_valid_fraction, on_low_valid=on_low_valid,
            precision=precision,
        )[0]
    except BatchError as exc:
        cause = exc.errors[0].cause
        raise (cause if cause is not None else exc.errors[0].to_exception()) from None


def list_models() -> list[str]:
    """Canonical ids of every installed model (aliases resolve too, case-insensitively)."""
    return list(tables().model_ids)


def describe_model(model: str) -> dict[str, Any]:
    """The model card as a dict: input, preprocessing chain, variants and weights, outputs."""
    cls = embedder_class(model)
    card: ModelCard = cls.card
    from .weights import weights_status

    d = card.describe()
    d["plugin"] = tables().embedders[card.id.lower()].plugin
    d["uses_torch"] = bool(cls.uses_torch)
    for v, var in zip(d["variants"], card.variants):
        if var.weights is not None and v.get("weights") is not None:
            v["weights"]["where"] = weights_status(var.weights)
    return d


def inspect_provider_patch(
    spatial: PointBuffer | BBox,
    temporal: TemporalSpec,
    sensor: SensorSpec,
    backend: str | Provider = DEFAULT_BACKEND,
    quicklook: str | None = None,
) -> dict[str, Any]:
    """Fetch the raw input patch (no model) and report what is in it: per-band statistics,
    valid/nodata fraction, value range, provenance; optionally write an RGB quicklook PNG."""
    if not isinstance(spatial, (PointBuffer, BBox)):
        raise SpecError(f"spatial must be a PointBuffer or BBox, got {spatial!r}")
    if not isinstance(sensor, SensorSpec):
        raise SpecError(f"sensor must be a SensorSpec, got {sensor!r}")
    provider = resolve_provider(backend)
    provider.check(sensor)
    req = FetchRequest(grid_for(spatial, sensor.scale_m), temporal, sensor)
    raster = provider.fetch(req)
    bands: dict[str, Any] = {}
    for c, name in enumerate(raster.bands):
        vals = raster.data[:, c][raster.valid]
        if vals.size:
            q = np.percentile(vals, [2, 50, 98])
            bands[name] = {
                "min": float(vals.min()), "max": float(vals.max()), "mean": float(vals.mean()),
                "std": float(vals.std()), "p2": float(q[0]), "median": float(q[1]), "p98": float(q[2]),
            }
        else:
            bands[name] = None
    report: dict[str, Any] = {
        "provider": getattr(provider, "name", type(provider).__name__),
        "grid": {"crs": raster.grid.crs, "shape": list(raster.grid.shape), "res_m": raster.grid.res,
                 "bounds": list(raster.grid.bounds), "footprint_lonlat": list(raster.grid.footprint_lonlat())},
        "frames": len(raster.times),
        "times": [None if t is None else t.isoformat() for t in raster.times],
        "valid_fraction": raster.valid_fraction,
        "nodata_fraction": 1.0 - raster.valid_fraction,
        "value_range": [float(raster.data[raster.valid[:, None].repeat(raster.shape[1], 1)].min()),
                        float(raster.data[raster.valid[:, None].repeat(raster.shape[1], 1)].max())]
        if raster.valid.any() else None,
        "bands": bands,
        "source": raster.meta,
    }
    if quicklook:
        report["quicklook"] = write_quicklook(raster, quicklook)
    return report


def write_quicklook(raster: Any, path: str) -> str:
    """An RGB PNG of the first frame (first three bands, or one band as grey), each band stretched
    between its 2nd and 98th percentile of valid pixels; invalid pixels are black."""
    frame = raster.data[0]
    valid = raster.valid[0]
    idx = [min(k, frame.shape[0] - 1) for k in range(3)]
    img = np.zeros((frame.shape[1], frame.shape[2], 3), dtype=np.uint8)
    for k, c in enumerate(idx):
        band = frame[c]
        vals = band[valid]
        lo, hi = np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0)
        scaled = np.clip((band - lo) / max(float(hi - lo), 1e-12), 0, 1) * 255
        img[..., k] = np.where(valid, np.round(scaled), 0).astype(np.uint8)
    Path(path).write_bytes(_png_rgb(img))
    return str(path)


def _png_rgb(img: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 array as PNG (8-bit RGB, no filtering): no imaging library needed."""
    h, w, _ = img.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def inspect_gee_patch(*args: Any, backend: str | Provider = "gee", **kwargs: Any) -> dict[str, Any]:
    """Backward-compatible alias of inspect_provider_patch with backend="gee"."""
    return inspect_provider_patch(*args, backend=backend, **kwargs)
