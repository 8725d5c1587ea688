"""AgriFM (Li et al. 2025, arXiv:2505.21357) for rs-embed.

A multi-source temporal foundation model for crop mapping: a modified Video Swin Transformer whose
patch merging halves time together with space, pre-trained on MODIS, Landsat-8/9 and Sentinel-2 time
series supervised by land-cover products. This plugin serves its Sentinel-2 encoder (10 bands, its own
patch embedding), rebuilt in torch (rs_embed_agrifm_model) from the authors' public code. Their
implementation needs mmcv/mmseg, which do not install here; the test reference is torchvision's Video Swin
(the architecture AgriFM modifies) with AgriFM's one change, the frame-pair mean in patch merging.

- `AgriFM` (model id "agrifm"): T median composites (default 8) over equal bins of the window, 256 px at
  10 m; pooled = mean of the last stage's tokens after the final LayerNorm; grid = those tokens
  (1024 x 16 x 16), georeferenced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput, requested_bands
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.specs import SensorSpec

if TYPE_CHECKING:
    import torch

    from rs_embed_agrifm_model import AgriFMEncoder

__all__ = ["AgriFM", "register_embedders"]

COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
# configs/cropland_mapping.py (flyakon/AgriFM), mean / std of the 'S2' source, per band on DN (reflectance x 10000).
MEAN = (4179.192015478227, 4065.9106675194444, 3957.274910960156, 5207.452475253116, 4327.12234687,
        4873.16102239, 5049.1637925, 5111.07806856, 3056.86349163, 2490.9675032)
STD = (4041.5212325268735, 3691.003119315892, 3629.331318356375, 2973.5178530908756, 3569.73343885,
       3085.9151435, 2937.56005119, 2806.04462314, 1808.30013156, 1694.20220774)
IMG_SIZE = 256  # the config's img_size
FRAMES = 8  # the user documentation's default (rs-embed 0.3.1); the authors' downstream config uses 32
# Up to 32 frames the encoder ends with one temporal token (patch 4 in time, then halved three times), so
# its output is 1024 wide; more frames fold more tokens into the channels and change the width.
MAX_FRAMES = 32
WEIGHTS_URL = ("https://hkuhk-my.sharepoint.com/:u:/g/personal/liwayne_hku_hk/"
               "EYpkEio2w9lOr_QDwDynTB4BwZPm8QUnlBn4KiicUMvgrQ?e=sAKoxa")

S2 = {
    "in_chans": len(BANDS), "patch_size": [4, 2, 2], "embed_dim": 128, "depths": [2, 2, 18, 2],
    "heads": [4, 8, 16, 32], "window": [8, 7, 7], "mlp_ratio": 4.0, "max_frames": MAX_FRAMES,
}
VARIANTS = (Variant("s2", pooled_dim=1024, grid_dim=1024, weights=None, params=S2),)


def _chain() -> tuple[Step, ...]:
    return (
        Step("select_bands", {"bands": list(BANDS)}),
        Step("normalize", {"mean": list(MEAN), "std": list(STD)}),
        Step("fill_invalid", {"value": 0.0}),  # = the band mean after normalisation
        Step("resize", {"size": IMG_SIZE, "method": "bilinear", "antialias": True}),
    )


NOTES = f"""\
Input: Sentinel-2 L2A B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12 at 10 m (the authors' 10-band S2 source; \
their code does not name the order, this is the ascending one rs-embed 0.3.1 used), T = {FRAMES} median \
composites over equal bins of the window (frames=1..{MAX_FRAMES} through sensor=; more is refused before any \
fetch, as the output width would change). The authors' downstream config uses 32 frames at 256 px.
Normalisation: (DN - mean) / std with the config's per-band statistics of the S2 source \
(configs/cropland_mapping.py), then a bilinear resize to 256 x 256 (the config's MapResize). Invalid \
pixels, and whole frames whose bin had no clear observation, are set to the band mean (0 after \
normalisation); the model has no mask input. Frame order matters (time is convolved and merged in order).
Architecture: the authors' Video Swin with temporal-mean patch merging (mean_frame_down=True): an odd \
number of temporal tokens is zero-padded before the pairwise mean, as in their code, so frame counts that \
are not a power-of-two multiple of 4 damp the last frames; windows larger than the map shrink to it and \
reuse the configured window's bias index cut to size (their code's behaviour, kept).
Output: the backbone's `encoder_features`: the last stage after its LayerNorm (1024 x H/16 x W/16).
Weights: the authors publish AgriFM.pth only on a OneDrive share ({WEIGHTS_URL}), with no digest, size \
or pinned version; a share link is not a pinned file, so no default weights are declared: download it and \
pass weights='<path>' (pinned by its own sha256, loaded strictly: "module." stripped, S2_patch_emd renamed \
patch_emd as the authors' loader does, the Landsat and MODIS patch embeddings dropped). What else the file \
holds could not be checked here: a strict-load error lists any other key. Licence: Apache-2.0 (the \
authors' repository; the weights carry no separate licence)."""


class AgriFM(Embedder):
    card = ModelCard(
        id="agrifm",
        description=(
            "AgriFM: Video Swin Transformer for crop mapping, pre-trained on MODIS / Landsat / Sentinel-2 "
            "time series; here its Sentinel-2 encoder, 10 bands x 8 frames at 10 m, 256 px."
        ),
        input=InputSpec(COLLECTION, BANDS, 10.0, image_size=IMG_SIZE, frames=FRAMES, composite="median"),
        variants=VARIANTS,
        default_variant="s2",
        preprocessing=_chain(),
        pooled="mean of the last stage's tokens after the final LayerNorm",
        grid="last-stage tokens after the final LayerNorm (1024 x 16 x 16 at 256 px), georeferenced",
        side_inputs=("frame order (time)",),
        license="code: Apache-2.0 (rs-embed); weights: Apache-2.0 (the authors' repository)",
        citation=(
            "Li, W., Liang, S., Chen, K., Chen, Y., Ma, H., Xu, J., Ma, Y., Guan, S., Fang, H., Shi, Z. AgriFM: A "
            "Multi-source Temporal Remote Sensing Foundation Model for Crop Mapping. arXiv:2505.21357, 2025"
        ),
        homepage="https://github.com/flyakon/AgriFM",
        notes=NOTES,
    )
    uses_torch = True

    @classmethod
    def check_request(cls, variant: Variant, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        """The 10 bands in order, a composited frame count in 1..32, weights given: refused before any fetch."""
        bands = requested_bands(sensors, steps)
        if tuple(bands) != BANDS:
            raise SpecError(f"AgriFM's S2 encoder takes the 10 bands {list(BANDS)} in this order; "
                            f"the request gives {list(bands)}")
        for s in sensors:
            if s.composite == "none":
                raise SpecError("AgriFM needs a fixed number of frames: use composite='median' (or 'mosaic') "
                                f"with frames=1..{MAX_FRAMES}, not composite='none'")
            if not 1 <= s.frames <= MAX_FRAMES:
                raise SpecError(f"AgriFM takes 1..{MAX_FRAMES} frames (its output width is fixed only up to "
                                f"{MAX_FRAMES}); the request asks for {s.frames}")
        if variant.weights is None:
            raise WeightsError(_no_weights_message())

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.net: AgriFMEncoder | None = None

    def load(self) -> None:
        if self.variant.weights is None:
            raise WeightsError(_no_weights_message())
        from rs_embed_agrifm_model import build

        self.net = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        if self.net is None:
            self.load()
        grid = self.net(x.float())  # type: ignore[misc]
        return EmbedOutput(pooled=grid.mean(dim=(2, 3)), grid=grid if ctx.want == "grid" else None)


def _no_weights_message() -> str:
    return ("AgriFM has no pinned default weights: the authors publish AgriFM.pth only on a OneDrive share "
            f"without a digest ({WEIGHTS_URL}). Download it and pass weights='<path to AgriFM.pth>' (pinned "
            "by its own sha256, loaded strictly).")


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(AgriFM)
