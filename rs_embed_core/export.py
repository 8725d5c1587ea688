"""Dataset export: many ROIs x several models -> files on disk, resumable after any crash.

`export_batch` validates everything first (names, models, sensors, the output folder), plans
items x models, and drives the one runner (`runner.run`), so each distinct input is fetched once
for all models and export results equal `get_embeddings_batch` for the same inputs.

Crash safety: each finished (item, model) is written to `OUT/.parts/` by atomic rename and then
recorded in `OUT/.journal.jsonl` with the part's size and sha256 (one fsync per batch of records).
Parts themselves are not fsync'd: resume verifies every recorded part against its digest and redoes
one that a power cut took with the page cache, so durability costs one fsync per batch, not per item. The deliverables (GeoParquet, Zarr,
GeoTIFF, npz, manifest.json) are rebuilt from the parts at the end of every run, each written to
a temporary name and renamed into place. A run killed at any moment and rerun with
`resume=True` skips what the journal holds, retries failed items, and writes the same files an
uninterrupted run would. A different request on the same `OUT` is refused, naming what changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from attrs import field, frozen

from . import __version__
from .convert import converter
from .embedding import Embedding
from .errors import ExportError, ExportLockedError, ItemError, RsEmbedError, SpecError
from .grid import GridSpec, grid_for
from .providers import FetchRequest, Provider
from .raster import Raster
from .runner import (
    DEFAULT_BATCH_SIZE, DEFAULT_MIN_VALID_FRACTION, Job, _check_spatials, check_run_options, prepare_job,
    resolve_provider, run,
)
from .forward import check_precision
from .plugins import resolve_executor
from .workers import check_workers
from .specs import BBox, OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from .tiling import TileSpec
from .weights import weights_record

LAYOUTS = ("per_item", "combined")
FORMATS = ("auto", "parquet", "npz")
MANIFEST = "manifest.json"
JOURNAL = ".journal.jsonl"
PARTS = ".parts"
REQUEST = ".request.json"
LOCK = ".lock"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@frozen
class ModelRequest:
    """One model of an export, with its own settings (None = the card's default / the call's)."""

    model: str
    variant: str | None = None
    sensor: SensorSpec | tuple[SensorSpec, ...] | None = None
    preprocessing: tuple[Any, ...] | None = field(default=None, converter=lambda v: None if v is None else tuple(v))
    output: OutputSpec | None = None
    weights: str | None = None
    input_prep: str | None = None

    @property
    def key(self) -> str:
        """The file-name stem of this request's outputs: the model id, plus the variant when given."""
        return _file_stem(self.model + (f"-{self.variant}" if self.variant else ""))


def _file_stem(name: str) -> str:
    return _SAFE.sub("_", name).strip("._") or "_"


def _requests(models: Sequence[str | ModelRequest] | str) -> list[ModelRequest]:
    if isinstance(models, (str, ModelRequest)):
        models = [models]
    out = []
    for m in models:
        if isinstance(m, str):
            out.append(ModelRequest(m))
        elif isinstance(m, ModelRequest):
            out.append(m)
        else:
            raise SpecError(f"models takes model ids or ModelRequest records, got {m!r}")
    if not out:
        raise SpecError("models is empty")
    keys = [r.key for r in out]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise SpecError(f"models lists {dupes} more than once (give each a different variant, or drop the repeat)")
    return out


def check_names(names: Sequence[str] | None, n: int) -> list[str]:
    """User names -> safe file stems; empty names, path tricks and duplicates are errors."""
    if names is None:
        return [f"item_{i:06d}" for i in range(n)]
    names = list(names)
    if len(names) != n:
        raise SpecError(f"names has {len(names)} entries for {n} spatials")
    stems = []
    for raw in names:
        if not isinstance(raw, str) or not raw.strip():
            raise SpecError(f"every name must be a non-empty string, got {raw!r}")
        if "/" in raw or "\\" in raw or raw.strip() in (".", "..") or ".." in raw or os.path.isabs(raw) \
                or "\x00" in raw:
            raise SpecError(f"name {raw!r} looks like a path; names become file names (no separators or '..')")
        stems.append(_file_stem(raw.strip()))
    seen: dict[str, str] = {}
    for raw, stem in zip(names, stems):
        if stem in seen:
            raise SpecError(f"names {seen[stem]!r} and {raw!r} give the same file name {stem!r}; names must be unique")
        seen[stem] = raw
    return stems


# ---------------------------------------------------------------- durable small writes


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_tag() -> str:
    """Unique per process and thread, so concurrent writers never share a temporary name."""
    return f"{os.getpid()}-{threading.get_ident()}"


