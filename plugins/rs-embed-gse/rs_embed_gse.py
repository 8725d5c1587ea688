"""Google Satellite Embedding V1 (AlphaEarth Foundations) as an rs-embed model: `gse` / `gse_annual`.

The product is Earth Engine's GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL: one 64-dimensional vector
(bands A00-A63) per 10 m pixel and year, each of unit length, served by Earth Engine as floats in
[-1, 1] (the catalogue's band table); the int8 quantisation of the Cloud Storage COG copy does not
apply to pixels read through Earth Engine, so there is nothing to dequantise here. The pixels are
read by the `gee` provider (rs-embed-gee) with `computePixels` on the request's UTM grid at 10 m: Earth
Engine mosaics the product's per-UTM-zone images itself, so an ROI across a zone boundary or the
antimeridian comes back on one grid. Without an Earth Engine sign-in the gee provider's own
authentication error is raised.
"""

from __future__ import annotations

from rs_embed_core.card import InputSpec, ModelCard, Variant
from rs_embed_core.collections import SATELLITE_EMBEDDING, known_collection
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.products import ProductEmbedder

__all__ = ["GoogleSatelliteEmbedding", "BANDS", "YEARS", "register_embedders"]

BANDS: tuple[str, ...] = known_collection(SATELLITE_EMBEDDING).band_names  # type: ignore[union-attr]
# Annual layers 2017-2025: the Earth Engine guide "AlphaEarth Foundations GCS data" (aef_on_gcs_readme),
# "annual embeddings for the years from 2017 to 2025, inclusive".
YEARS: tuple[int, ...] = tuple(range(2017, 2026))
DIM, GSD_M = 64, 10.0

CARD = ModelCard(
    id="gse",
    aliases=("gse_annual",),
    description="Google Satellite Embedding V1 (AlphaEarth Foundations): precomputed annual 64-d embeddings, "
                "10 m, unit length, read from Earth Engine",
    input=InputSpec(SATELLITE_EMBEDDING, BANDS, GSD_M, composite="mosaic"),
    variants=(Variant("annual", DIM, DIM),),
    preprocessing=(),
    pooled="mean of the product's valid 10 m pixels over the ROI (not re-normalised to unit length)",
    grid="the product's 10 m pixels on the request's UTM grid (invalid pixels 0; see the input's validity mask)",
    license="CC-BY-4.0 (attribution: \"The AlphaEarth Foundations Satellite Embedding dataset is produced by "
            "Google and Google DeepMind.\")",
    citation="Brown et al. 2025, AlphaEarth Foundations: An embedding field model for accurate and efficient "
             "global mapping from sparse label data, arXiv:2507.22291",
    homepage="https://developers.google.com/earth-engine/datasets/catalog/GOOGLE_SATELLITE_EMBEDDING_V1_ANNUAL",
    notes="Precomputed product: no weights, no sensor= or preprocessing=. Years "
          f"{YEARS[0]}-{YEARS[-1]}; TemporalSpec.year(Y) or a window inside Y selects year Y. Needs backend='gee' "
          "(or 'copernicus_embed:gee' / 'tessera:gee' to mix with those products).",
)


class GoogleSatelliteEmbedding(ProductEmbedder):
    card = CARD
    years = YEARS


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(GoogleSatelliteEmbedding)
