"""rs-embed: embeddings from remote-sensing foundation models for any (model, place, time).

This package only re-exports the public API; the engine lives in `rs_embed_core`.
"""

from rs_embed_core import __version__
from rs_embed_core.api import (
    describe_model,
    get_embedding,
    get_embeddings_batch,
    inspect_gee_patch,
    inspect_provider_patch,
    list_models,
)
from rs_embed_core.card import Step
from rs_embed_core.embedding import Embedding
from rs_embed_core.errors import (
    BatchError,
    DataNotFoundError,
    DimensionMismatchError,
    IncomparableQueryError,
    MissingExtraError,
    ModelNotInExportError,
    NoTextTowerError,
    SearchError,
    UnknownItemError,
    ExportError,
    ExportLockedError,
    FetchTimeoutError,
    ItemError,
    ItemFailedError,
    LowValidDataError,
    TransientProviderError,
    UnknownProviderError,
    PluginError,
    ProviderError,
    RsEmbedError,
    SpecError,
    UnknownBandError,
    UnknownModelError,
    WeightsError,
)
from rs_embed_core.card import WeightsSpec
from rs_embed_core.export import ExportResult, ExportWarning, LoadedExport, ModelRequest, export_batch, export_npz, load_export
from rs_embed_core.grid import GridSpec
from rs_embed_core.retry import RetryPolicy
from rs_embed_core.quicklook import quicklook, quicklook_map
from rs_embed_core.search import LonLat, TextQuery, build_index, search
from rs_embed_core.runner import LowValidDataWarning, SaturatedInputWarning
from rs_embed_core.tiling import TileSpec
from rs_embed_core.providers.local import LocalProvider
from rs_embed_core.specs import BBox, OutputSpec, PointBuffer, SensorSpec, TemporalSpec

__all__ = [
    "BatchError", "DimensionMismatchError", "IncomparableQueryError", "ModelNotInExportError", "NoTextTowerError",
    "SearchError", "UnknownItemError", "FetchTimeoutError", "ItemError", "ItemFailedError", "LowValidDataError", "LowValidDataWarning", "SaturatedInputWarning",
    "ExportError", "ExportLockedError", "ExportResult", "ExportWarning", "LoadedExport", "ModelRequest", "export_batch", "export_npz", "load_export",
    "LonLat", "TextQuery", "build_index", "search", "MissingExtraError", "quicklook", "quicklook_map",
    "RetryPolicy", "TileSpec", "TransientProviderError", "UnknownProviderError", "WeightsSpec",
    "BBox", "DataNotFoundError", "Embedding", "GridSpec", "LocalProvider", "OutputSpec", "PluginError", "PointBuffer",
    "ProviderError", "RsEmbedError", "SensorSpec", "SpecError", "Step", "TemporalSpec", "UnknownBandError",
    "UnknownModelError", "WeightsError", "__version__", "describe_model", "get_embedding", "get_embeddings_batch",
    "inspect_gee_patch", "inspect_provider_patch", "list_models",
]