_TMP = re.compile(r"^\..+\.\d+(-\d+)?(\.old)?\.tmp$")


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete the hidden temporaries a killed run left (`.<name>.<pid>[-<tid>].tmp`); call under the export lock."""
    removed = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            if _TMP.match(name):
                p = Path(dirpath) / name
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                    dirnames.remove(name)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def atomic_write(dest: Path, write: Any, *, durable: bool = True) -> None:
    """write(tmp_path) then rename onto dest (file and folder fsync'd when durable): never half a file at `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{_tmp_tag()}.tmp")
    try:
        write(tmp)
        if durable and tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        if tmp.is_dir() and dest.is_dir():  # os.replace cannot replace a non-empty folder: move it aside first
            old = dest.with_name(f".{dest.name}.{_tmp_tag()}.old.tmp")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        if durable:
            _fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def _savez(path: Path, **arrays: Any) -> None:
    """np.savez to exactly `path` (np.savez given a name would append ".npz" to a temporary name)."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _save_part(path: Path, emb: Embedding) -> tuple[int, str]:
    """Write one part; returns its size and sha256, which its journal record keeps so resume can verify it."""
    meta = json.dumps(emb.meta, default=str)
    grid = json.dumps(None if emb.grid is None else converter.unstructure(emb.grid))
    buf = io.BytesIO()
    extra = {} if emb.valid is None else {"valid": emb.valid}
    np.savez(buf, data=emb.data, meta=np.asarray(meta), grid=np.asarray(grid), **extra)
    raw = buf.getvalue()
    atomic_write(path, lambda tmp: tmp.write_bytes(raw), durable=False)  # resume checks the digest instead
    return len(raw), hashlib.sha256(raw).hexdigest()


def _part_verifies(path: Path, rec: dict[str, Any]) -> bool:
    """A part is trusted only if it is what its journal record says (size + sha256); records written before
    digests were kept are trusted when the part loads."""
    try:
        if "sha256" not in rec:
            _load_part(path)
            return True
        return path.stat().st_size == rec.get("size") and hashlib.sha256(path.read_bytes()).hexdigest() == rec["sha256"]
    except Exception:  # noqa: BLE001 - missing, truncated, not an npz: not done, redo it
        return False


def _belonging(recs: dict[tuple[int, str], dict[str, Any]], n: int, keys: list[str],
               report: Path | None) -> dict[tuple[int, str], dict[str, Any]]:
    """Only the journal records of this request's (item, model) pairs; the others are reported once and ignored."""
    wanted = set(keys)
    kept = {k: v for k, v in recs.items() if 0 <= k[0] < n and k[1] in wanted}
    if report is not None and len(kept) < len(recs):
        stray = sorted(set(recs) - set(kept))
        warnings.warn(f"{report / JOURNAL}: ignored {len(stray)} record(s) for items or models this export does "
                      f"not have: {stray[:5]}{' ...' if len(stray) > 5 else ''}", ExportWarning, stacklevel=3)
    return kept


def _load_part(path: Path) -> Embedding:
    with np.load(path, allow_pickle=False) as z:
        grid = json.loads(str(z["grid"]))
        spec = None if grid is None else converter.structure(grid, GridSpec)
        return Embedding(z["data"], json.loads(str(z["meta"])), spec, z["valid"] if "valid" in z.files else None)


class Journal:
    """Append-only record of finished (item, model) pairs; one fsync'd JSON line each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_file():  # a crash may have cut the last line: drop it, or the next record would join it
            raw = path.read_bytes()
            if raw and not raw.endswith(b"\n"):
                with open(path, "r+b") as f:
                    f.truncate(raw.rfind(b"\n") + 1)
                    os.fsync(f.fileno())

    def read(self) -> dict[tuple[int, str], dict[str, Any]]:
        done: dict[tuple[int, str], dict[str, Any]] = {}
        if not self.path.is_file():
            return done
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[(int(rec["item"]), str(rec["model"]))] = rec
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash
        return done

    def append(self, *recs: dict[str, Any]) -> None:
        """Add records in one write and one fsync."""
        if not recs:
            return
        lines = "".join(json.dumps(rec, default=str) + "\n" for rec in recs)
        with open(self.path, "a") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())


# ---------------------------------------------------------------- one writer per folder


class ExportWarning(UserWarning):
    """An export was read or resumed with something to say: incomplete, or journal records ignored."""


class FolderLock:
    """An advisory lock (flock) on `OUT/.lock` held for a whole export. The kernel drops it when its
    process dies, so a killed run's lock is taken over at once; the file names the live holder."""

    def __init__(self, root: Path, *, wait: bool = False) -> None:
        self.path, self.wait, self.file = root / LOCK, wait, None

    def __enter__(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # no flock on this platform: one writer is then the caller's duty
            return self
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another writer"
            f.close()
            raise ExportLockedError(f"{self.path.parent} is being written by another export ({holder}); "
                                    "let it finish, or pass wait=True to wait for it") from None
        except OSError as e:  # e.g. a file system without locks: go on unlocked, but say so
            warnings.warn(f"could not lock {self.path} ({e}); make sure no other export writes there", ExportWarning,
                          stacklevel=3)
            f.close()
            return self
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "thread": threading.get_ident(), "host": socket.gethostname()}))
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            import fcntl

            self.file.truncate(0)  # the holder is gone; the (empty) file stays
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


