"""TerraFM (Danish et al., 2025) for rs-embed: one ViT over Sentinel-2 L2A, Sentinel-2 L1C or Sentinel-1 tiles.

TerraFM gives each of its three input modalities its own patch convolution (to a width 3 x D) and a learned
modality code, projects the patch tokens to the ViT width through a shared stack (Linear, LayerNorm, Linear,
Linear), and runs a DINO-style ViT with a class token and a learned position table for 224 px at patch 16.
Which convolution a tile takes is fixed by where its pixels come from: the collection of the request.

This module is the model card and everything torch-free (band tables, the request checks, the Sentinel-1
scaling step); the network is rs_embed_terrafm_model, written here in torch with the parameter names of the
authors' `terrafm.py`. No reference implementation installs here (see NOTES).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput, check_single_frame, requested_bands
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.raster import Raster
from rs_embed_core.specs import SensorSpec

if TYPE_CHECKING:
    import torch

    from rs_embed_terrafm_model import TerraFMEncoder

__all__ = ["TerraFM", "check_bands", "modality_of", "register_embedders", "register_preprocessors", "sar_log_scale"]

# ----------------------------------------------------------------------------- the three modalities
S2_L2A = "COPERNICUS/S2_SR_HARMONIZED"
S2_L1C = "COPERNICUS/S2_HARMONIZED"
S1_GRD = "COPERNICUS/S1_GRD"
# Both Sentinel-2 convolutions take 12 channels (terrafm.py `in_chans_s2=12`): the L2A band set, in the band
# order the user documentation fetches. L1C's 13th band, B10 (cirrus), has no channel; a public benchmark
# built on TerraFM drops it (index 10 of the 13) before the model.
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
S1_BANDS = ("VV", "VH")  # terrafm.py `in_chans_s1=2`; Major-TOM Core-S1RTC order
MODALITY = {S2_L2A: "s2_l2a", S2_L1C: "s2_l1c", S1_GRD: "s1"}  # -> the checkpoint's conv2d_<m> / <m>_embed
BANDS = {S2_L2A: S2_BANDS, S2_L1C: S2_BANDS, S1_GRD: S1_BANDS}

IMAGE_SIZE, PATCH, INPUT_GSD_M = 224, 16, 10.0  # the model zoo's 224 x 224; a 14 x 14 token grid
S2_DN_SCALE = 1e-4
SAR_PERCENTILE = 99.0

# ----------------------------------------------------------------------------- variants and weights
SIZES: dict[str, tuple[int, int, int]] = {"base": (768, 12, 12), "large": (1024, 24, 16)}  # width, depth, heads
HUB_REPO = "MBZUAI/TerraFM"
HUB_FILE = {"base": "TerraFM-B.pth", "large": "TerraFM-L.pth"}


def _variants() -> tuple[Variant, ...]:
    return tuple(
        Variant(size, pooled_dim=dim, grid_dim=dim, weights=None,
                params={"embed_dim": dim, "depth": depth, "heads": heads, "mlp_ratio": 4.0, "patch_size": PATCH,
                        "image_size": IMAGE_SIZE, "size": size})
        for size, (dim, depth, heads) in SIZES.items())


def modality_of(collection: str) -> str:
    """The patch embedding a collection's pixels go through; SpecError naming what TerraFM takes otherwise."""
    try:
        return MODALITY[collection]
    except KeyError:
        raise SpecError(f"TerraFM has no patch embedding for collection {collection!r}; it takes {S2_L2A} or "
                        f"{S2_L1C} bands {list(S2_BANDS)}, or {S1_GRD} {list(S1_BANDS)}") from None


def check_bands(collection: str, bands: tuple[str, ...]) -> str:
    """Each convolution has a fixed channel list: the request's bands must be exactly it, in order."""
    modality = modality_of(collection)
    want = BANDS[collection]
    if tuple(bands) != want:
        extra = [b for b in bands if b not in want]
        missing = [b for b in want if b not in bands]
        why = (f"it has no channel for {extra}" if extra else f"{missing} missing" if missing
               else "the order differs")
        raise SpecError(f"TerraFM's {modality} patch embedding takes exactly {list(want)} of {collection}, in this "
                        f"order; the request gives {list(bands)} ({why})")
    return modality


