"""An offline Hugging Face cache with random weights, so weight loading is tested without a network.

`build_hf_cache` writes files where `hf_hub_download` looks for a pinned commit
(`models--ORG--NAME/snapshots/REV/FILE`, plus `refs/main`); `offline_hub` points
huggingface_hub at that cache in offline mode. huggingface_hub copies its environment into
`huggingface_hub.constants` at import time, so setting the environment alone is not enough:
`offline_hub` patches both and restores both. `fake_hub_lfs` stands in for the Hub's file metadata
(the Git LFS sha256 a `WeightsSpec.from_revision` download is verified against).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..card import WeightsSpec
from ..weights import PICKLE_SUFFIXES, WEIGHTS_DIR_ENV, _file_parts, _repo_parts

_PLACEHOLDER_SHA = "0" * 64


def _names(repo_id: str, revision: str, filename: str) -> tuple[str, str, list[str]]:
    spec = WeightsSpec(repo_id, revision, filename, _PLACEHOLDER_SHA, "test")  # validates the revision
    org, name = _repo_parts(spec)
    return org, name, _file_parts(spec)


def hf_cache_file(cache_dir: str | Path, repo_id: str, revision: str, filename: str,
                  repo_type: str = "model") -> Path:
    """Where `hf_hub_download(repo_id, filename, revision=<commit>)` finds `filename` in a Hub cache at
    `cache_dir` (`models--ORG--NAME/snapshots/REV/FILE`; `datasets--...` for a dataset repository); creates its
    folder and `refs/main`."""
    org, name, parts = _names(repo_id, revision, filename)
    repo = Path(cache_dir) / f"{repo_type}s--{org}--{name}"
    dest = repo.joinpath("snapshots", revision, *parts)
    dest.parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return dest


def build_hf_cache(cache_dir: str | Path, repo_id: str, revision: str, files: Mapping[str, bytes | Path],
                   repo_type: str = "model") -> Path:
    """Write `files` (name -> bytes, or a file to copy) into a Hub cache at `cache_dir`; return the snapshot folder.
    `repo_type="dataset"` writes a dataset repository's cache (a precomputed product's file).

    Files are written as plain files in the snapshot (no blob symlinks), which
    `hf_hub_download(..., revision=<commit sha>)` serves as-is and which works on any file system. A file
    given by path is hard-linked where the file system allows (full-size random checkpoints are GBs: the
    snapshot does not hold a second copy), else copied; replace such a file rather than editing it in place.
    """
    if not files:
        raise ValueError("build_hf_cache needs at least one file")
    snapshot = Path()
    for filename, content in files.items():
        dest = hf_cache_file(cache_dir, repo_id, revision, filename, repo_type)
        snapshot = dest.parents[len(Path(filename).parts) - 1]
        dest.unlink(missing_ok=True)
        if isinstance(content, (bytes, bytearray)):
            dest.write_bytes(bytes(content))
            continue
        try:
            os.link(content, dest)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(content, dest)
    return snapshot


@contextlib.contextmanager
def offline_hub(cache_dir: str | Path, *, clear_weights_dir: bool = True) -> Iterator[Path]:
    """Within the block, huggingface_hub is offline and reads only `cache_dir`.

    Sets HF_HUB_OFFLINE=1 and HF_HUB_CACHE in the environment *and* in
    `huggingface_hub.constants` (read at import), and by default hides RS_EMBED_WEIGHTS_DIR so
    a developer's local weights cannot leak into a test. Everything is restored on exit.
    """
    from huggingface_hub import constants

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    env_keys = ["HF_HUB_OFFLINE", "HF_HUB_CACHE"] + ([WEIGHTS_DIR_ENV] if clear_weights_dir else [])
    saved_env = {k: os.environ.get(k) for k in env_keys}
    saved_const = {k: getattr(constants, k) for k in ("HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = str(cache)
    if clear_weights_dir:
        os.environ.pop(WEIGHTS_DIR_ENV, None)
    constants.HF_HUB_OFFLINE = True
    constants.HF_HUB_CACHE = str(cache)
    try:
        yield cache
    finally:
        for k, v in saved_const.items():
            setattr(constants, k, v)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def fake_hub_lfs(digests: Mapping[tuple[str, str, str], str]) -> Iterator[list[tuple[str, str, str]]]:
    """Within the block the Hub "answers" `HfApi.get_paths_info` from `digests`
    {(repo_id, revision, filename): sha256} and counts as reachable; yields the (repo_id, revision,
    filename) of each lookup. A file not in `digests` is absent at that revision. Combine with
    `offline_hub(..., )` outside the block to check that later loads use the recorded digest only."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    from .. import weights

    calls: list[tuple[str, str, str]] = []

    def get_paths_info(self: Any, repo_id: str, paths: Any, *, expand: bool = False, revision: str | None = None,
                       repo_type: str | None = None, token: Any = None) -> list[Any]:
        out = []
        for path in [paths] if isinstance(paths, str) else paths:
            calls.append((repo_id, str(revision), path))
            digest = digests.get((repo_id, str(revision), path))
            if digest is not None:
                out.append(RepoFile(path=path, size=0, oid="0" * 40, lfs={"size": 0, "oid": digest, "pointerSize": 134}))
        return out

    saved = (HfApi.get_paths_info, weights.hub_reachable)
    HfApi.get_paths_info = get_paths_info  # type: ignore[method-assign]
    weights.hub_reachable = lambda timeout_s=3.0: True  # type: ignore[assignment]
    try:
        yield calls
    finally:
        HfApi.get_paths_info, weights.hub_reachable = saved  # type: ignore[method-assign]