def _read_doc(path: Path) -> tuple[dict[str, Any] | None, str]:
    """A JSON object file -> (doc, "") or (None, what is wrong with it)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"unreadable: {e}"
    if not isinstance(doc, dict):
        return None, f"holds a JSON {type(doc).__name__}, not an object"
    return doc, ""


def _pinned_request(root: Path) -> dict[str, Any]:
    """The request an export folder was started with: from manifest.json, else from its hidden copy."""
    doc, why = _read_doc(root / MANIFEST)
    if doc is not None and isinstance(doc.get("request"), dict):
        return doc["request"]
    why = why or "has no request"
    copy, _ = _read_doc(root / REQUEST)
    if copy is not None:
        return copy
    raise ExportError(f"{root / MANIFEST} is damaged ({why}) and {root / REQUEST} cannot replace it, so this folder's "
                      "request is unknown; export to a new folder (the parts under .parts are left as they are)")


# ---------------------------------------------------------------- the request fingerprint


def _backend_desc(backend: Any) -> Any:
    if isinstance(backend, str):
        return backend
    desc = getattr(backend, "describe", None)
    return desc() if callable(desc) else {"provider": getattr(backend, "name", type(backend).__name__),
                                           "repr": repr(backend)}


def _request_doc(spatials, names, temporal, reqs, layout, fmt, output, input_prep, save_inputs, save_embeddings,
                 backend) -> dict[str, Any]:
    return {
        "spatials": [converter.unstructure(s) for s in spatials],
        "names": list(names),
        "temporal": converter.unstructure(temporal),
        "models": [_jsonable(converter.unstructure(r)) for r in reqs],
        "layout": layout,
        "format": fmt,
        "output": converter.unstructure(output),
        "input_prep": input_prep if isinstance(input_prep, str) else converter.unstructure(input_prep),
        "save_inputs": save_inputs,
        "save_embeddings": save_embeddings,
        "backend": _backend_desc(backend),
    }


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


_ABSENT = object()
MAX_DIFFS = 8  # differing fields named in a refused resume's error; the rest are counted


def _show(v: Any) -> str:
    text = "(absent)" if v is _ABSENT else json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _changes(old: Any, new: Any, path: str) -> list[str]:
    """`path: old -> new` for every leaf where two JSON documents differ (lists compared position by position)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(old) + [k for k in new if k not in old]
        return [c for k in keys
                for c in _changes(old.get(k, _ABSENT), new.get(k, _ABSENT), f"{path}.{k}" if path else k)]
    if isinstance(old, list) and isinstance(new, list):
        head = [] if len(old) == len(new) else [f"{path}: {len(old)} -> {len(new)} entries"]
        return head + [c for i in range(min(len(old), len(new))) for c in _changes(old[i], new[i], f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {_show(old)} -> {_show(new)}"]


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fields in which a resumed request differs from the folder's, each with both values, at most MAX_DIFFS."""
    old, new = dict(old), dict(new)
    a, b = old.pop("backend", None), new.pop("backend", None)
    # a provider object's repr is not a stable identity: compare provider names only
    a = a.get("provider") if isinstance(a, dict) else a
    b = b.get("provider") if isinstance(b, dict) else b
    changed = _changes(old, new, "") + ([] if a == b else [f"backend: {_show(a)} -> {_show(b)}"])
    if len(changed) > MAX_DIFFS:
        changed = changed[:MAX_DIFFS] + [f"... and {len(changed) - MAX_DIFFS} more"]
    return changed


# ---------------------------------------------------------------- result


@frozen(eq=False, repr=False)
class ExportResult:
    """What an export wrote: the folder, the manifest, and the counts. Its repr is one line (the manifest is
    `result.manifest`, or OUT/manifest.json)."""

    out: Path
    manifest: dict[str, Any]
    files: dict[str, Any]
    ok: int
    failed: int
    skipped: int  # (item, model) pairs already done by an earlier run (resume)

    def __repr__(self) -> str:
        files = ", ".join(f"{k!r}: {v!r}" if isinstance(v, str) or v is None else f"{k!r}: {len(v)} files"
                          for k, v in self.files.items())
        return (f"ExportResult(out={str(self.out)!r}, ok={self.ok}, failed={self.failed}, skipped={self.skipped}, "
                f"complete={self.manifest.get('complete')}, files={{{files}}})")


# ---------------------------------------------------------------- export


def export_batch(
    spatials: Sequence[PointBuffer | BBox],
    temporal: TemporalSpec,
    models: Sequence[str | ModelRequest] | str,
    out: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    layout: str = "per_item",
    backend: str | Provider = "local",
    save_inputs: bool = False,
    save_embeddings: bool = True,
    resume: bool = False,
    output: OutputSpec = OutputSpec.pooled(),
    device: str | None = "auto",
    input_prep: str | TileSpec = "resize",
    format: str = "auto",  # noqa: A002
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
    max_retries: int | None = None,
    min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
    on_low_valid: str = "warn",
    workers: int | None = None,
    precision: str = "fp32",
    wait: bool = False,
    executor: Any = "local",
) -> ExportResult:
    """Embed every ROI with every model and write the results under `out` (see module docs).

    Pooled vectors -> GeoParquet 1.1 (`OUT/<model>.parquet`, one row per ROI, failed rows kept
    with status and error); grids -> Zarr v3 (`OUT/<model>.zarr`, combined layout) or one GeoTIFF
    per ROI (`OUT/items/<name>/<model>.tif`, per_item layout); format="npz" writes npz instead
    (`OUT/<model>.npz` combined, `OUT/items/<name>.npz` per item). `save_inputs` writes each
    distinct fetched input once as GeoTIFF with its grid (`OUT/inputs/`). `OUT/manifest.json`
    records the request, versions, model cards and per-item status. `workers` and `precision` mean
    what they mean for get_embeddings_batch; a precision other than "fp32" is part of the request
    (a resume must ask for the same). One writer at a time holds `OUT/.lock`: another is refused
    with ExportLockedError naming the holder, or waits for it with `wait=True`. `executor` runs the
    fetches and models elsewhere ("ray", or an executor object from a plugin, e.g.
    `rs_embed_ray.RayExecutor(address=...)`); this process still writes every file, so the output and
    its resume are the same whichever executor ran it (docs/distributed.md).
    """
    t0 = time.perf_counter()
    spatials = _check_spatials(spatials)
    if not isinstance(temporal, TemporalSpec):
        raise SpecError(f"temporal must be a TemporalSpec, got {temporal!r}")
    if layout not in LAYOUTS:
        raise SpecError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if format not in FORMATS:
        raise SpecError(f"format must be one of {FORMATS}, got {format!r}")
    if not isinstance(output, OutputSpec):
        raise SpecError(f"output must be an OutputSpec, got {output!r}")
    if not (save_embeddings or save_inputs):
        raise SpecError("nothing to save: save_embeddings and save_inputs are both False")
    policy = check_run_options(max_retries, min_valid_fraction, on_low_valid)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SpecError(f"batch_size must be a positive integer, got {batch_size!r}")
    workers = check_workers(workers)
    precision = check_precision(precision)
    ex = resolve_executor(executor)
    stems = check_names(names, len(spatials))
    shown = list(names) if names is not None else stems
    reqs = _requests(models)
    fmt = "parquet" if format == "auto" else format
    if fmt == "parquet":
        _need("pyarrow", "GeoParquet output")
        if layout == "combined" and (output.mode == "grid" or any(r.output and r.output.mode == "grid" for r in reqs)):
            _need("zarr", "Zarr grid output")
    root = Path(out).expanduser()
    if root.exists() and not root.is_dir():
        raise SpecError(f"out {root} exists and is not a folder")
    provider = resolve_provider(backend)
    jobs = [prepare_job(r.model, output=r.output or output, provider=provider, device=device,
                        input_prep=r.input_prep or input_prep, sensor=r.sensor, variant=r.variant,
                        preprocessing=r.preprocessing, weights=r.weights, precision=precision) for r in reqs]
    for s in spatials:
        for job in jobs:
            grid_for(s, job.sensors[0].scale_m)  # size guard before any work

    request = _request_doc(spatials, shown, temporal, reqs, layout, fmt, output, input_prep, save_inputs,
                           save_embeddings, backend)
    if precision != "fp32":  # only then: manifests written before the option existed still resume
        request["precision"] = precision
    manifest_path = root / MANIFEST
    if ex is not None:  # cluster reachable, out writable: checked before any fetch
        ex.start(root)
    try:
        return _export_unlocked(root, manifest_path, request, resume, wait, spatials, stems, shown, temporal, reqs,
                                jobs, provider, layout, fmt, save_inputs, save_embeddings, batch_size, progress,
                                policy, min_valid_fraction, on_low_valid, workers, t0, ex)
    finally:
        if ex is not None:
            ex.close()


def _export_unlocked(root, manifest_path, request, resume, wait, spatials, stems, shown, temporal, reqs, jobs,
                     provider, layout, fmt, save_inputs, save_embeddings, batch_size, progress, policy,
                     min_valid_fraction, on_low_valid, workers, t0, ex) -> ExportResult:
    root.mkdir(parents=True, exist_ok=True)
    with FolderLock(root, wait=wait):
        if manifest_path.exists():
            if not resume:
                raise SpecError(f"{root} already holds an export; pass resume=True to continue it, or choose another out")
            changed = _diff(_pinned_request(root), request)
            if changed:
                raise SpecError(f"{root} holds an export of a different request; what differs (that folder's -> "
                                "this call's):\n  " + "\n  ".join(changed) +
                                "\nUse another out folder, or repeat the original request (nothing there was changed).")
        elif any(not p.name.startswith(".") for p in root.iterdir()):
            raise SpecError(f"{root} is not empty and holds no rs-embed export; choose an empty or new folder")
        remove_stale_temporaries(root)
        if not (root / REQUEST).is_file():  # a copy of the request that resume can trust when the manifest is damaged
            atomic_write(root / REQUEST, lambda p: p.write_text(json.dumps(request, default=str)))
        if not manifest_path.is_file():  # the request is pinned before any work, so a crash can resume
            atomic_write(manifest_path, lambda p: p.write_text(json.dumps({"request": request, "complete": False},
                                                                          indent=1, default=str)))
        return _export_locked(root, request, spatials, stems, shown, temporal, reqs, jobs, provider, layout, fmt,
                              save_inputs, save_embeddings, batch_size, progress, policy, min_valid_fraction,
                              on_low_valid, workers, t0, ex)


def _export_locked(root, request, spatials, stems, shown, temporal, reqs, jobs, provider, layout, fmt, save_inputs,
                   save_embeddings, batch_size, progress, policy, min_valid_fraction, on_low_valid, workers,
                   t0, ex=None) -> ExportResult:
    manifest_path = root / MANIFEST
    journal = Journal(root / JOURNAL)
    recorded = _belonging(journal.read(), len(spatials), [r.key for r in reqs], root)
    done = {k: v for k, v in recorded.items() if v.get("status") == "ok"
            and (not save_embeddings or _part_verifies(root / PARTS / k[1] / f"{k[0]:06d}.npz", v))}
    pending: dict[tuple[int, ...], list[int]] = {}
    for i in range(len(spatials)):
        todo = tuple(j for j, r in enumerate(reqs) if (i, r.key) not in done)
        if todo:
            pending.setdefault(todo, []).append(i)
    skipped = len(done)
    stats = {"ok": 0, "failed": 0, "fetches": 0}
    inputs_dir = root / ("inputs" if layout == "combined" else "items")

    def on_input(req: FetchRequest, raster: Raster, items: list[int], index: list[int]) -> None:
        stats["fetches"] += 1
        if save_inputs:
            first = index[items[0]]
            sub = f"{stems[first]}/" if layout == "per_item" else ""
            _write_input(inputs_dir / f"{sub}input_{req.key[:12]}.tif", raster)

    for todo, items in pending.items():
        sub_jobs = [jobs[j] for j in todo]
        stream = (run if ex is None else ex.run)(sub_jobs, [spatials[i] for i in items], temporal, provider,
                     names=[shown[i] for i in items], batch_size=batch_size, progress=progress, retry=policy,
                     min_valid_fraction=min_valid_fraction, on_low_valid=on_low_valid, workers=workers,
                     on_input=lambda q, r, its, _items=items: on_input(q, r, its, _items), input_pixels=save_inputs)
        group: list[dict[str, Any]] = []  # records whose parts are written, journaled a group at a time

        def commit() -> None:
            journal.append(*group)
            group.clear()

        try:
            for k, jj, result in stream:
                i, r = items[k], reqs[todo[jj]]
                if isinstance(result, ItemError):
                    rec = {"item": i, "model": r.key, "status": "failed",
                           "error": {**_jsonable(converter.unstructure(result)), "index": i}}
                    rec["error"].pop("cause", None)
                    stats["failed"] += 1
                else:
                    if save_embeddings:
                        part = root / PARTS / r.key / f"{i:06d}.npz"
                        size, digest = _save_part(part, result)
                    rec = {"item": i, "model": r.key, "status": "ok",
                           **({"size": size, "sha256": digest} if save_embeddings else {})}
                    stats["ok"] += 1
                group.append(rec)
                if len(group) >= batch_size:
                    commit()
        finally:  # also on Ctrl-C or an error: what is written is recorded, so a resume skips it
            commit()

    final = _belonging(journal.read(), len(spatials), [r.key for r in reqs], None)
    files = _consolidate(root, reqs, jobs, spatials, shown, stems, temporal, final, layout, fmt, save_embeddings)
    manifest = _manifest(request, reqs, jobs, spatials, shown, final, files, stats, skipped,
                         time.perf_counter() - t0, provider)
    atomic_write(manifest_path, lambda p: p.write_text(json.dumps(manifest, indent=1, default=str)))
    failed = sum(1 for v in final.values() if v.get("status") != "ok")
    return ExportResult(root, manifest, files, len(final) - failed, failed, skipped)


def _need(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise SpecError(f"{what} needs {module}: pip install pyarrow zarr (or format='npz')")


def export_npz(
    spatial: PointBuffer | BBox,
    temporal: TemporalSpec,
    models: Sequence[str | ModelRequest] | str,
    out_path: str | os.PathLike[str],
    backend: str | Provider = "local",
    output: OutputSpec = OutputSpec.pooled(),
    device: str | None = "auto",
    input_prep: str | TileSpec = "resize",
    save_inputs: bool = False,
    **kwargs: Any,
) -> Path:
    """One ROI, several models, one .npz file: a convenience wrapper around `export_batch`.

    The file holds `<model>` arrays (the embeddings), `<model>__meta` JSON strings, and, for grids,
    `<model>__crs` / `<model>__transform`. The resumable export itself lives next to it in
    `<out_path>.export/`.
    """
    if not isinstance(spatial, (PointBuffer, BBox)):
        raise SpecError(f"spatial must be a PointBuffer or BBox, got {spatial!r}")
    dest = Path(out_path).expanduser()
    if dest.suffix.lower() != ".npz":
        raise SpecError(f"out_path must end in .npz, got {dest}")
    if not dest.parent.is_dir():
        raise SpecError(f"the folder of out_path does not exist: {dest.parent}")
    res = export_batch([spatial], temporal, models, dest.with_name(dest.name + ".export"), names=[dest.stem],
                       layout="combined", backend=backend, output=output, device=device, input_prep=input_prep,
                       format="npz", save_inputs=save_inputs, **kwargs)
    arrays: dict[str, np.ndarray] = {}
    for r in _requests(models):
        with np.load(res.out / f"{r.key}.npz", allow_pickle=False) as z:
            arrays[r.key] = z["embeddings"][0]
            arrays[f"{r.key}__meta"] = z["meta"][0]
            arrays[f"{r.key}__status"] = z["status"][0]
            for extra in ("crs", "transform", "valid"):
                if extra in z:
                    arrays[f"{r.key}__{extra}"] = z[extra][0]
    atomic_write(dest, lambda p: _savez(p, **arrays))
    return dest


# ---------------------------------------------------------------- inputs


def _write_input(path: Path, raster: Raster) -> None:
    """A fetched input as GeoTIFF on its grid: T x C bands named "t{k}:{band}", then a valid-mask band per frame."""
    if path.is_file():
        return
    import rasterio

    t, c, h, w = raster.shape
    g = raster.grid

    def write(tmp: Path) -> None:
        with rasterio.open(tmp, "w", driver="GTiff", width=w, height=h, count=t * (c + 1), dtype="float32",
                           crs=g.crs, transform=g.affine(), compress="deflate") as dst:
            k = 1
            for f in range(t):
                for b, name in enumerate(raster.bands):
                    dst.write(raster.data[f, b], k)
                    dst.set_band_description(k, f"t{f}:{name}")
                    k += 1
            for f in range(t):
                dst.write(raster.valid[f].astype(np.float32), k)
                dst.set_band_description(k, f"t{f}:valid")
                k += 1
            dst.update_tags(times=json.dumps([None if x is None else x.isoformat() for x in raster.times]))

    atomic_write(path, write)


# ---------------------------------------------------------------- consolidation


def _footprint_wkb(spatial: PointBuffer | BBox, gsd: float) -> tuple[bytes, tuple[float, float, float, float]]:
    """The ROI grid's footprint as a WGS 84 polygon (WKB, densified edges) and its bbox."""
    from .grid import _transformer

    g = grid_for(spatial, gsd)
    left, bottom, right, top = g.bounds
    n = 8
    ring = ([(left + (right - left) * k / n, top) for k in range(n)]
            + [(right, top - (top - bottom) * k / n) for k in range(n)]
            + [(right - (right - left) * k / n, bottom) for k in range(n)]
            + [(left, bottom + (top - bottom) * k / n) for k in range(n)])
    lons, lats = _transformer(g.crs, "EPSG:4326").transform([p[0] for p in ring], [p[1] for p in ring])
    ref = lons[0]
    lons = [((lo - ref + 180.0) % 360.0) - 180.0 + ref for lo in lons]
    pts = list(zip(lons, lats))
    pts.append(pts[0])
    import struct

    wkb = struct.pack("<BII", 1, 3, 1) + struct.pack("<I", len(pts)) + b"".join(struct.pack("<dd", x, y) for x, y in pts)
    return wkb, (min(lons), min(lats), max(lons), max(lats))


def _consolidate(root, reqs, jobs, spatials, shown, stems, temporal, final, layout, fmt, save_embeddings):
    files: dict[str, Any] = {}
    if not save_embeddings:
        return files
    for r, job in zip(reqs, jobs):
        parts = root / PARTS / r.key

        def part(i: int) -> Embedding | None:
            rec = final.get((i, r.key))
            if rec is None or rec.get("status") != "ok":
                return None
            return _load_part(parts / f"{i:06d}.npz")

        def error(i: int) -> str | None:
            rec = final.get((i, r.key))
            if rec is None:
                return "not run"
            return None if rec.get("status") == "ok" else json.dumps(rec.get("error"))

        if fmt == "npz":
            files[r.key] = _write_npz(root, r, job, spatials, shown, stems, part, error, layout)
        elif job.output.mode == "pooled":
            files[r.key] = _write_parquet(root / f"{r.key}.parquet", r, job, spatials, shown, temporal, part, error)
        elif layout == "combined":
            files[r.key] = _write_zarr(root / f"{r.key}.zarr", job, spatials, shown, part, error)
        else:
            files[r.key] = _write_tiffs(root, r, spatials, stems, part)
    return files


def _write_parquet(dest: Path, r: ModelRequest, job: Job, spatials, shown, temporal, part, error) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = next((e for e in map(part, range(len(spatials))) if e is not None), None)
    dim = int(first.data.shape[0]) if first is not None else (
        job.variant.pooled_dim if job.output.pooling == "model" else job.variant.grid_dim)
    shapes = [_footprint_wkb(s, job.sensors[0].scale_m) for s in spatials]  # small: ~0.6 kB a ROI
    bbox = [min(b[0] for _, b in shapes), min(b[1] for _, b in shapes),
            max(b[2] for _, b in shapes), max(b[3] for _, b in shapes)]
    geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": {
        "encoding": "WKB", "geometry_types": ["Polygon"], "bbox": bbox}}}
    schema = pa.schema([
        ("id", pa.int64()), ("name", pa.string()), ("geometry", pa.binary()),
        ("start_datetime", pa.timestamp("us", tz="UTC")), ("end_datetime", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()), ("variant", pa.string()), ("weights_revision", pa.string()),
        ("embedding", pa.list_(pa.float32(), dim)), ("valid_fraction", pa.float64()),
        ("status", pa.string()), ("error", pa.string()),
    ], metadata={"geo": json.dumps(geo)})
    start = dt.datetime.combine(temporal.start, dt.time(), dt.timezone.utc)
    end = dt.datetime.combine(temporal.end, dt.time(), dt.timezone.utc)
    rev = job.variant.weights.revision if job.variant.weights else None

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as w:
            for lo in range(0, len(spatials), 1024):  # row groups: memory flat in the number of ROIs
                rows: dict[str, list] = {n: [] for n in schema.names}
                for i in range(lo, min(lo + 1024, len(spatials))):
                    e = part(i)
                    if e is not None and e.data.shape != (dim,):
                        raise SpecError(f"{r.model}: item {i} has a {e.data.shape} embedding, expected ({dim},)")
                    for k, v in (("id", i), ("name", shown[i]), ("geometry", shapes[i][0]), ("start_datetime", start),
                                 ("end_datetime", end), ("model", job.card.id), ("variant", job.variant.name),
                                 ("weights_revision", rev),
                                 ("embedding", None if e is None else e.data.astype(np.float32)),
                                 ("valid_fraction", None if e is None else e.meta.get("valid_fraction")),
                                 ("status", "ok" if e is not None else "failed"), ("error", error(i))):
                        rows[k].append(v)
                w.write_table(pa.table(rows, schema=schema))

    atomic_write(dest, write)
    return dest.name


