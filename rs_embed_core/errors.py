"""Typed errors. Everything rs-embed raises on purpose derives from RsEmbedError.

Spec errors also derive from ValueError, lookups that fail from LookupError, so callers who
catch the builtin families keep working.
"""

from __future__ import annotations

from attrs import field, frozen


class RsEmbedError(Exception):
    """Base class of every error rs-embed raises on purpose."""


class SpecError(RsEmbedError, ValueError):
    """A spec (place, time, sensor, output, option) is invalid; raised before any fetch."""


class UnknownBandError(SpecError):
    """A band name that the collection or the data source does not have."""


class UnknownModelError(RsEmbedError, LookupError):
    """No registered embedder has this id or alias."""


class UnknownProviderError(RsEmbedError, LookupError):
    """No registered provider has this name."""


class UnknownExecutorError(RsEmbedError, LookupError):
    """No installed plugin registers this export executor (the message names the package that would)."""


class ExecutorError(RsEmbedError):
    """An export executor cannot run here: its cluster is unreachable, or its workers cannot do the work."""


class PluginError(RsEmbedError):
    """A plugin is malformed or conflicts with another (e.g. a duplicate model id)."""


class ProviderError(RsEmbedError):
    """A provider could not deliver the requested pixels."""


class TransientProviderError(ProviderError):
    """A failure worth retrying: HTTP 429 / 5xx, a timeout, a dropped connection.

    Providers raise it (or a subclass) for faults that may pass; the runner retries those with
    bounded exponential backoff and jitter (`rs_embed_core.retry`). `retry_after_s` carries a
    server's Retry-After hint, which the backoff honours.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FetchTimeoutError(TransientProviderError):
    """A fetch did not finish within the provider's `fetch_timeout_s`."""


class DataNotFoundError(ProviderError):
    """The requested data does not exist: missing file, ROI outside the raster, no scene in the window."""


class LowValidDataError(RsEmbedError):
    """Too little of an input is valid (nodata, clouds, outside the source) to embed it meaningfully."""


class ItemFailedError(RsEmbedError):
    """One ROI of a batch failed; `.item` is its ItemError record."""


class BatchError(RsEmbedError):
    """Some ROIs of a batch failed. `.errors` lists their ItemError records (index, name, ROI, stage,
    cause, attempts); `.results` holds every result in input order (Embedding or ItemError)."""

    def __init__(self, errors: list["ItemError"], results: list) -> None:
        self.errors, self.results = errors, results
        lines = [f"{len(errors)} of {len(results)} ROI(s) failed:"] + [f"  - {e.describe()}" for e in errors[:10]]
        if len(errors) > 10:
            lines.append(f"  ... and {len(errors) - 10} more (see .errors)")
        lines.append("Pass continue_on_error=True to get the other results with ItemError records in place.")
        super().__init__("\n".join(lines))


class SearchError(SpecError):
    """A similarity search that cannot be answered as asked (rs_embed_core.search); raised before any scan."""


class UnknownItemError(SearchError, LookupError):
    """A query names an item (by name or index) that the export does not hold, or holds without a vector."""


class ModelNotInExportError(SearchError, LookupError):
    """The model asked for is not one the export holds (or the export holds several and none was named)."""


class IncomparableQueryError(SearchError):
    """Query vectors that cannot be compared with the export's: another model, variant or weights."""


class DimensionMismatchError(IncomparableQueryError):
    """A query vector's length differs from the export's embedding dimension."""


class NoTextTowerError(IncomparableQueryError):
    """A text query on a model without a text tower (only CLIP-style models such as RemoteCLIP embed text)."""


class MissingExtraError(RsEmbedError, ImportError):
    """An optional feature needs a package of one of the core's extras (`.extra`, e.g. "maps"), not installed."""

    def __init__(self, message: str, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


class ExportError(RsEmbedError):
    """An export folder is damaged (manifest, journal or a deliverable unreadable); the message says what and
    what to do (usually: rerun with resume=True, which rebuilds the deliverables from the verified parts)."""


class ExportLockedError(ExportError):
    """Another writer holds the export folder's lock (its holder is named); pass wait=True to wait for it."""


class WeightsError(RsEmbedError):
    """Model weights are missing, corrupt (sha256 mismatch) or do not fit the architecture."""


@frozen
class ItemError:
    """The record of one failed (ROI, model): where, which stage, why, after how many attempts.

    stage: "fetch" (provider, after retries), "preprocess" (the chain) or "model" (forward).
    """

    index: int
    name: str | None
    spatial: str
    model: str
    stage: str
    error_type: str
    message: str
    attempts: int = 1
    cause: BaseException | None = field(default=None, eq=False, repr=False)  # in-process only, not serialised

    def describe(self) -> str:
        who = f"item {self.index}" + (f" ({self.name})" if self.name else "")
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{who} {self.spatial}, model {self.model}: {self.stage} failed{tries}: {self.error_type}: {self.message}"

    def to_exception(self) -> ItemFailedError:
        err = ItemFailedError(self.describe())
        err.item = self  # type: ignore[attr-defined]
        return err