def sar_log_scale(raster: Raster, from_db: Any = True, percentile: Any = SAR_PERCENTILE) -> Raster:
    """Sentinel-1 backscatter -> [0, 1]: log1p of linear power over its `percentile` (per image, all channels).

    The user documentation's Sentinel-1 scaling for TerraFM (the authors publish none): linear power (from dB
    with `from_db`, as Earth Engine serves COPERNICUS/S1_GRD), log1p of its positive part, divided by the
    percentile of that over the image's valid pixels (1 when it is not positive), clipped to [0, 1]. By
    design about 1 % of the values clip, so no saturation is reported.
    """
    q = float(percentile) if isinstance(percentile, (int, float)) and not isinstance(percentile, bool) else -1.0
    if not 0 < q <= 100:
        raise SpecError(f"sar_log_scale: percentile must be in (0, 100], got {q}")
    x = raster.data.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        power = np.power(10.0, x / 10.0) if from_db else x
        y = np.log1p(np.maximum(power, 0.0))
    valid = np.broadcast_to(raster.valid[:, None], y.shape) & np.isfinite(y)
    denom = float(np.percentile(y[valid], q)) if valid.any() else 1.0
    out = np.clip(y / (denom if denom > 0 else 1.0), 0.0, 1.0)
    return raster.replace(data=out.astype(np.float32))


def _chain(collection: str) -> tuple[Step, ...]:
    if collection == S1_GRD:
        head = [Step("sar_log_scale", {"from_db": True, "percentile": SAR_PERCENTILE})]
    else:
        head = [Step("scale", {"factor": S2_DN_SCALE}), Step("clip", {"min": 0.0, "max": 1.0})]
    return (*head, Step("fill_invalid", {"value": 0.0}),
            Step("resize", {"size": IMAGE_SIZE, "method": "bilinear", "antialias": False}))


NOTES = f"""\
Default input: Sentinel-2 level-2A ({S2_L2A}), the 12 bands {', '.join(S2_BANDS)}, {IMAGE_SIZE} x {IMAGE_SIZE} px \
(the model zoo's input size), one median composite, as the user documentation's `terrafm` fetches it. Other \
sensors: Sentinel-2 level-1C ({S2_L1C}, the same 12 bands: both Sentinel-2 convolutions take 12 channels, so \
B10 is refused, as a public benchmark built on TerraFM drops it) and Sentinel-1 ({S1_GRD}, VV, VH). Each goes through \
its own patch embedding, chosen by the collection; one sensor per request (TerraFM embeds one modality at a \
time); any other band set or order is refused before any fetch.
Chain (the authors publish no normalisation; this is the user documentation's): Sentinel-2 DN x 1e-4, clipped \
to [0, 1]; Sentinel-1 dB -> linear power -> log1p -> over its 99th percentile in the image -> [0, 1] \
(`sar_log_scale`; the percentile is taken over valid pixels, where the user documentation's includes the \
zero-filled ones); invalid pixels 0; resize to {IMAGE_SIZE} bilinear without antialiasing (as the user \
documentation resizes; inputs are taken to be at {INPUT_GSD_M:g} m whatever the ROI size).
Deviation: the authors' released `forward`/`extract_feature` call the patch embedding without its `is_l2a` \
flag, so every 12-channel input of their code (and of the user documentation, which fetches L2A) goes through \
the L1C convolution and code. Here L2A pixels take the L2A embedding, as the model was pre-trained; pass \
sensor=SensorSpec("{S2_L1C}", ...) for the L1C one.
Outputs: pooled = the class token after the final LayerNorm (the authors' `forward`); grid = the last block's \
patch tokens after the final LayerNorm (their `extract_feature(out_indices=[depth-1])`), 14 x 14, row-major, \
north up.
Weights: the authors publish TerraFM-B.pth and TerraFM-L.pth on {HUB_REPO} (the GitHub repository states no \
licence). No commit or sha256 of either file could be found in any public record here (the Hub is unreachable \
and no other project pins them), so neither variant ships default weights: download the file and pass \
weights=<path> (pinned by its own sha256, opened with weights_only=True, loaded strictly: the file is a plain \
state dict of the authors' `TerraFM` module, no prefix, nothing ignored).
Reference: none installs (terratorch 1.2.11, torchgeo 0.8.1 and rshf 0.2.2 do not carry TerraFM; the \
authors' code is one file, terrafm.py, on GitHub and the Hub). tests/test_terrafm_equality.py compares with \
that file on shared random weights when RS_EMBED_TERRAFM_REFERENCE points at a copy; see \
docs/models/terrafm.md for the figures."""


