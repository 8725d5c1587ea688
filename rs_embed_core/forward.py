"""Stage 5, forward: one batch of prepared inputs through a model, at the asked numeric precision.

On CUDA the batch is stacked straight into pinned host memory and copied without blocking, and the
model's outputs come back once per batch by copies queued behind its kernels (`launch` returns at once;
`Launched.collect` waits), so the runner can stack and issue the next batch while this one computes
(`overlaps`). `precision` chooses how the forward computes:

- "fp32": full float32, TF32 tensor cores off (cuBLAS *and* cuDNN: PyTorch leaves cuDNN convolutions on
  TF32 by default, which moved some models by ~1e-4 relative against the CPU). The reference-equal mode.
- "tf32": float32 storage, TF32 matmuls and convolutions (CUDA, compute capability >= 8.0).
- "bf16" / "fp16": `torch.autocast` to bfloat16 / float16 (outputs are returned as float32).

Numpy-only models always compute in float32; their embeddings record "fp32".
"""

from __future__ import annotations

import contextlib
import json
import warnings
from functools import lru_cache
from typing import Any, Iterator, Sequence

import numpy as np
from attrs import frozen

from .embedder import BatchContext, Embedder, EmbedOutput, check_output
from .errors import SpecError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
DEFAULT_PRECISION = "fp32"
_AUTOCAST = {"bf16": "bfloat16", "fp16": "float16"}


def check_precision(precision: Any) -> str:
    if not isinstance(precision, str) or precision.lower() not in PRECISIONS:
        raise SpecError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision.lower()


@lru_cache(maxsize=None)
def _supported(precision: str, device: str) -> str | None:
    """None when `device` can run `precision`, else why not (checked once per pair, on a tiny op)."""
    import torch

    kind = device.split(":")[0]
    if precision == "fp32":
        return None
    if precision == "tf32":
        if kind != "cuda":
            return "TF32 is a mode of NVIDIA tensor cores; it has no meaning on " + kind
        major, _ = torch.cuda.get_device_capability(torch.device(device))
        return None if major >= 8 else f"this GPU (compute capability {major}.x) has no TF32 tensor cores"
    if kind == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "this GPU does not support bfloat16"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # autocast warns and disables itself for an unsupported dtype
            with torch.autocast(kind, dtype=getattr(torch, _AUTOCAST[precision])):
                a = torch.ones(4, 4, device=device)
                (a @ a).sum().item()
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        return f"autocast to {_AUTOCAST[precision]} failed on {device}: {str(exc).splitlines()[0]}"
    return None


def check_device_precision(precision: str, device: str, uses_torch: bool) -> str:
    """The precision a model will run at on `device`, or a SpecError before any fetch or weights work."""
    precision = check_precision(precision)
    if not uses_torch:
        return "fp32"
    why = _supported(precision, device)
    if why is not None:
        raise SpecError(f"precision={precision!r} cannot run on device {device!r}: {why}; use one of "
                        f"{[p for p in PRECISIONS if p != precision and _supported(p, device) is None]}")
    return precision


@contextlib.contextmanager
def precision_context(precision: str, device: str) -> Iterator[None]:
    """TF32 flags set for the forward (and restored after it) and autocast where asked."""
    import torch

    kind = device.split(":")[0]
    saved = None
    if kind == "cuda":
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        if precision in _AUTOCAST:
            with torch.autocast(kind, dtype=getattr(torch, _AUTOCAST[precision])):
                yield
        else:
            yield
    finally:
        if saved is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def stack_batch(arrays: Sequence[np.ndarray], device: str) -> Any:
    """The batch as one tensor on `device`: via pinned host memory and a non-blocking copy on CUDA."""
    import torch

    shape = (len(arrays), *arrays[0].shape)
    if device.split(":")[0] == "cuda":
        host = torch.empty(shape, dtype=torch.float32, pin_memory=True)
        np.stack(arrays, out=host.numpy())
        return host.to(device, non_blocking=True)
    return torch.from_numpy(np.stack(arrays).astype(np.float32, copy=False)).to(device)


def to_numpy(a: Any) -> np.ndarray | None:
    if a is None:
        return None
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


