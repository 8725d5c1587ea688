"""Typed errors. Everything rs-embed raises on purpose derives from RsEmbedError.

Spec errors also derive from ValueError, lookups that fail from LookupError, so callers who
catch the builtin families keep working.
"""

from __future__ import annotations


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


class WeightsError(RsEmbedError):
    """Model weights are missing, corrupt (sha256 mismatch) or do not fit the architecture."""