ZARR_COORDS = "name status crs y_utm x_utm"  # the non-index coordinates of the Zarr data arrays


def _write_zarr(dest: Path, job: Job, spatials, shown, part, error) -> str:
    """One Zarr v3 group: `embedding` (item, band, y, x) and `valid` (item, y, x), NaN-padded to the largest grid,
    with index coordinates item/band/y/x, per item its name, status, CRS and cell-centre coordinates (`y_utm`,
    `x_utm`, NaN in the padding), the CRS and transform of each item in the attributes, and consolidated metadata
    so xarray and zarr open it in one read."""
    import zarr

    n = len(spatials)
    shapes = {}
    for i in range(n):
        e = part(i)
        if e is not None:
            shapes[i] = e.data.shape
    d = job.variant.grid_dim
    hmax = max((s[1] for s in shapes.values()), default=1)
    wmax = max((s[2] for s in shapes.values()), default=1)
    items = []

    def coord(group: Any, name: str, values: np.ndarray, dims: tuple[str, ...], **attrs: Any) -> None:
        # text as zarr's variable-length strings: its fixed-width unicode type has no v3 specification yet
        a = group.create_array(name, shape=values.shape, dtype=str if values.dtype.kind == "U" else values.dtype,
                               dimension_names=dims)
        a[...] = values
        a.attrs.update(attrs)

    def write(tmp: Path) -> None:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        arr = group.create_array("embedding", shape=(n, d, hmax, wmax), chunks=(1, d, hmax, wmax),
                                 dtype="float32", fill_value=float("nan"),
                                 dimension_names=("item", "band", "y", "x"))
        valid = group.create_array("valid", shape=(n, hmax, wmax), chunks=(1, hmax, wmax), dtype="float32",
                                   fill_value=float("nan"), dimension_names=("item", "y", "x"))
        ys, xs = np.full((n, hmax), np.nan), np.full((n, wmax), np.nan)
        crs, status = [""] * n, []
        for i in range(n):
            e = part(i)
            entry: dict[str, Any] = {"id": i, "name": shown[i], "status": "ok" if e is not None else "failed",
                                     "error": error(i)}
            status.append(entry["status"])
            if e is not None:
                h, w = e.data.shape[1:]
                arr[i, :, :h, :w] = e.data
                if e.valid is not None:
                    valid[i, :h, :w] = e.valid
                ys[i, :h], xs[i, :w], crs[i] = e.grid.y_coords(), e.grid.x_coords(), e.grid.crs
                entry.update(crs=e.grid.crs, transform=list(e.grid.transform), shape=[h, w])
            items.append(entry)
        coord(group, "item", np.arange(n, dtype=np.int64), ("item",))
        coord(group, "band", np.arange(d, dtype=np.int64), ("band",))
        coord(group, "y", np.arange(hmax, dtype=np.int64), ("y",), description="cell row in the item's grid")
        coord(group, "x", np.arange(wmax, dtype=np.int64), ("x",), description="cell column in the item's grid")
        coord(group, "name", np.asarray(shown, dtype=str), ("item",))
        coord(group, "status", np.asarray(status, dtype=str), ("item",))
        coord(group, "crs", np.asarray(crs, dtype=str), ("item",))
        coord(group, "y_utm", ys, ("item", "y"), units="m", description="cell centre northing, in the item's crs")
        coord(group, "x_utm", xs, ("item", "x"), units="m", description="cell centre easting, in the item's crs")
        arr.attrs.update({"coordinates": ZARR_COORDS, "dims": ["item", "band", "y", "x"], "items": items,
                          "model": job.card.id, "variant": job.variant.name})
        valid.attrs.update({"coordinates": ZARR_COORDS, "description": "fraction of valid input values under each "
                            "cell; 0: the cell saw only fill (its embedding is NaN); NaN: padding or failed item"})
        with warnings.catch_warnings():  # consolidated metadata is zarr-python's v3 extension; xarray reads it
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            zarr.consolidate_metadata(str(tmp))

    atomic_write(dest, write, durable=False)
    return dest.name


