"""Model cards: what a model is, as data the core and the user can read.

A card names the model, its variants and their weights, the input it expects (collection,
bands, GSD, size, frames), the preprocessing chain it runs (as data, overridable), the side
inputs it needs and what its outputs are. `describe_model` prints it; every Embedding's meta
records the parts that shaped it.
"""

from __future__ import annotations

from typing import Any

from attrs import field, frozen

from .errors import SpecError


def _params(v: Any) -> dict[str, Any]:
    return dict(v or {})


@frozen(hash=False)
class Step:
    """One preprocessing step: a registered preprocessor name and its keyword parameters."""

    name: str
    params: dict[str, Any] = field(factory=dict, converter=_params)

    @classmethod
    def of(cls, value: Step | tuple | str | dict) -> Step:
        """Accept Step, "name", ("name", {params}) or {"name": ..., "params": {...}}."""
        if isinstance(value, Step):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, tuple) and len(value) in (1, 2):
            return cls(value[0], value[1] if len(value) == 2 else {})
        if isinstance(value, dict) and "name" in value:
            return cls(value["name"], value.get("params", {}))
        raise SpecError(f"not a preprocessing step: {value!r} (use Step(name, params) or (name, params))")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}


@frozen
class WeightsSpec:
    """A file on the Hugging Face Hub pinned to a commit and a content hash.

    `sha256=None` leaves the digest to the pinned commit (`from_revision`): a Hub commit holds each
    file's Git LFS pointer, so the commit fixes the bytes; the download reads that pointer's sha256 from
    the Hub's metadata at exactly this revision, verifies the file against it and records it, so later
    offline loads verify against the recorded digest.

    `url` set means a file published outside the Hub (`from_url`): full sha256 and size required.

    `path` set means your own local file (a fine-tuned or private checkpoint, `weights=` in the
    API): it is used as is, pinned by its sha256; repo_id is "local" and revision the first 40
    hex digits of that sha256.
    """

    repo_id: str
    revision: str  # a full commit sha, never a branch name
    filename: str
    # 64 hex digits; or a prefix of at least 8 where the publisher pins only that (torchgeo); None: the
    # pinned commit's Git LFS digest, read from the Hub on download (see from_revision)
    sha256: str | None
    license: str
    path: str | None = None
    repo_type: str = "model"  # "dataset" for a file of a Hub dataset repository (a precomputed product)
    url: str | None = None  # weights published outside the Hub: an https URL pinned by sha256 + size
    size: int | None = None  # bytes; required with url

    @classmethod
    def from_url(cls, url: str, *, filename: str, sha256: str, size: int, license: str) -> WeightsSpec:
        """A file published outside the Hugging Face Hub (Google Drive, Zenodo, a university server).

        Nothing but the bytes can pin such a file, so the full sha256 and the size are required. The
        repo_id is `url/<host>` and the revision the first 40 hex digits of the sha256: the file is
        content-addressed in the cache exactly as Hub files are by commit.
        """
        host = _checked_url(url)
        if not isinstance(sha256, str) or len(sha256) != 64:
            raise SpecError(f"weights fetched from a URL need the full 64-hex sha256, got {sha256!r}")
        return cls(f"url/{host}", sha256[:40], filename, sha256, license, url=url, size=size)

    @classmethod
    def from_revision(cls, repo_id: str, revision: str, filename: str, license: str,
                      repo_type: str = "model") -> WeightsSpec:
        """A Hub file pinned by its commit alone, where no page we can read publishes its sha256.

        The digest is the file's Git LFS sha256 at `revision`, read from the Hub on first download,
        checked against the bytes and recorded in the rs-embed cache (see `weights.pinned_digest`).
        """
        return cls(repo_id, revision, filename, None, license, repo_type=repo_type)

    def __attrs_post_init__(self) -> None:
        if self.repo_type not in ("model", "dataset"):
            raise SpecError(f"weights repo_type must be 'model' or 'dataset', got {self.repo_type!r}")
        if len(self.revision) != 40 or any(c not in "0123456789abcdef" for c in self.revision):
            raise SpecError(f"weights revision must be a 40-hex commit sha, got {self.revision!r}")
        if self.sha256 is None:
            if self.url is not None or self.path is not None:
                raise SpecError("only a Hub file can leave its sha256 to the pinned revision; "
                                "a URL or local file needs its full sha256")
        elif not 8 <= len(self.sha256) <= 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise SpecError(
                f"weights sha256 must be 64 lowercase hex digits (or a published prefix of at least 8), "
                f"got {self.sha256!r}"
            )
        if self.url is not None:
            _checked_url(self.url)
            if self.sha256 is None or len(self.sha256) != 64:
                raise SpecError(f"weights fetched from a URL need the full 64-hex sha256, got {self.sha256!r}")
            if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size <= 0:
                raise SpecError(f"weights fetched from a URL need their size in bytes, got {self.size!r}")

    @property
    def sha256_is_prefix(self) -> bool:
        """True when only a prefix of the digest is pinned (e.g. torchgeo's `-abcdef12.pth` file names)."""
        return self.sha256 is not None and len(self.sha256) < 64

    @property
    def digest_from_revision(self) -> bool:
        """True when the sha256 is the pinned commit's Git LFS digest, read from the Hub (from_revision)."""
        return self.sha256 is None

    def matches(self, digest: str) -> bool:
        if self.sha256 is None:
            raise ValueError("this spec pins no sha256 itself: compare with weights.pinned_digest(spec)")
        return digest.startswith(self.sha256)

    def describe(self) -> dict[str, Any]:
        """What `describe`, manifests and status print about the pin."""
        out: dict[str, Any] = {"repo_id": self.repo_id, "revision": self.revision, "filename": self.filename,
                               "sha256": self.sha256, "license": self.license}
        if self.sha256 is None:
            out["sha256_source"] = f"Git LFS pointer of {self.filename} at commit {self.revision} (read from the Hub)"
        if self.url is not None:
            out.update(url=self.url, size=self.size)
        if self.repo_type != "model":
            out["repo_type"] = self.repo_type
        return out


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _checked_url(url: str) -> str:
    """The URL's host; https only, or plain http to this machine (a loopback mirror, the tests' file server)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url) if isinstance(url, str) else None
    host = parts.hostname if parts is not None else None
    if parts is None or not host or not (parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS)):
        raise SpecError(f"weights url must be an https URL (plain http only to {', '.join(LOOPBACK_HOSTS)}), got {url!r}")
    if parts.username or parts.password:
        raise SpecError("weights url must not carry credentials")
    return host


@frozen(hash=False)
class Variant:
    """One size/checkpoint of a model: its weights (None for weights-free models) and dims."""

    name: str
    pooled_dim: int
    grid_dim: int
    weights: WeightsSpec | None = None
    params: dict[str, Any] = field(factory=dict, converter=_params)  # architecture config


@frozen
class InputSpec:
    """The pixels a model wants: which collection and bands, at what GSD, size and frame count."""

    collection: str
    bands: tuple[str, ...] = field(converter=tuple)
    gsd_m: float
    image_size: int | None = None  # pixels a side after preprocessing; None = any
    frames: int = 1
    composite: str = "median"


@frozen(hash=False)
class ModelCard:
    id: str
    description: str
    input: InputSpec
    variants: tuple[Variant, ...] = field(converter=tuple)
    preprocessing: tuple[Step, ...] = field(converter=lambda v: tuple(Step.of(s) for s in v))
    aliases: tuple[str, ...] = field(default=(), converter=tuple)
    default_variant: str | None = None
    pooled: str = "mean of the token grid"  # what OutputSpec.pooled(pooling="model") returns
    grid: str = "token grid"  # what OutputSpec.grid() returns
    side_inputs: tuple[str, ...] = field(default=(), converter=tuple)
    license: str = ""
    citation: str = ""
    homepage: str = ""
    notes: str = ""  # deliberate deviations from the original preprocessing, caveats

    def __attrs_post_init__(self) -> None:
        if not self.variants:
            raise SpecError(f"model card {self.id!r} has no variants")
        names = [v.name for v in self.variants]
        if self.default_variant is not None and self.default_variant not in names:
            raise SpecError(f"model card {self.id!r}: default_variant {self.default_variant!r} not in {names}")

    def variant(self, name: str | None = None) -> Variant:
        want = name or self.default_variant or self.variants[0].name
        for v in self.variants:
            if v.name.lower() == want.lower():
                return v
        raise SpecError(f"model {self.id!r} has no variant {want!r}; it has {[v.name for v in self.variants]}")

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (what `rs-embed describe` prints)."""
        return {
            "id": self.id,
            "aliases": list(self.aliases),
            "description": self.description,
            "input": {
                "collection": self.input.collection,
                "bands": list(self.input.bands),
                "gsd_m": self.input.gsd_m,
                "image_size": self.input.image_size,
                "frames": self.input.frames,
                "composite": self.input.composite,
            },
            "preprocessing": [s.to_dict() for s in self.preprocessing],
            "variants": [
                {
                    "name": v.name,
                    "default": v.name == (self.default_variant or self.variants[0].name),
                    "pooled_dim": v.pooled_dim,
                    "grid_dim": v.grid_dim,
                    "weights": None if v.weights is None else v.weights.describe(),
                    "params": dict(v.params),
                }
                for v in self.variants
            ],
            "outputs": {"pooled": self.pooled, "grid": self.grid},
            "side_inputs": list(self.side_inputs),
            "license": self.license,
            "citation": self.citation,
            "homepage": self.homepage,
            "notes": self.notes,
        }
