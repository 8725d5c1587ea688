"""Model weights: find a pinned file, prove it is the right one, load it strictly.

A variant's WeightsSpec pins a Hugging Face file to a commit and a sha256. `weights_file`
resolves it (a local directory override first, then the Hugging Face cache / Hub), verifies
the hash and remembers the verification so multi-GB files are not re-hashed on every load.
A spec whose sha256 is left to its commit (`WeightsSpec.from_revision`) gets the digest from the
Hub's metadata for that exact revision (the file's Git LFS pointer), recorded in the rs-embed cache
so later offline loads verify against it. A file published outside the Hub (`WeightsSpec.from_url`)
is downloaded into a content-addressed folder of the rs-embed cache (`download.fetch_pinned`:
resumable, atomic, size- and sha256-checked) and verified the same way.
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
    "pinned_digest",
    "weights_record",
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
    _record_digest(real, got, key)
    return got


def _record_digest(real: Path, digest: str, key: dict[str, Any] | None = None) -> None:
    """Remember that this version of `real` (its `_stat_key`) hashes to `digest`."""
    try:
        body = json.dumps({**(key or _stat_key(real)), "sha256": digest})
        _atomic_write(_record_path(real), lambda tmp: Path(tmp).write_text(body))
    except OSError as exc:  # a read-only cache only costs a re-hash next time
        log.debug("could not record verified weights %s: %s", real, exc)


def _verify(path: Path, spec: WeightsSpec, content_digest: Callable[[Path], str] | None = None) -> str:
    """Check the file against the pinned sha256 (or its pinned prefix); return the full digest.
    A `from_revision` spec is checked against the commit's recorded LFS digest (`_with_revision_digest`)."""
    if spec.sha256 is None:
        raise WeightsError(f"internal: {spec.repo_id}/{spec.filename} has no digest to verify against yet")
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
    if spec.url is not None:
        lines = [
            f"weights not available: {spec.url} (file {spec.filename!r}, {spec.size} bytes) ({reason}).",
            "Place the file in one of these locations:",
            f"  - the rs-embed cache: {_url_cache_path(spec)}",
            f"    (on a machine with access: download {spec.url} and copy it there; {CACHE_ENV} selects the cache)",
        ]
    else:
        lines = [
            f"weights not available: repo {spec.repo_id!r}, file {spec.filename!r}, revision {spec.revision} "
            f"({reason}).",
            "Place the file in one of these locations:",
            f"  - the Hugging Face cache: {_hf_cache_path(spec)}",
            f"    (on a machine with Hub access: hf download {spec.repo_id} {spec.filename} "
            f"--revision {spec.revision}{' --repo-type dataset' if spec.repo_type == 'dataset' else ''}, then copy "
            "the cache folder; HF_HUB_CACHE selects it)",
        ]
    lines += [
        f"  - a local folder: set {WEIGHTS_DIR_ENV}=<dir> and put it at "
        f"{where}/{org}__{name}/{spec.filename} (or {where}/{spec.filename})",
        f"Expected sha256: {spec.sha256 or _REVISION_DIGEST_NOTE.format(spec=spec)}.",
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


# --------------------------------------------------------------------------- digests pinned by a commit

_REVISION_DIGEST_NOTE = "the Git LFS sha256 of {spec.filename} at commit {spec.revision}, read from the Hub"


def _pin_record_path(spec: WeightsSpec) -> Path:
    key = hashlib.sha256(f"{spec.repo_type}:{spec.repo_id}@{spec.revision}/{spec.filename}".encode()).hexdigest()
    return rs_embed_cache_dir() / "verified" / "revision-digests" / f"{key[:40]}.json"


def _pin_fields(spec: WeightsSpec) -> dict[str, str]:
    return {"repo_type": spec.repo_type, "repo_id": spec.repo_id, "revision": spec.revision, "filename": spec.filename}


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def weights_record(spec: WeightsSpec | None) -> dict[str, Any] | None:
    """What an embedding's meta and an export's manifest say about the weights that made it."""
    if spec is None:
        return None
    return {"repo_id": spec.repo_id, "revision": spec.revision, "filename": spec.filename,
            "sha256": pinned_digest(spec), **({"url": spec.url, "size": spec.size} if spec.url else {}),
            **({"path": spec.path} if spec.path else {})}


def pinned_digest(spec: WeightsSpec) -> str | None:
    """The sha256 a file must have: the spec's own, else the digest recorded for its commit (no network).
    None for a `from_revision` spec whose digest has not been read from the Hub on this machine yet."""
    if spec.sha256 is not None:
        return spec.sha256
    try:
        saved = json.loads(_pin_record_path(spec).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(saved, dict) and {k: saved.get(k) for k in _pin_fields(spec)} == _pin_fields(spec) \
            and _is_digest(saved.get("sha256")):
        return saved["sha256"]
    return None


def _record_pin(spec: WeightsSpec, digest: str, source: str) -> None:
    body = json.dumps({**_pin_fields(spec), "sha256": digest, "source": source})
    try:
        _atomic_write(_pin_record_path(spec), lambda tmp: Path(tmp).write_text(body))
    except OSError as exc:  # read-only cache: the Hub is asked again next time
        log.warning("could not record the sha256 of %s/%s @ %s: %s", spec.repo_id, spec.filename, spec.revision, exc)


def _hf_blob_digest(spec: WeightsSpec) -> str | None:
    """The sha256 huggingface_hub stored a downloaded LFS file under (`blobs/<sha256>`, the snapshot
    entry a link to it): the X-Linked-Etag the Hub sent for this revision, for a cache copied here."""
    snapshot = _hf_cache_path(spec)
    if not snapshot.is_symlink():
        return None
    target = Path(os.readlink(snapshot)).name
    return target if _is_digest(target) else None


def _hub_lfs_digest(spec: WeightsSpec, checked: list[Path]) -> str:
    """The file's Git LFS sha256 at exactly `spec.revision`, from the Hub's path metadata."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError, OfflineModeIsEnabled

    if _offline() or not hub_reachable():
        why = "offline (HF_HUB_OFFLINE is set)" if _offline() else "the Hugging Face Hub cannot be reached from here"
        raise _unavailable(spec, f"{why}, and the file's sha256, which is read from the Hub at the pinned "
                                 "revision, is not recorded on this machine yet: load it once with Hub access, "
                                 "or pass weights='<path>' (pinned by its own sha256)", checked)
    try:
        infos = HfApi().get_paths_info(spec.repo_id, [spec.filename], revision=spec.revision,
                                       repo_type=spec.repo_type)
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as exc:
        raise _unavailable(spec, f"reading the file's metadata at the pinned revision failed: {_short(exc)}",
                           checked) from None
    info = next((i for i in infos if getattr(i, "path", None) == spec.filename), None)
    if info is None:
        raise _unavailable(spec, "the repository has no such file at this revision", checked)
    lfs = getattr(info, "lfs", None)
    digest = getattr(lfs, "sha256", None) if lfs is not None else None
    if not _is_digest(digest):
        raise WeightsError(f"the Hub lists no Git LFS sha256 for {spec.repo_id}/{spec.filename} @ {spec.revision} "
                           f"(got {digest!r}): pin the file's sha256 on the card instead")
    return str(digest)


def _with_revision_digest(spec: WeightsSpec, checked: list[Path]) -> WeightsSpec:
    """`spec` with its sha256 filled in: recorded here before, the name of a copied Hub-cache blob, or
    the Hub's metadata for the pinned commit (recorded for later, offline, loads)."""
    import attrs

    digest = pinned_digest(spec)
    if digest is None:
        digest = _hf_blob_digest(spec)
        source = "huggingface_hub cache blob name (the Hub's X-Linked-Etag for this revision)"
        if digest is None:
            digest = _hub_lfs_digest(spec, checked)
            source = "Hub path metadata (lfs.sha256) at the pinned revision"
        _record_pin(spec, digest, source)
    return attrs.evolve(spec, sha256=digest)


# --------------------------------------------------------------------------- files outside the Hub


def _url_cache_path(spec: WeightsSpec) -> Path:
    """Content-addressed: `<rs-embed cache>/url/<sha256>/<filename>` (names checked by _file_parts)."""
    return rs_embed_cache_dir().joinpath("url", str(spec.sha256), *_file_parts(spec))


def _fetch_url(spec: WeightsSpec, checked: list[Path]) -> Path:
    from .download import fetch_pinned

    dest = _url_cache_path(spec)
    checked.append(dest)
    if dest.is_file():
        return dest
    if _offline():
        raise _unavailable(spec, "offline (HF_HUB_OFFLINE is set) and not in the rs-embed cache", checked)
    assert spec.url is not None and spec.size is not None and spec.sha256 is not None  # WeightsSpec checks these
    try:
        got = fetch_pinned(spec.url, dest, size=spec.size, sha256=spec.sha256)
    except OSError as exc:  # the cache folder cannot be written (the transfer's own errors are WeightsErrors)
        raise _unavailable(spec, f"download failed: {_short(exc)}", checked) from None
    if got:  # hashed while streaming: record it so _verify does not read the file again
        _record_digest(dest.resolve(), got)
    return dest


def weights_file(spec: WeightsSpec, *, content_digest: Callable[[Path], str] | None = None) -> Path:
    """The verified local path of a pinned weights file.

    Order: `$RS_EMBED_WEIGHTS_DIR/<org>__<name>/<filename>`, then `$RS_EMBED_WEIGHTS_DIR/<filename>`,
    then `huggingface_hub.hf_hub_download` (honours HF_HUB_OFFLINE and HF_HUB_CACHE), or for a
    `from_url` spec (org "url", name the host) `<rs-embed cache>/url/<sha256>/<filename>`, downloaded
    there when missing. Raises one WeightsError saying where to put the file when it cannot be found,
    or when its sha256 differs.

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
    if spec.sha256 is None:
        spec = _with_revision_digest(spec, checked)
    if path is None:
        path = _fetch_url(spec, checked) if spec.url is not None else _download(spec, checked)
    try:
        _verify(path, spec, content_digest)
    except WeightsError:
        if spec.url is not None and path == _url_cache_path(spec):  # our own download: remove it, fetch again
            path.unlink(missing_ok=True)
        raise
    log.debug("weights %s/%s @ %s -> %s", spec.repo_id, spec.filename, spec.revision[:12], path)
    return path


def weights_status(spec: WeightsSpec) -> dict[str, Any]:
    """Where a variant's weights go and whether they are present (file system only, no network)."""
    if spec.path is not None:
        return {"path": spec.path, "present": Path(spec.path).is_file()}
    org, name = _repo_parts(spec)
    override = os.environ.get(WEIGHTS_DIR_ENV)
    local = [str(c) for c in _override_candidates(spec, Path(override).expanduser())] if override else [
        f"${WEIGHTS_DIR_ENV}/{org}__{name}/{spec.filename}"]
    digest = pinned_digest(spec)
    converted = rs_embed_cache_dir() / "converted" / f"{digest}.safetensors"
    in_dir = any(Path(c).is_file() for c in local if override)
    if spec.url is not None:
        cache = _url_cache_path(spec)
        return {"present": cache.is_file() or converted.is_file() or in_dir, "cache": str(cache),
                "weights_dir": local, "download": spec.url}
    cache = _hf_cache_path(spec)
    out = {"present": cache.is_file() or (digest is not None and converted.is_file()) or in_dir,
           "hf_cache": str(cache), "weights_dir": local,
           "download": f"hf download {spec.repo_id} {spec.filename} --revision {spec.revision}"}
    if spec.sha256 is None:
        out["sha256_recorded"] = digest  # None until first read from the Hub on this machine
    return out


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

    digest = pinned_digest(spec)  # None: a from_revision digest not read yet, so nothing converted either
    converted = rs_embed_cache_dir() / "converted" / f"{digest}.safetensors"
    sidecar = converted.with_suffix(".json")
    if digest is not None and converted.is_file():
        try:
            recorded = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            recorded = {}
        # the digest recorded at conversion binds the converted file to the verified source
        if recorded.get("source_sha256") == digest and recorded.get("sha256") == file_digest(converted):
            return _read_safetensors(load_file, converted)
        log.warning("converted weights %s do not match their conversion record; converting again", converted)
    path = weights_file(spec)
    if digest is None:  # read and recorded by weights_file (or, with a read-only cache, the verified file's own)
        digest = pinned_digest(spec) or file_digest(path)
        converted = rs_embed_cache_dir() / "converted" / f"{digest}.safetensors"
        sidecar = converted.with_suffix(".json")
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
                           "source_sha256": digest, "sha256": file_digest(converted)})
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