def _write_tiffs(root: Path, r: ModelRequest, spatials, stems, part) -> list[str]:
    import rasterio

    out = []
    for i in range(len(spatials)):
        e = part(i)
        if e is None:
            continue
        dest = root / "items" / stems[i] / f"{r.key}.tif"
        d, h, w = e.data.shape

        def write(tmp: Path, e: Embedding = e) -> None:
            with rasterio.open(tmp, "w", driver="GTiff", width=w, height=h, count=d, dtype="float32",
                               crs=e.grid.crs, transform=e.grid.affine(), compress="deflate", nodata=np.nan) as dst:
                dst.write(e.data)
                dst.update_tags(model=e.meta.get("model"), variant=e.meta.get("variant"))

        def write_valid(tmp: Path, e: Embedding = e) -> None:
            with rasterio.open(tmp, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32",
                               crs=e.grid.crs, transform=e.grid.affine(), compress="deflate") as dst:
                dst.write(e.valid, 1)
                dst.set_band_description(1, "valid_fraction")

        atomic_write(dest, write)
        out.append(str(dest.relative_to(root)))
        if e.valid is not None:
            atomic_write(_valid_tif(dest), write_valid)
            out.append(str(_valid_tif(dest).relative_to(root)))
    return out


def _valid_tif(tif: Path) -> Path:
    """The sidecar GeoTIFF holding a grid GeoTIFF's cell valid mask: `<model>.tif` -> `<model>.valid.tif`."""
    return tif.with_name(tif.stem + ".valid.tif")


