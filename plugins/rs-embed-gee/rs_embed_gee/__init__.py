"""rs-embed Earth Engine provider: backend="gee", "gee:PROJECT" or GEEProvider(project=...).

Per-pixel cloud masks (Cloud Score+, SCL, QA60, Landsat QA_PIXEL, HLS Fmask), server-side
composites (median, mosaic, least cloudy; n temporal frames), pixels by `image:computePixels` in
NPY on the exact request grid, split to Earth Engine's request limits and reassembled, with
bounded concurrency, a rate limit and retries. See docs/gee.md.
"""

from __future__ import annotations

from rs_embed_core.hookspecs import hookimpl

from .errors import (
    GEEAssetNotFoundError,
    GEEAuthError,
    GEEComputationTooHeavyError,
    GEEError,
    GEEPermissionError,
    GEEQuotaError,
)
from .provider import GEEProvider

__all__ = ["GEEProvider", "GEEError", "GEEAuthError", "GEEPermissionError", "GEEAssetNotFoundError", "GEEQuotaError",
           "GEEComputationTooHeavyError"]


@hookimpl
def register_providers(register):
    register("gee", GEEProvider)  # "gee:PROJECT" passes PROJECT; GEEProvider.available() serves backend="auto"
