"""Model weights: find a pinned file, prove it is the right one, load it strictly.

A variant's WeightsSpec pins a Hugging Face file to a commit and a sha256. `weights_file`
resolves it (a local directory override first, then the Hugging Face cache / Hub), verifies
the hash and remembers the verification so multi-GB files are not re-hashed on every load.
`load_state_dict` reads safetensors memory-mapped and opens pickle checkpoints only with
`torch.load(weights_only=True)`, converting them once to safetensors. `strict_load` loads
into a module with an explicit drop list, so a checkpoint that does not fit fails loudly
instead of leaving layers randomly initialised.

torch is imported inside functions only: the core must stay importable without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, TYPE_CHECKING, Any, Iterable, Mapping

from .card import WeightsSpec
from .errors import SpecError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "WeightsSpec",
    "WeightsError",
    "WEIGHTS_DIR_ENV",
    "CACHE_ENV",
    "rs_embed_cache_dir",
    "weights_file",
    "load_state_dict",
    "strict_load",
]

log = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "RS_EMBED_WEIGHTS_DIR"
CACHE_ENV = "RS_EMBED_CACHE"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_LIST_LIMIT = 12

# One path component: no separators, no "..", no leading dot or dash, printable ASCII only.
_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}$")


def rs_embed_cache_dir() -> Path:
    """`$RS_EMBED_CACHE` or `~/.cache/rs-embed`: verification records and converted weights."""
    raw = os.environ.get(CACHE_ENV)
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "rs-embed"


# --------------------------------------------------------------------------- names -> paths


def _component(value: str, what: str, spec: WeightsSpec) -> str:
    if not _COMPONENT.match(value) or ".." in value:
        raise WeightsError(
            f"unsafe {what} {value!r} in weights spec for {spec.repo_id!r} / {spec.filename!r}: "
            "path components must be plain names (letters, digits, '._+-'), not '..', absolute or hidden"
        )
    return value


def _repo_parts(spec: WeightsSpec) -> tuple[str, str]:
    parts = spec.repo_id.split("/")
    if len(parts) != 2:
        raise WeightsError(f"weights repo_id must be 'org/name', got {spec.repo_id!r}")
    return _component(parts[0], "repo org", spec), _component(parts[1], "repo name", spec)


def _file_parts(spec: WeightsSpec) -> list[str]:
    name = spec.filename
    if not name or name.startswith("/") or "\\" in name:
        raise WeightsError(f"unsafe weights filename {name!r} for {spec.repo_id!r}: must be a relative POSIX path")
    return [_component(p, "filename component", spec) for p in name.split("/")]


def _override_candidates(spec: WeightsSpec, root: Path) -> list[Path]:
    org, name = _repo_parts(spec)
    parts = _file_parts(spec)
    return [root.joinpath(f"{org}__{name}", *parts), root.joinpath(*parts)]


def _hf_cache_path(spec: WeightsSpec) -> Path:
    from huggingface_hub import constants

    org, name = _repo_parts(spec)
    return Path(constants.HF_HUB_CACHE).joinpath(
        f"{spec.repo_type}s--{org}--{name}", "snapshots", spec.revision, *_file_parts(spec)
    )


# --------------------------------------------------------------------------- hashing


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # streams in chunks


def _record_path(real: Path) -> Path:
    key = hashlib.sha256(str(real).encode()).hexdigest()[:40]
    return rs_embed_cache_dir() / "verified" / f"{key}.json"


def _stat_key(real: Path) -> dict[str, Any]:
    """What identifies one version of a file without reading it.

    ctime (inode change time) cannot be set from user space: any write, rename onto the path or
    `utime` call moves it, so a same-size replacement with a restored mtime still invalidates the
    record. The inode and device catch a file swapped in by rename.
    """
    st = real.stat()
    return {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino, "device": st.st_dev}


def _atomic_write(dest: Path, write: Any) -> None:
    """Write through a temp file in the destination folder, then rename: readers never see half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_digest(path: Path) -> str:
    """The sha256 of `path`, from the verification record when this exact file version was hashed
    before (see `_stat_key`), else by reading it (and recording the result)."""
    real = path.resolve()
    key = _stat_key(real)
    record = _record_path(real)
    try:
        saved = json.loads(record.read_text())
        if {k: saved.get(k) for k in key} == key and isinstance(saved.get("sha256"), str):
            return saved["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    got = _sha256(real)
    if _stat_key(real) != key:  # changed while we read it: do not record a digest of a moving target
        return got
    try:
        body = json.dumps({**key, "sha256": got})
        _atomic_write(record, lambda tmp: Path(tmp).write_text(body))
    except OSError as exc:  # a read-only cache only costs a re-hash next time
        log.debug("could not record verified weights %s: %s", real, exc)
    return got


def _verify(path: Path, spec: WeightsSpec, content_digest: Callable[[Path], str] | None = None) -> str:
    """Check the file against the pinned sha256 (or its pinned prefix); return the full digest."""
    if content_digest is not None:
        got = content_digest(path)
        if not spec.matches(got):
            raise WeightsError(
                f"content sha256 mismatch for {spec.repo_id}/{spec.filename} @ {spec.revision}: "
                f"expected {spec.sha256}, got {got} (file: {path}). Delete it and fetch the pinned revision again."
            )
        return got
    got = file_digest(path)
    if not spec.matches(got):
        raise WeightsError(
            f"sha256 mismatch for weights {spec.repo_id}/{spec.filename} @ {spec.revision}: "
            f"expected {spec.sha256}{' (prefix)' if spec.sha256_is_prefix else ''}, got {got} (file: {path}). "
            "The file is corrupt, truncated or a different version; delete it and fetch the pinned revision again."
        )
    return got


# --------------------------------------------------------------------------- resolving


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE) or env


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _unavailable(spec: WeightsSpec, reason: str, checked: list[Path]) -> WeightsError:
    org, name = _repo_parts(spec)
    override = os.environ.get(WEIGHTS_DIR_ENV)
    where = f"${WEIGHTS_DIR_ENV}" if not override else override
    lines = [
        f"weights not available: repo {spec.repo_id!r}, file {spec.filename!r}, revision {spec.revision} "
        f"({reason}).",
        "Place the file in one of these locations:",
        f"  - the Hugging Face cache: {_hf_cache_path(spec)}",
        f"    (on a machine with Hub access: hf download {spec.repo_id} {spec.filename} "
        f"--revision {spec.revision}{' --repo-type dataset' if spec.repo_type == 'dataset' else ''}, then copy "
        "the cache folder; HF_HUB_CACHE selects it)",
        f"  - a local folder: set {WEIGHTS_DIR_ENV}=<dir> and put it at "
        f"{where}/{org}__{name}/{spec.filename} (or {where}/{spec.filename})",
        f"Expected sha256: {spec.sha256}.",
    ]
    if checked:
        lines.append("Looked in: " + ", ".join(str(p) for p in checked) + ".")
    return WeightsError("\n".join(lines))