def _padded(a: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """`a` in the top-left corner of a NaN array of `shape` (all NaN for None)."""
    out = np.full(shape, np.nan, np.float32)
    if a is not None:
        out[tuple(slice(0, k) for k in a.shape)] = a
    return out


def _write_npz(root: Path, r: ModelRequest, job: Job, spatials, shown, stems, part, error, layout) -> Any:
    n = len(spatials)
    embs = [part(i) for i in range(n)]
    status = np.asarray(["ok" if e is not None else "failed" for e in embs])
    errors = np.asarray([error(i) or "" for i in range(n)])
    metas = np.asarray([json.dumps(e.meta, default=str) if e is not None else "" for e in embs])
    ok = [e for e in embs if e is not None]
    # grids of different ROI sizes share one array, NaN-padded to the largest (like the Zarr output)
    shape = tuple(int(v) for v in np.max([e.data.shape for e in ok], axis=0)) if ok else (
        (job.variant.pooled_dim,) if job.output.mode == "pooled" else (0,))

    def filled(e: Embedding | None) -> np.ndarray:
        return _padded(None if e is None else e.data, shape)

    extra: dict[str, np.ndarray] = {}
    if job.output.mode == "grid":
        extra["crs"] = np.asarray([e.grid.crs if e is not None else "" for e in embs])
        extra["transform"] = np.asarray([list(e.grid.transform) if e is not None else [np.nan] * 6 for e in embs])
        extra["grid_shape"] = np.asarray([list(e.data.shape[1:]) if e is not None else [0, 0] for e in embs])
        if any(e.valid is not None for e in ok):
            extra["valid"] = np.stack([_padded(None if e is None else e.valid, shape[1:]) for e in embs])
    if layout == "combined":
        dest = root / f"{r.key}.npz"
        atomic_write(dest, lambda p: _savez(p, embeddings=np.stack([filled(e) for e in embs]),
                                            names=np.asarray(shown), status=status, error=errors, meta=metas, **extra))
        return dest.name
    out = []
    for i, e in enumerate(embs):
        dest = root / "items" / stems[i] / f"{r.key}.npz"
        per = {k: v[i:i + 1] for k, v in extra.items()}
        atomic_write(dest, lambda p, i=i, e=e, per=per: _savez(
            p, embeddings=filled(e)[None], names=np.asarray([shown[i]]), status=status[i:i + 1],
            error=errors[i:i + 1], meta=metas[i:i + 1], **per))
        out.append(str(dest.relative_to(root)))
    return out


def _manifest(request, reqs, jobs, spatials, shown, final, files, stats, skipped, seconds, provider) -> dict[str, Any]:
    from .runner import _versions

    versions: dict[str, str] = {}
    for job in jobs:
        versions.update(_versions(job.cls, bool(job.cls.uses_torch)))
    models = {}
    for r, job in zip(reqs, jobs):
        w = job.variant.weights
        models[r.key] = {
            "model": job.card.id, "variant": job.variant.name,
            "dimensions": job.variant.pooled_dim if job.output.mode == "pooled" else job.variant.grid_dim,
            "output": converter.unstructure(job.output),
            "weights": weights_record(w),
            "preprocessing": [s.to_dict() for s in job.steps],
            "sensors": [converter.unstructure(s) for s in job.sensors],
            "device": job.device,
            "precision": job.precision,
            "file": files.get(r.key),
        }
    items = []
    for i, s in enumerate(spatials):
        status, errors = {}, {}
        for r in reqs:
            rec = final.get((i, r.key))
            status[r.key] = "pending" if rec is None else rec["status"]
            if rec is not None and rec["status"] != "ok":
                errors[r.key] = rec.get("error")
        items.append({"id": i, "name": shown[i], "spatial": converter.unstructure(s), "status": status,
                      **({"errors": errors} if errors else {})})
    ok = sum(1 for v in final.values() if v.get("status") == "ok")
    return _jsonable({
        "type": "rs-embed-export",
        "rs_embed_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": ok == len(spatials) * len(reqs),
        "request": request,
        "provider": getattr(provider, "name", type(provider).__name__),
        "versions": versions,
        "models": models,
        "items": items,
        "counts": {"items": len(spatials), "models": len(reqs), "ok": ok,
                   "failed": sum(1 for v in final.values() if v.get("status") != "ok"),
                   "skipped_done_earlier": skipped, "fetches_this_run": stats["fetches"]},
        "timings": {"seconds_this_run": round(seconds, 3)},
    })


# ---------------------------------------------------------------- reading back


@frozen(eq=False)
class LoadedExport:
    """An export read back: per-model arrays in input order (failed items are NaN, never dropped)."""

    path: Path
    manifest: dict[str, Any]
    names: list[str]
    embeddings: dict[str, np.ndarray]  # model key -> (N, D) pooled, or (N, D, h, w) grids (NaN-padded)
    status: dict[str, np.ndarray]  # model key -> (N,) "ok" / "failed" / "pending"
    grids: dict[str, list[GridSpec | None]]  # model key -> per item GridSpec of grid outputs
    # model key -> (N, h, w) cell valid fractions of grid outputs (NaN-padded like the grids; NaN for failed items)
    valid: dict[str, np.ndarray] = field(factory=dict)

    @property
    def items(self) -> list[dict[str, Any]]:
        return self.manifest.get("items", [])


def load_export(path: str | os.PathLike[str]) -> LoadedExport:
    """Read an export folder (any layout, any format) into arrays in input order."""
    root = Path(path).expanduser()
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise SpecError(f"{root} holds no rs-embed export ({MANIFEST} not found)")
    manifest, why = _read_doc(mpath)
    if manifest is None or not isinstance(manifest.get("request"), dict):
        raise ExportError(f"{mpath} is damaged ({why or 'it has no request'}); rerun export_batch with the same "
                          "request and resume=True to rebuild it from the parts")
    req = manifest["request"]
    try:
        names = list(req["names"])
        layout, fmt = req["layout"], req["format"]
    except (KeyError, TypeError) as e:
        raise ExportError(f"{mpath} is damaged (its request lacks {e}); rerun export_batch with the same "
                          "request and resume=True to rebuild it") from None
    n = len(names)
    stems = check_names(names, n)
    if "models" not in manifest:  # the first run never finished: only the parts hold results
        return _load_parts(root, manifest, names)
    embeddings, status, grids, valid = {}, {}, {}, {}
    for key, info in manifest.get("models", {}).items():
        st = np.asarray([it["status"].get(key, "pending") for it in manifest["items"]])
        status[key] = st
        mode = info["output"]["mode"]
        try:
            arr, gl, mask = _read_deliverable(root, key, stems, layout, fmt, mode, st, n)
        except RsEmbedError:
            raise
        except Exception as e:  # noqa: BLE001 - any reader's failure on a damaged file becomes one typed error
            raise ExportError(f"{root}: the {key!r} output is missing or damaged ({type(e).__name__}: {e}); rerun "
                              "export_batch with the same request and resume=True to rebuild it from the parts") from e
        embeddings[key], grids[key] = arr, gl
        if mask is not None:
            valid[key] = mask
    if not manifest.get("complete", True):
        c = manifest.get("counts", {})
        warnings.warn(f"{root} is an incomplete export: {c.get('ok', '?')} of "
                      f"{c.get('items', n) * c.get('models', len(embeddings))} (item, model) pairs are done "
                      f"({c.get('failed', '?')} failed); the others are NaN with status 'failed' or 'pending'",
                      ExportWarning, stacklevel=2)
    return LoadedExport(root, manifest, names, embeddings, status, grids, valid)


def _read_deliverable(root: Path, key: str, stems: list[str], layout: str, fmt: str, mode: str, st: np.ndarray,
                      n: int) -> tuple[np.ndarray, list[GridSpec | None], np.ndarray | None]:
    """(embeddings, per item grids, cell valid masks or None) of one model's output files."""
    if fmt == "npz":
        return _read_npz(root, key, stems, layout, mode)
    if mode == "pooled":
        import pyarrow.parquet as pq

        table = pq.read_table(root / f"{key}.parquet", columns=["id", "embedding"])
        dim = pq.read_schema(root / f"{key}.parquet").field("embedding").type.list_size
        arr = np.full((n, dim), np.nan, np.float32)
        for i, v in zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()):
            if v is not None:
                arr[i] = v
        return arr, [None] * n, None
    if layout == "combined":
        import zarr

        group = zarr.open_group(str(root / f"{key}.zarr"), mode="r")
        z = group["embedding"]
        gl = [None if it.get("crs") is None else _grid_of(it["crs"], it["transform"], it["shape"])
              for it in z.attrs["items"]]
        return np.asarray(z[:]), gl, np.asarray(group["valid"][:]) if "valid" in group else None
    return _read_tiffs(root, key, stems, st)