def _random_like(key: str, ref: Any, gen: Any) -> Any:
    import numpy as np
    import torch

    if isinstance(ref, torch.Tensor):
        shape, dtype, source = tuple(ref.shape), ref.dtype, ref.detach().cpu()
    elif isinstance(ref, np.ndarray):
        source = torch.from_numpy(np.ascontiguousarray(ref))
        shape, dtype = tuple(source.shape), source.dtype
    elif isinstance(ref, (tuple, list)) and all(isinstance(n, int) for n in ref):
        shape, dtype, source = tuple(ref), torch.float32, None
    else:
        raise TypeError(f"{key!r}: expected a tensor, an array or a shape tuple, got {type(ref).__name__}")
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02).to(dtype)
    # integer/bool buffers are indices and counters: keep their values, random ones would be meaningless
    return source.clone() if source is not None else torch.zeros(shape, dtype=dtype)


def random_weights_file(state_dict_or_module: Any, path: str | Path, seed: int = 0) -> Path:
    """Write random tensors with the keys, shapes and dtypes of a module / state dict to `path`.

    Accepts an nn.Module, or a mapping of name -> tensor, numpy array or shape tuple (float32).
    Floating tensors are N(0, 0.02^2) from a generator seeded with `seed` (keys in sorted order,
    so the file is reproducible); integer and bool buffers keep their values (zeros for bare shapes).
    The suffix picks the format: .safetensors, or .pt/.pth/.bin/.ckpt via torch.save.
    """
    import torch

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", *PICKLE_SUFFIXES):
        raise ValueError(f"random_weights_file: unsupported suffix {suffix!r}; use .safetensors or {PICKLE_SUFFIXES}")
    src = state_dict_or_module.state_dict() if isinstance(state_dict_or_module, torch.nn.Module) else state_dict_or_module
    gen = torch.Generator().manual_seed(seed)
    out = {k: _random_like(k, src[k], gen).contiguous() for k in sorted(src)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(out, str(path))
    else:
        torch.save(out, path)
    return path


def perturbed_state_dict(reference: Any, seed: int = 0, *, keep: Any = None, override: Any = None) -> dict[str, Any]:
    """Weights for equality tests against a reference implementation: the reference's own init (an
    nn.Module or a state dict) with every bias drawn N(0, 0.02^2) and every 1-D weight (norm gains)
    1 + N(0, 0.1^2), so the parts a zero bias or a unit gain would hide matter too.

    keep(key) -> True: the tensor is kept as it is (buffers, fixed tables). override(key, tensor,
    generator) -> a tensor for that key, or None to apply the rule above.
    """
    import torch

    src = reference.state_dict() if isinstance(reference, torch.nn.Module) else reference
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in src.items():
        special = override(k, v, gen) if override is not None else None
        if special is not None:
            out[k] = special
        elif keep is not None and keep(k):
            out[k] = v.detach().clone()
        elif k.endswith("bias"):
            out[k] = 0.02 * torch.randn(v.shape, generator=gen)
        elif k.endswith("weight") and v.ndim == 1:
            out[k] = 1.0 + 0.1 * torch.randn(v.shape, generator=gen)
        else:
            out[k] = v.detach().clone()
    return out


def random_state(shapes: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """{key: shape} -> N(0, 0.02^2) tensors, norm gains ("norm" in the key, ending "weight") around 1:
    full-size random weights built without instantiating the reference (e.g. from a meta-device model)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        t = torch.randn(tuple(shape), generator=gen) * 0.02
        out[k] = t + 1.0 if "norm" in k and k.endswith("weight") else t
    return out


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def weights_spec_for(repo_id: str, revision: str, filename: str, path: str | Path, license: str = "test") -> WeightsSpec:
    """A WeightsSpec pinning `path`'s content (its sha256) under a repo, revision and filename."""
    return WeightsSpec(repo_id, revision, filename, file_sha256(path), license)
