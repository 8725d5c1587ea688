"""SatVision-TOA (NASA Goddard CISTO; Spradlin et al. 2024, arXiv:2411.17000) for rs-embed.

A SwinV2-Giant (~3 B parameters) pre-trained by masked image modelling on 100 million 128 x 128
chips of daily global MODIS Terra L1B (MOD021KM v6.1) composites at 1 km, all-sky: 14 bands, the
reflective ones as top-of-atmosphere reflectance, the thermal ones as brightness temperature. The
encoder is rebuilt in torch (rs_embed_satvision_model); timm's SwinV2 is its test-time reference.

- `SatVision` (model id "satvision", alias "satvision_toa"): one 128 x 128 chip of the 14 bands;
  pooled = mean of the last stage's 4 x 4 tokens after the final LayerNorm; grid = those tokens
  (4096 x 4 x 4), georeferenced on the ROI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput, check_single_frame, requested_bands
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.specs import SensorSpec

if TYPE_CHECKING:
    import torch

    from rs_embed_satvision_model import SatVisionSwinV2

__all__ = ["SatVision", "register_embedders"]

COLLECTION = "MODIS/061/MOD021KM"
# The 14 MODIS bands in the model's channel order: the default band list of the authors' chip pipeline
# (satvision_toa/pipelines/modis_toa_processing_pipeline.py, ModisSwathToGrid(bands=...)). Channels
# 0, 1, 2, 3, 4, 6 are reflective (TOA reflectance in %), the others thermal (brightness temperature, K),
# as the authors' scaling transform indexes them.
BANDS = ("1", "2", "3", "6", "7", "21", "26", "27", "28", "29", "30", "31", "32", "33")
REFLECTIVE = (0, 1, 2, 3, 4, 6)
EMISSIVE = (5, 7, 8, 9, 10, 11, 12, 13)
# The authors' MinMaxEmissiveScaleReflectance (pytorch-caney transforms/modis_toa_scale.py, the transform
# of their MIM pre-training pipeline): reflectance % x 0.01; brightness temperature (K - min) / (max - min)
# with these global minima / maxima of the 8 thermal channels, in EMISSIVE order.
REFLECTANCE_FACTOR = 0.01
EMISSIVE_MIN = (223.1222, 178.9174, 204.3739, 204.7677, 194.8686, 202.1759, 201.3823, 203.3537)
EMISSIVE_MAX = (352.7182, 261.2920, 282.5529, 319.0373, 295.0209, 324.0677, 321.5254, 285.9848)
IMG_SIZE = 128
GSD_M = 1000.0

HUB_REPO = "nasa-cisto-data-science-group/satvision-toa-giant-patch8-window8-128"
HUB_FILE = "mp_rank_00_model_states.pt"
# Commit "added model and config" (the file's only commit, seen on the file's history page). No public
# record of the file's sha256 could be found; the commit pins it all the same: the digest is the file's Git
# LFS sha256 at that commit, read from the Hub on the first download, verified and recorded
# (WeightsSpec.from_revision). Licence: Apache-2.0 (the model card).
HUB_COMMIT = "85a86d788028f0cf23b737c4a042143585a385fc"
WEIGHTS = WeightsSpec.from_revision(HUB_REPO, HUB_COMMIT, HUB_FILE, "apache-2.0")


def _normalisation() -> tuple[list[float], list[float]]:
    """(mean, std) per channel of one `normalize` step equal to the authors' transform:
    reflective x / 100 (mean 0, std 100), thermal (x - min) / (max - min) (mean min, std max - min)."""
    mean, std = [0.0] * len(BANDS), [1.0 / REFLECTANCE_FACTOR] * len(BANDS)
    for i, lo, hi in zip(EMISSIVE, EMISSIVE_MIN, EMISSIVE_MAX):
        mean[i], std[i] = lo, hi - lo
    return mean, std


def _chain() -> tuple[Step, ...]:
    mean, std = _normalisation()
    return (
        Step("select_bands", {"bands": list(BANDS)}),
        Step("normalize", {"mean": mean, "std": std}),
        Step("fill_invalid", {"value": 0.0}),
        Step("resize", {"size": IMG_SIZE, "method": "bilinear", "antialias": True}),
    )


GIANT = {
    "img_size": IMG_SIZE, "patch_size": 4, "in_chans": len(BANDS), "embed_dim": 512, "depths": [2, 2, 42, 2],
    "heads": [16, 32, 64, 128], "window": 8, "mlp_ratio": 4.0, "norm_period": 6,
}
VARIANTS = (Variant("giant", pooled_dim=4096, grid_dim=4096, weights=WEIGHTS, params=GIANT),)

NOTES = f"""\
Input: MODIS Terra L1B ({COLLECTION}) at 1 km, the 14 bands {", ".join(BANDS)} in this order (the \
authors' chip pipeline): bands 1, 2, 3, 6, 7, 26 as TOA reflectance in percent, bands 21, 27-33 as \
brightness temperature in kelvin (what satpy's modis_l1b calibration gives, as in the authors' chips). \
rs-embed 0.3.1 used the order 1,2,3,26,6,20,7,27,28,29,31,32,33,34 instead; the order here is the \
authors' code's, and it also fits their thermal statistics (the 12 um channel max 321.5 K is band 32, \
not the 13.3 um CO2 band 33).
Normalisation (the authors' MinMaxEmissiveScaleReflectance): reflectance % x 0.01; brightness \
temperature (K - min) / (max - min) with their global per-channel min / max; written here as one \
`normalize` step. Invalid pixels are set to 0 after normalisation (the authors' daily composites had \
no such pixels).
Size: the ROI is resized (bilinear, antialiased) to 128 x 128, the pre-training chip size (the \
authors' transform resizes too); 128 km at 1 km GSD needs no resampling.
Output: the encoder's last stage (4 x 4 tokens of 4096) after its final LayerNorm, which is what the \
pre-training decoder read; pooled = their mean.
Data: Earth Engine's catalogue holds no MODIS L1B top-of-atmosphere collection (its MODIS collections \
are surface reflectance, temperature and other level-2/3 products), so this input comes from local \
files: GeoTIFF mosaics of the bands named as above (see docs/models/satvision.md).
Weights: {HUB_REPO}/{HUB_FILE} at commit {HUB_COMMIT} (5.3 GB, bfloat16, a DeepSpeed checkpoint whose \
"module" entry is read with weights_only=True, memory-mapped), the default. No published sha256 of that \
file could be found, so the digest is its Git LFS sha256 at that commit, read from the Hub's metadata on the \
first download, verified and recorded in the rs-embed cache for later (offline) loads (not verified here: \
no Hub access). weights='<path>' takes your own copy instead (pinned by its own sha256, loaded strictly). \
Licence: Apache-2.0 (the model card). The full model needs about 12 GB of memory in float32."""


class SatVision(Embedder):
    card = ModelCard(
        id="satvision",
        aliases=("satvision_toa",),
        description=(
            "SatVision-TOA (NASA): SwinV2-Giant (3 B) pre-trained by masked image modelling on 14-band MODIS "
            "L1B top-of-atmosphere composites, all-sky, 128 px at 1 km."
        ),
        input=InputSpec(COLLECTION, BANDS, GSD_M, image_size=IMG_SIZE, frames=1, composite="mosaic"),
        variants=VARIANTS,
        default_variant="giant",
        preprocessing=_chain(),
        pooled="mean of the last stage's 4 x 4 tokens after the final LayerNorm",
        grid="last-stage tokens after the final LayerNorm (4096 x 4 x 4), georeferenced",
        license="code: Apache-2.0 (rs-embed); weights: Apache-2.0",
        citation=(
            "Spradlin, C. S., Caraballo-Vega, J. A., Li, J., Carroll, M. L., Gong, J., Montesano, P. M. "
            "SatVision-TOA: A Geospatial Foundation Model for Coarse-Resolution All-Sky Remote Sensing "
            "Imagery. arXiv:2411.17000, 2024"
        ),
        homepage=f"https://huggingface.co/{HUB_REPO}",
        notes=NOTES,
    )
    uses_torch = True

    @classmethod
    def check_request(cls, variant: Variant, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        """The 14 bands in the authors' order, one frame, weights given: refused before any fetch."""
        bands = requested_bands(sensors, steps)
        if tuple(bands) != BANDS:
            raise SpecError(f"SatVision-TOA takes the 14 MODIS L1B bands {list(BANDS)} in this order; "
                            f"the request gives {list(bands)}")
        if any(s.frames != 1 for s in sensors if s.composite != "none"):
            raise SpecError("SatVision-TOA takes one composited frame per item (frames=1)")
        if variant.weights is None:
            raise WeightsError(_no_weights_message(variant))

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.net: SatVisionSwinV2 | None = None

    def load(self) -> None:
        if self.variant.weights is None:
            raise WeightsError(_no_weights_message(self.variant))
        from rs_embed_satvision_model import build

        self.net = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        check_single_frame(x, ctx, "SatVision-TOA")
        if self.net is None:
            self.load()
        grid = self.net(x[:, 0].float())  # type: ignore[misc]
        pooled = grid.mean(dim=(2, 3))
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None)


def _no_weights_message(variant: Variant) -> str:
    """For a variant built without weights (the card's own variant pins them)."""
    return (f"SatVision-TOA variant {variant.name!r} has no weights: pass weights='<path to the file>' (pinned by "
            f"its own sha256, loaded strictly), e.g. {HUB_REPO}/{HUB_FILE} at commit {HUB_COMMIT}.")


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(SatVision)