def _load_parts(root: Path, manifest: dict[str, Any], names: list[str]) -> LoadedExport:
    """An export whose first run never finished: read what its verified parts hold, and warn with the counts."""
    n = len(names)
    keys = [ModelRequest(m["model"], m.get("variant")).key for m in manifest["request"].get("models", [])]
    recs = _belonging(Journal(root / JOURNAL).read() if (root / JOURNAL).is_file() else {}, n, keys, None)
    embeddings, status, grids, valid = {}, {}, {}, {}
    for key in keys:
        embs: list[Embedding | None] = [None] * n
        st = np.asarray(["pending"] * n, dtype=object)
        for i in range(n):
            rec = recs.get((i, key))
            if rec is None:
                continue
            path = root / PARTS / key / f"{i:06d}.npz"
            if rec.get("status") == "ok" and _part_verifies(path, rec):
                embs[i], st[i] = _load_part(path), "ok"
            elif rec.get("status") != "ok":
                st[i] = "failed"
        ok = [e.data for e in embs if e is not None]
        shape = tuple(int(v) for v in np.max([d.shape for d in ok], axis=0)) if ok else (0,)
        arr = np.full((n, *shape), np.nan, np.float32)
        for i, e in enumerate(embs):
            if e is not None:
                arr[(i, *(slice(0, k) for k in e.data.shape))] = e.data
        embeddings[key], status[key] = arr, st.astype(str)
        grids[key] = [None if e is None else e.grid for e in embs]
        if any(e is not None and e.valid is not None for e in embs):
            valid[key] = np.stack([_padded(None if e is None else e.valid, shape[1:]) for e in embs])
    done = sum(int((s == "ok").sum()) for s in status.values())
    warnings.warn(f"{root} is an unfinished export (its run stopped before writing the outputs): loaded {done} of "
                  f"{n * len(keys)} (item, model) pairs from its parts; resume it with resume=True to finish",
                  ExportWarning, stacklevel=3)
    return LoadedExport(root, manifest, names, embeddings, status, grids, valid)


