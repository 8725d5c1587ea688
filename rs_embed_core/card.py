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

    `path` set means your own local file (a fine-tuned or private checkpoint, `weights=` in the
    API): it is used as is, pinned by its sha256; repo_id is "local" and revision the first 40
    hex digits of that sha256.
    """

    repo_id: str
    revision: str  # a full commit sha, never a branch name
    filename: str
    sha256: str  # 64 hex digits; or a prefix of at least 8 where the publisher pins only that (torchgeo)
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
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise SpecError(f"weights url must be an https URL, got {url!r}")
        if len(sha256) != 64:
            raise SpecError(f"weights fetched from a URL need the full 64-hex sha256, got {sha256!r}")
        if not isinstance(size, int) or size <= 0:
            raise SpecError(f"weights fetched from a URL need their size in bytes, got {size!r}")
        return cls(f"url/{parts.hostname}", sha256[:40], filename, sha256, license, url=url, size=size)

    def __attrs_post_init__(self) -> None:
        if self.repo_type not in ("model", "dataset"):
            raise SpecError(f"weights repo_type must be 'model' or 'dataset', got {self.repo_type!r}")
        if len(self.revision) != 40 or any(c not in "0123456789abcdef" for c in self.revision):
            raise SpecError(f"weights revision must be a 40-hex commit sha, got {self.revision!r}")
        if not 8 <= len(self.sha256) <= 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise SpecError(
                f"weights sha256 must be 64 lowercase hex digits (or a published prefix of at least 8), "
                f"got {self.sha256!r}"
            )

    @property
    def sha256_is_prefix(self) -> bool:
        """True when only a prefix of the digest is pinned (e.g. torchgeo's `-abcdef12.pth` file names)."""
        return len(self.sha256) < 64

    def matches(self, digest: str) -> bool:
        return digest.startswith(self.sha256)


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
                    "weights": None if v.weights is None else {
                        "repo_id": v.weights.repo_id,
                        "revision": v.weights.revision,
                        "filename": v.weights.filename,
                        "sha256": v.weights.sha256,
                        "license": v.weights.license,
                    },
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