_EXTRA_MAX = 256  # per-item extra values larger than this stay out of meta (e.g. per-frame grids)


def item_extras(extra: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """EmbedOutput.extra entries that hold one small value per batch item, split per item for meta."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for k, v in extra.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu()
            v = (v.float() if str(v.dtype) in ("torch.bfloat16", "torch.float16") else v).numpy()
        try:
            if len(v) != n:
                continue
        except TypeError:
            continue
        for b in range(n):
            item = v[b]
            item = item.tolist() if hasattr(item, "tolist") else item
            if len(json.dumps(item, default=str)) <= 8 * _EXTRA_MAX:
                out[b][k] = item
    return out


def cpus_left(embedder: Embedder) -> int | None:
    """CPUs the data workers may keep busy while `embedder`'s forward runs: None (no limit) when the
    model computes elsewhere (an accelerator) or without torch, else the CPUs beyond torch's intra-op
    threads (`fetching.Throttle` says why)."""
    if not embedder.uses_torch or str(embedder.device).split(":")[0] != "cpu":
        return None
    import torch

    from .workers import available_cpus

    return max(0, available_cpus() - torch.get_num_threads())


def overlaps(embedder: Embedder) -> bool:
    """Whether `embedder`'s batches may be collected one batch late: its forward only queues work on a
    CUDA device, so the host is free to stack and issue the next batch meanwhile. Elsewhere (CPU, or a
    device whose copies to the host are not queued) the forward has finished when it returns."""
    return embedder.uses_torch and str(embedder.device).split(":")[0] == "cuda"


@frozen(eq=False)
class Launched:
    """One batch whose forward has been issued: its outputs, and on CUDA the event recorded after their
    queued copies to (pinned) host memory. Nothing reads them before `collect` has waited for it."""

    pooled: Any
    grid: Any
    extra: dict[str, Any]
    n: int
    ready: Any = None  # torch.cuda.Event, or None when the outputs are already on the host

    def collect(self) -> tuple[np.ndarray | None, np.ndarray | None, list[dict[str, Any]] | None]:
        """(pooled, grid, per-item extras) as float32 numpy arrays, once the device has produced them (an
        error the device hit while computing them is raised here)."""
        if self.ready is not None:
            self.ready.synchronize()
        extras = item_extras(self.extra, self.n) if self.extra else None
        return to_numpy(self.pooled), to_numpy(self.grid), extras


def _queued_to_host(out: EmbedOutput, n: int, device: str) -> Launched:
    """The outputs' copies to host memory queued on the device's stream, behind the forward's kernels."""
    import torch

    def to_host(a: Any) -> Any:
        if not isinstance(a, torch.Tensor) or a.device.type != "cuda":
            return a
        return a.detach().to("cpu", non_blocking=True)  # lands in pinned memory; valid once `ready` has passed

    pooled, grid = to_host(out.pooled), to_host(out.grid)
    extra = {k: to_host(v) for k, v in out.extra.items()} if out.extra else {}
    ready = torch.cuda.Event()
    ready.record(torch.cuda.current_stream(torch.device(device)))
    return Launched(pooled, grid, extra, n, ready)


def launch(embedder: Embedder, arrays: Sequence[np.ndarray], ctx: BatchContext, precision: str = "fp32") -> Launched:
    """Issue one batch's forward. Errors the model raises while it is called (and shape errors) come
    from here; on CUDA the outputs may still be computing when it returns (see `overlaps`)."""
    if embedder.uses_torch:
        import torch

        x = stack_batch(arrays, embedder.device)
        with torch.inference_mode(), precision_context(precision, embedder.device):
            out = embedder.forward(x, ctx)
    else:
        out = embedder.forward(np.stack(arrays), ctx)
    if not isinstance(out, EmbedOutput):
        raise TypeError(f"{type(embedder).__name__}.forward must return EmbedOutput, got {type(out).__name__}")
    check_output(out, embedder, ctx, len(arrays))  # shapes only: a plugin bug is caught at its first batch
    if overlaps(embedder):
        return _queued_to_host(out, len(arrays), str(embedder.device))
    return Launched(out.pooled, out.grid, dict(out.extra or {}), len(arrays))

