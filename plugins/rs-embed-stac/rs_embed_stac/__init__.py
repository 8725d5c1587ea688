"""rs-embed STAC provider: real Sentinel-2, Landsat and Sentinel-1 pixels from open STAC APIs, no account.

backend="stac:earth-search" (the default of backend="stac") or "stac:planetary-computer", or
StacProvider(url=..., collections={core id: (stac collection, {band: asset key})}) for any
STAC API of COGs. See docs/stac.md.
"""

from __future__ import annotations

from rs_embed_core.hookspecs import hookimpl

from .catalogs import EARTH_SEARCH, EARTH_SEARCH_S2_LEGACY, PLANETARY_COMPUTER, PRESETS, Catalog, CollectionMap
from .provider import StacProvider
from .signing import PlanetaryComputerSigner

__all__ = ["StacProvider", "Catalog", "CollectionMap", "PlanetaryComputerSigner", "PRESETS", "EARTH_SEARCH",
           "EARTH_SEARCH_S2_LEGACY", "PLANETARY_COMPUTER"]


def _factory(preset: str | None = None, **options) -> StacProvider:
    """backend="stac" -> Earth Search; "stac:<preset>" or "stac:<STAC API url>" -> that catalog."""
    return StacProvider(preset or None, **options)


@hookimpl
def register_providers(register):
    register("stac", _factory)