_hub_reachable: dict[str, bool] = {}


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hub endpoint accepts a TCP connection (once per process and endpoint).

    Without it, huggingface_hub retries for tens of seconds before it gives up; this fails fast
    with the one error that says where to put the file.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    endpoint = str(getattr(constants, "ENDPOINT", "https://huggingface.co"))
    if endpoint not in _hub_reachable:
        url = urlparse(endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout_s):
                _hub_reachable[endpoint] = True
        except OSError:
            _hub_reachable[endpoint] = False
    return _hub_reachable[endpoint]


def _download(spec: WeightsSpec, checked: list[Path]) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (  # re-exported there by every supported version
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = _offline()
    cached = _hf_cache_path(spec)
    if not offline and not cached.is_file() and not hub_reachable():
        raise _unavailable(spec, "the Hugging Face Hub cannot be reached from here and the file is not cached",
                           checked)
    try:
        return Path(hf_hub_download(spec.repo_id, spec.filename, revision=spec.revision, repo_type=spec.repo_type,
                                    local_files_only=offline))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        if offline:
            reason = "offline (HF_HUB_OFFLINE is set) and not in the local cache"
        else:
            cause = exc.__cause__ or exc.__context__
            reason = "the Hugging Face Hub could not be reached and the file is not cached" + (
                f"; {_short(cause)}" if cause is not None else ""
            )
        raise _unavailable(spec, reason, checked) from None
    except GatedRepoError:
        reason = "the repository is gated: accept its terms on the Hub and log in (hf auth login)"
        raise _unavailable(spec, reason, checked) from None
    except RevisionNotFoundError:
        raise _unavailable(spec, "the Hub has no such revision in this repository", checked) from None
    except RepositoryNotFoundError:
        reason = "the Hub has no such repository, or it is private and needs a token"
        raise _unavailable(spec, reason, checked) from None
    except EntryNotFoundError:
        raise _unavailable(spec, "the repository has no such file at this revision", checked) from None
    except (HfHubHTTPError, OSError) as exc:
        raise _unavailable(spec, f"download failed: {_short(exc)}", checked) from None


def weights_file(spec: WeightsSpec, *, content_digest: Callable[[Path], str] | None = None) -> Path:
    """The verified local path of a pinned weights file.

    Order: `$RS_EMBED_WEIGHTS_DIR/<org>__<name>/<filename>`, then `$RS_EMBED_WEIGHTS_DIR/<filename>`,
    then `huggingface_hub.hf_hub_download` (honours HF_HUB_OFFLINE and HF_HUB_CACHE). Raises one
    WeightsError saying where to put the file when it cannot be found, or when its sha256 differs.

    `content_digest(path) -> hex` is for small assets pinned by what they hold rather than by
    their bytes (e.g. a tokenizer vocabulary whose header or line endings vary between hosts):
    `spec.sha256` is then compared with that digest instead of the file's own sha256.
    """
    if spec.path is not None:  # your own checkpoint: no lookup, same hash check
        local = Path(spec.path)
        if not local.is_file():
            raise WeightsError(f"weights file not found: {local}")
        _verify(local, spec, content_digest)
        return local
    _repo_parts(spec)  # validate names before touching the file system
    _file_parts(spec)
    checked: list[Path] = []
    override = os.environ.get(WEIGHTS_DIR_ENV)
    path: Path | None = None
    if override:
        for cand in _override_candidates(spec, Path(override).expanduser()):
            checked.append(cand)
            if cand.is_file():
                path = cand
                break
    if path is None:
        path = _download(spec, checked)
    _verify(path, spec, content_digest)
    log.debug("weights %s/%s @ %s -> %s", spec.repo_id, spec.filename, spec.revision[:12], path)
    return path


def weights_status(spec: WeightsSpec) -> dict[str, Any]:
    """Where a variant's weights go and whether they are present (file system only, no network)."""
    if spec.path is not None:
        return {"path": spec.path, "present": Path(spec.path).is_file()}
    org, name = _repo_parts(spec)
    cache = _hf_cache_path(spec)
    override = os.environ.get(WEIGHTS_DIR_ENV)
    local = [str(c) for c in _override_candidates(spec, Path(override).expanduser())] if override else [
        f"${WEIGHTS_DIR_ENV}/{org}__{name}/{spec.filename}"]
    converted = rs_embed_cache_dir() / "converted" / f"{spec.sha256}.safetensors"
    present = cache.is_file() or converted.is_file() or any(Path(c).is_file() for c in local if override)
    return {"present": present, "hf_cache": str(cache), "weights_dir": local,
            "download": f"hf download {spec.repo_id} {spec.filename} --revision {spec.revision}"}


def local_weights(weights: str | os.PathLike[str] | WeightsSpec, variant: Any = None) -> WeightsSpec:
    """`weights=` of the API: a path to your own checkpoint (pinned here by its sha256, hashed once
    per file version) or a WeightsSpec. Strict loading applies exactly as to published weights.
    (A variant without pinned default weights takes them too: that is how its weights are given.)"""
    if isinstance(weights, WeightsSpec):
        return weights
    if not isinstance(weights, (str, os.PathLike)):
        raise WeightsError(f"weights= takes a file path or a WeightsSpec, got {weights!r}")
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", *PICKLE_SUFFIXES):
        raise WeightsError(f"unsupported weights format {path.name!r}: use .safetensors or one of {', '.join(PICKLE_SUFFIXES)}")
    digest = file_digest(path)
    return WeightsSpec("local", digest[:40], path.name, digest, "user-supplied", path=str(path))


# --------------------------------------------------------------------------- loading


def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """Peel {"state_dict": {...}} / {"model": {...}} wrappers (training checkpoints) down to tensors."""
    while isinstance(obj, dict) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not _is_tensor_dict(obj) or not obj:
        if isinstance(obj, dict):
            odd = [f"{k!r}: {type(v).__name__}" for k, v in obj.items() if not hasattr(v, "shape")]
            detail = f"non-tensor entries {_trunc(odd)}" if odd else "no tensors"
        else:
            detail = f"a {type(obj).__name__}, not a dict of tensors"
        raise WeightsError(f"{where} does not hold a state dict: found {detail}")
    return obj


def _save_safetensors(sd: Mapping[str, torch.Tensor], dest: Path) -> None:
    import torch
    from safetensors.torch import save_file

    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for k, t in sd.items():
        t = t.detach().cpu()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        # safetensors refuses views and tensors sharing memory (tied weights): give each its own copy
        out[k] = t.clone(memory_format=torch.contiguous_format) if ptr in seen or not t.is_contiguous() else t
        if ptr != -1:
            seen.add(ptr)
    _atomic_write(dest, lambda tmp: save_file(out, tmp))


def load_state_dict(spec: WeightsSpec) -> dict[str, torch.Tensor]:
    """The file's tensors by name, on CPU.

    safetensors is read memory-mapped. A pickle checkpoint (.pt/.pth/.bin/.ckpt) is opened only
    with `torch.load(weights_only=True)` (no arbitrary code), unwrapped from a top-level
    "state_dict"/"model" entry, and converted once to `<rs-embed cache>/converted/<sha256>.safetensors`,
    which later loads use instead.
    """
    from safetensors.torch import load_file

    suffix = Path(spec.filename).suffix.lower()
    if suffix not in (".safetensors", *PICKLE_SUFFIXES):
        raise WeightsError(
            f"unsupported weights format {spec.filename!r} ({spec.repo_id}): "
            f"use .safetensors or one of {', '.join(PICKLE_SUFFIXES)}"
        )
    if suffix == ".safetensors":
        path = weights_file(spec)
        return _read_safetensors(load_file, path)

    converted = rs_embed_cache_dir() / "converted" / f"{spec.sha256}.safetensors"
    sidecar = converted.with_suffix(".json")
    if converted.is_file():
        try:
            recorded = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            recorded = {}
        # the digest recorded at conversion binds the converted file to the verified source
        if recorded.get("source_sha256") == spec.sha256 and recorded.get("sha256") == file_digest(converted):
            return _read_safetensors(load_file, converted)
        log.warning("converted weights %s do not match their conversion record; converting again", converted)
    path = weights_file(spec)
    import pickle

    import torch

    try:
        try:  # memory-mapped: the checkpoint is not held twice while converting
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"refused to unpickle {path} ({spec.repo_id}/{spec.filename}): it holds objects other than "
            f"tensors and plain containers, and rs-embed only loads checkpoints with weights_only=True. "
            f"Details: {_short(exc)}"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(f"could not read checkpoint {path} ({spec.repo_id}/{spec.filename}): {_short(exc)}") from None
    sd = _unwrap(obj, f"{spec.repo_id}/{spec.filename} ({path})")
    try:
        _save_safetensors(sd, converted)
        body = json.dumps({"source": f"{spec.repo_id}/{spec.filename}@{spec.revision}",
                           "source_sha256": spec.sha256, "sha256": file_digest(converted)})
        _atomic_write(sidecar, lambda tmp: Path(tmp).write_text(body))
    except OSError as exc:  # still usable, just converted again next time
        log.warning("could not cache converted weights at %s: %s", converted, exc)
    return {k: v.clone() for k, v in sd.items()}  # off the checkpoint's memory map (see _read_safetensors)


def _read_safetensors(load_file: Any, path: Path) -> dict[str, torch.Tensor]:
    """Tensors copied out of the file: load_file maps it, and a model must not change when the file is
    rewritten in place after loading (a cache refreshed by hand, a second writer)."""
    try:
        return {k: v.clone() for k, v in load_file(str(path)).items()}
    except Exception as exc:  # safetensors raises its own SafetensorError for corrupt headers
        raise WeightsError(f"could not read safetensors file {path}: {_short(exc)}") from None


# --------------------------------------------------------------------------- strict loading


def _trunc(items: list[str]) -> str:
    if len(items) <= _LIST_LIMIT:
        return "[" + ", ".join(items) + "]"
    return "[" + ", ".join(items[:_LIST_LIMIT]) + f", ... (+{len(items) - _LIST_LIMIT} more)]"


def _dropped(key: str, drop: Iterable[str]) -> bool:
    return any(key == d or key.startswith(d if d.endswith(".") else d + ".") for d in drop)


def strict_load(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    drop: Iterable[str] = (),
    strip_prefix: str | None = None,
    assign: bool = False,
) -> None:
    """Load `state_dict` into `module` with strict=True, after explicit, visible clean-up.

    `strip_prefix` (e.g. "module.") is removed first from the keys that carry it; then keys
    named in `drop` are removed: a name drops that exact key and every key below it
    ("decoder" drops "decoder.*"), so decoder/head weights the encoder does not use are listed
    in the plugin, not silently ignored. Any remaining mismatch raises WeightsError listing
    missing and unexpected keys and shape mismatches; the full lists are on the error as
    `.missing`, `.unexpected`, `.mismatched` and the module's `.expected` {key: (shape, dtype)}.

    `assign=True` makes the file's (memory-mapped) tensors the module's parameters instead of
    copying them: build the module on the meta device first and the weights are never held twice.
    Floating tensors are then cast to the module's dtype (a half-precision file still runs in fp32).
    """
    drop = tuple(drop)
    sd: dict[str, Any] = {}
    for key, value in state_dict.items():
        if strip_prefix and key.startswith(strip_prefix):
            key = key[len(strip_prefix):]
        if not _dropped(key, drop):
            sd[key] = value
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(getattr(sd[k], "shape", ())) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = [f"weights do not fit {type(module).__name__}:"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_trunc(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_trunc(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_trunc(mismatched)}")
        hint = (
            "If the file holds parts the encoder does not use, list them in drop=; "
            "if its keys carry a wrapper prefix, pass strip_prefix="
        )
        err = WeightsError("\n  ".join(parts) + f"\n  ({hint}; drop={list(drop)}, strip_prefix={strip_prefix!r})")
        err.missing, err.unexpected, err.mismatched = missing, unexpected, mismatched  # type: ignore[attr-defined]
        err.expected = {k: (tuple(v.shape), str(v.dtype)) for k, v in own.items()}  # type: ignore[attr-defined]
        raise err
    if assign:
        sd = {k: v.to(own[k].dtype) if v.is_floating_point() and v.dtype != own[k].dtype else v for k, v in sd.items()}
    try:
        module.load_state_dict(sd, strict=True, assign=assign)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise WeightsError(f"loading weights into {type(module).__name__} failed: {_short(exc)}") from None