def _grid_of(crs: str, transform: Sequence[float], shape: Sequence[int]) -> GridSpec:
    a, _, c, _, e, f = transform
    return GridSpec(crs, c, f, a, int(shape[1]), int(shape[0]), None if abs(-e - a) < 1e-9 * abs(a) else -e)


def _read_npz(root: Path, key: str, stems: list[str], layout: str, mode: str):
    files = [root / f"{key}.npz"] if layout == "combined" else [root / "items" / s / f"{key}.npz" for s in stems]
    arrs, grids, masks = [], [], []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            arrs.append(z["embeddings"])
            if "valid" in z.files:
                masks.append(z["valid"])
            if mode == "grid":
                for crs, tr, hw in zip(z["crs"], z["transform"], z["grid_shape"]):
                    grids.append(_grid_of(str(crs), tr, hw) if str(crs) else None)
            else:
                grids.extend([None] * len(z["embeddings"]))
    return np.concatenate(arrs), grids, np.concatenate(masks) if masks and len(masks) == len(arrs) else None


def _read_tiffs(root: Path, key: str, stems: list[str], status: np.ndarray):
    import rasterio

    data, grids, masks = [], [], []
    for s, st in zip(stems, status):
        f = root / "items" / s / f"{key}.tif"
        if st != "ok":  # an "ok" item's missing file is an error (load_export says to resume), never NaN
            data.append(None)
            grids.append(None)
            masks.append(None)
            continue
        with rasterio.open(f) as src:
            data.append(src.read())
            grids.append(_grid_of(src.crs.to_string(), list(src.transform)[:6], (src.height, src.width)))
        if _valid_tif(f).is_file():  # exports written before cell masks existed have none
            with rasterio.open(_valid_tif(f)) as src:
                masks.append(src.read(1))
        else:
            masks.append(None)
    shape = next((d.shape for d in data if d is not None), (0, 0, 0))
    hmax = max((d.shape[1] for d in data if d is not None), default=0)
    wmax = max((d.shape[2] for d in data if d is not None), default=0)
    arr = np.full((len(stems), shape[0], hmax, wmax), np.nan, np.float32)
    for i, d in enumerate(data):
        if d is not None:
            arr[i, :, :d.shape[1], :d.shape[2]] = d
    valid = None
    if any(m is not None for m in masks):
        valid = np.stack([_padded(m, (hmax, wmax)) for m in masks])
    return arr, grids, valid