class TerraFM(Embedder):
    card = ModelCard(
        id="terrafm",
        aliases=("terrafm_b",),
        description=(
            "TerraFM (Danish et al., 2025): DINO-style ViT with modality-specific patch embeddings for "
            "Sentinel-2 L2A, Sentinel-2 L1C and Sentinel-1, pre-trained on Major-TOM. Default Sentinel-2 L2A, "
            "12 bands, 224 px. Weights: yours (see notes)."
        ),
        input=InputSpec(S2_L2A, S2_BANDS, INPUT_GSD_M, image_size=IMAGE_SIZE, frames=1, composite="median"),
        variants=_variants(),
        default_variant="base",
        preprocessing=_chain(S2_L2A),
        pooled="the class token after the final LayerNorm (the authors' forward)",
        grid="last-block patch tokens after the final LayerNorm, 14 x 14 (the authors' extract_feature)",
        side_inputs=("the modality (S2 L2A / S2 L1C / S1), from the request's collection",),
        license="code: Apache-2.0 (rs-embed); weights: not stated by the authors, supplied by you",
        citation=(
            "Danish, M. S., Munir, M. A., Shah, S. R. A., Khan, M. H., Anwer, R. M., Laaksonen, J., Khan, F. S., "
            "Khan, S. TerraFM: A Scalable Foundation Model for Unified Multisensor Earth Observation. "
            "arXiv:2506.06281, 2025"
        ),
        homepage="https://github.com/mbzuai-oryx/TerraFM",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.model: TerraFMEncoder | None = None

    @classmethod
    def default_chain(cls, sensor: SensorSpec) -> tuple[Any, ...]:
        """Sentinel-1 gets the SAR scaling; everything else the card's (check_request refuses what does not fit)."""
        return _chain(sensor.collection) if sensor.collection in MODALITY else cls.card.preprocessing

    @classmethod
    def check_request(cls, variant: Variant, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        """One sensor of the three, exactly its bands, a resize to 224 when the chain has one, weights given."""
        if len(sensors) != 1:
            raise SpecError(f"TerraFM embeds one modality per request; got {len(sensors)} sensors "
                            f"{[s.collection for s in sensors]}")
        check_bands(sensors[0].collection, requested_bands(sensors, steps))
        parsed = [Step.of(s) for s in steps]
        size = next((s.params.get("size") for s in reversed(parsed) if s.name == "resize"), None)
        if size is not None and tuple(np.broadcast_to(size, 2)) != (IMAGE_SIZE, IMAGE_SIZE):
            raise SpecError(f"TerraFM's position table covers {IMAGE_SIZE} x {IMAGE_SIZE} px; the chain resizes "
                            f"to {size}")
        if variant.weights is None:
            raise WeightsError(_no_weights_message(variant))

    def load(self) -> None:
        if self.variant.weights is None:
            raise WeightsError(_no_weights_message(self.variant))
        from rs_embed_terrafm_model import build

        self.model = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        check_single_frame(x, ctx, "TerraFM")
        modality = check_bands(ctx.sensor.collection, ctx.band_names)
        if self.model is None:
            self.load()
        pooled, grid = self.model.embed(x[:, 0].float(), modality)  # type: ignore[union-attr]
        extra = {"modality": [modality] * x.shape[0]}
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None, extra=extra)


def _no_weights_message(variant: Variant) -> str:
    name = HUB_FILE[variant.params.get("size", variant.name)]
    return (f"TerraFM has no pinned default weights: no commit or sha256 of {HUB_REPO}/{name} is known. Download "
            f"it (hf download {HUB_REPO} {name}) and pass weights='<path to the file>' (pinned by its own sha256, "
            "loaded strictly).")


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(TerraFM)


@hookimpl
def register_preprocessors(register) -> None:  # type: ignore[no-untyped-def]
    register("sar_log_scale", sar_log_scale)
