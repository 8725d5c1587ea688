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


class DataNotFoundError(ProviderError):
    """The requested data does not exist: missing file, ROI outside the raster, no scene in the window."""


class WeightsError(RsEmbedError):
    """Model weights are missing, corrupt (sha256 mismatch) or do not fit the architecture."""
