"""SSL4EO-S12 (Wang et al., 2023) for rs-embed: ViTs self-supervised on 13-band Sentinel-2 L1C.

SSL4EO-S12 pre-trained the same ViT backbones with several self-supervised methods on 250k
Sentinel-2 level-1C patches (all 13 bands, four seasons). The encoders are plain timm ViTs with
13 input channels; the network is `rs_embed_core.nn.vit.TimmViT` (rs_embed_ssl4eo_model), which
loads the released files strictly; timm and torchgeo are the test-time references.

- `SSL4EO` (model id "ssl4eo"), variants: "vit_small_moco" (default), "vit_small_dino",
  "vit_small_mae", "vit_base_mae", "vit_large_mae". pooled = class token after the final
  LayerNorm; grid = the patch tokens after it (D x 14 x 14).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput, requested_bands
from rs_embed_core.errors import SpecError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.specs import SensorSpec

if TYPE_CHECKING:
    import torch

    from rs_embed_core.nn.vit import TimmViT

__all__ = ["SSL4EO", "register_embedders"]

S2_COLLECTION = "COPERNICUS/S2_HARMONIZED"
# The pre-training band order (SSL4EO-S12 ssl4eo_dataset.py ALL_BANDS_S2_L1C; torchgeo _sentinel2_toa_bands).
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
IMAGE_SIZE, GSD_M = 224, 10.0
WEIGHTS_LICENSE = "cc-by-4.0"  # wangyi111/SSL4EO-S12 on the Hub ("License: cc-by-4.0"), the authors' release

# torchgeo 0.8.1 ViTSmall16_Weights.SENTINEL2_ALL_MOCO / _DINO: torchgeo's Hub files at the pinned commits.
# Full sha256 and sizes from the Git LFS pointers of those very commits (huggingface.co/torchgeo/
# vit_small_patch16_224_sentinel2_all_moco/commit/1cb683f6..., ".../all_dino/commit/5b41dd41...", found with
# the docs search; their first 8 hex digits are the file-name suffixes); 90,668,909 and 90,644,269 bytes.
# Not recomputed here (no Hub access): a mismatch fails on load.
MOCO_WEIGHTS = WeightsSpec(
    "torchgeo/vit_small_patch16_224_sentinel2_all_moco", "1cb683f6c14739634cdfaaceb076529adf898c74",
    "vit_small_patch16_224_sentinel2_all_moco-67c9032d.pth",
    "67c9032df0449ae37f93c51696bcae0c6dc3485103deb44b4669e9897b90409c", WEIGHTS_LICENSE,
)
DINO_WEIGHTS = WeightsSpec(
    "torchgeo/vit_small_patch16_224_sentinel2_all_dino", "5b41dd418a79de47ac9f5be3e035405a83818a62",
    "vit_small_patch16_224_sentinel2_all_dino-36bcc127.pth",
    "36bcc1273227252faf98e1d9f32c35166d3612d30dc0c15812c29bed6da9a7d5", WEIGHTS_LICENSE,
)
# torchgeo 0.8.1 ViT{Small,Base,Large}16_Weights.SENTINEL2_ALL_MAE point at the authors' encoder files
# https://huggingface.co/wangyi111/SSL4EO-S12/resolve/75c72195d35201dc1fb210818993518c25da566b/B13_vit{s,b,l}16_mae_ep99_enc.pth
# with no hash in the name; no sha256 of these files could be found (the Hub pages found list only the full
# training checkpoints of earlier commits). The commit pins them all the same: the digest is each file's Git
# LFS sha256 at that commit, read from the Hub on the first download, verified and recorded
# (WeightsSpec.from_revision).
MAE_SOURCE = ("wangyi111/SSL4EO-S12", "75c72195d35201dc1fb210818993518c25da566b")
MAE_FILES = {"vit_small_mae": "B13_vits16_mae_ep99_enc.pth", "vit_base_mae": "B13_vitb16_mae_ep99_enc.pth",
             "vit_large_mae": "B13_vitl16_mae_ep99_enc.pth"}
MAE_WEIGHTS = {variant: WeightsSpec.from_revision(*MAE_SOURCE, filename, WEIGHTS_LICENSE)
               for variant, filename in MAE_FILES.items()}


def _vit(embed_dim: int, depth: int, heads: int) -> dict[str, Any]:
    return {"embed_dim": embed_dim, "depth": depth, "heads": heads, "in_chans": 13, "patch_size": 16,
            "image_size": IMAGE_SIZE, "mlp_ratio": 4.0, "norm_eps": 1e-6}


# Head counts as pre-trained: MoCo v3's vit_small has 12 heads (moco-v3 vits.py, which SSL4EO-S12's
# pretrain_moco_v3_s2c.py builds with --arch vit_small); DINO's vit_small 6 (dino vision_transformer.py);
# SSL4EO-S12's mae_vit_small_patch16 6, base 12, large 16 (models_mae.py). LayerNorm eps 1e-6 in all.
VARIANTS = (
    Variant("vit_small_moco", pooled_dim=384, grid_dim=384, weights=MOCO_WEIGHTS, params=_vit(384, 12, 12)),
    Variant("vit_small_dino", pooled_dim=384, grid_dim=384, weights=DINO_WEIGHTS, params=_vit(384, 12, 6)),
    Variant("vit_small_mae", pooled_dim=384, grid_dim=384, weights=MAE_WEIGHTS["vit_small_mae"],
            params=_vit(384, 12, 6)),
    Variant("vit_base_mae", pooled_dim=768, grid_dim=768, weights=MAE_WEIGHTS["vit_base_mae"],
            params=_vit(768, 12, 12)),
    Variant("vit_large_mae", pooled_dim=1024, grid_dim=1024, weights=MAE_WEIGHTS["vit_large_mae"],
            params=_vit(1024, 24, 16)),
)

# Pre-training input (SSL4EO-S12 ssl4eo_dataset.py, dtype "uint8", the ssl4eo_250k_s2c_uint8.lmdb every
# ViT-S script trains on): uint8(DN / 10000 * 255), then ToTensor's / 255, i.e. reflectance DN / 10000 in
# 1/255 steps; torchgeo's transforms for these weights divide by 10000 as well.
PREPROCESSING = (
    Step("scale", {"factor": 1e-4}),
    Step("clip", {"min": 0.0, "max": 1.0}),
    Step("fill_invalid", {"value": 0.0}),
    Step("resize", {"size": IMAGE_SIZE, "method": "bilinear", "antialias": True}),
)

NOTES = f"""\
Input: Sentinel-2 level-1C ({S2_COLLECTION}, top of atmosphere, as SSL4EO-S12's "s2c"), all 13 bands in \
the pre-training order {", ".join(S2_BANDS)}, {IMAGE_SIZE} x {IMAGE_SIZE} px at {GSD_M:g} m, one median \
composite; other band sets or collections are refused (the encoders take exactly these 13 channels). \
Chain: DN / 10000 clipped to 0..1, invalid pixels 0, resize to {IMAGE_SIZE} (bilinear, antialiased). \
The weights were trained on uint8(DN / 10000 x 255) / 255 (SSL4EO-S12's uint8 LMDB + ToTensor; torchgeo's \
transforms: / 10000). Deviations: values are not floored to 1/255 steps (< 0.004, on average 0.002 \
higher than trained); DN above 10000 are clipped to 1, where the uint8 cast of the original wrapped \
around; torchgeo's Resize(256) + CenterCrop(224), an evaluation convention for fixed-size datasets, is \
not applied: the whole ROI is resized to {IMAGE_SIZE} (pre-training saw random crops of 20-100% of a \
2.64 km patch resized to 224, i.e. 5.3-11.8 m pixels).
Network: timm ViT (patch 16, LayerNorm eps 1e-6, class token, stored position table), 13 input channels. \
vit_small_moco has 12 attention heads, as MoCo v3's ViT-S was trained; torchgeo 0.8.1 loads this file \
into timm's vit_small_patch16_224, which has 6 heads, so torchgeo's MoCo outputs differ from the trained \
model's (the equality test compares with timm built with 12 heads; DINO and MAE ViT-S have 6 heads and are \
compared with torchgeo's builders). A classification head, if a file holds one, is dropped by name; \
everything else loads strictly. pooled = class token after the final LayerNorm (timm's pooled output \
for these encoders, what torchgeo's models return); grid = the patch tokens after it (D x 14 x 14).
Weights: MoCo and DINO ViT-S/16 from torchgeo's Hub files at the commits torchgeo 0.8.1 pins, full \
sha256 from those commits' Git LFS pointers (not recomputed here). MAE ViT-S/B/L: the authors' \
{MAE_SOURCE[0]} files torchgeo points at, pinned to the same commit {MAE_SOURCE[1]} \
(B13_vit{{s,b,l}}16_mae_ep99_enc.pth); no published sha256 of them could be read, so the digest is each \
file's Git LFS sha256 at that commit, read from the Hub's metadata on the first download, verified and \
recorded in the rs-embed cache for later (offline) loads (not verified here: no Hub access). Licence \
CC-BY-4.0 (the authors' Hub repository)."""


class SSL4EO(Embedder):
    card = ModelCard(
        id="ssl4eo",
        aliases=("ssl4eo_s12",),
        description=(
            "SSL4EO-S12 (Wang et al., 2023): ViT-S/16 pre-trained with MoCo v3, DINO or MAE, and ViT-B/16 and "
            "ViT-L/16 with MAE, on 250k 13-band Sentinel-2 L1C patches; 13-band Sentinel-2 L1C in."
        ),
        input=InputSpec(S2_COLLECTION, S2_BANDS, GSD_M, image_size=IMAGE_SIZE, frames=1, composite="median"),
        variants=VARIANTS,
        default_variant="vit_small_moco",
        preprocessing=PREPROCESSING,
        pooled="class token after the final LayerNorm",
        grid="patch tokens after the final LayerNorm, row-major spatial order (D x 14 x 14)",
        license="code: Apache-2.0 (rs-embed); weights: CC-BY-4.0",
        citation=(
            "Wang, Y., Braham, N. A. A., Xiong, Z., Liu, C., Albrecht, C. M., Zhu, X. X. SSL4EO-S12: A large-scale "
            "multimodal, multitemporal dataset for self-supervised learning in Earth observation. IEEE Geoscience "
            "and Remote Sensing Magazine 11(3), 2023. arXiv:2211.07044"
        ),
        homepage="https://github.com/zhu-xlab/SSL4EO-S12",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.net: TimmViT | None = None

    @classmethod
    def check_request(cls, variant: Variant, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        """The encoders take exactly the 13 Sentinel-2 L1C bands in the pre-training order: refuse anything else."""
        bands = requested_bands(sensors, steps)
        collections = {s.collection for s in sensors}
        if collections != {S2_COLLECTION} or bands != S2_BANDS:
            raise SpecError(
                f"SSL4EO-S12 encoders take the 13 Sentinel-2 L1C bands {list(S2_BANDS)} of {S2_COLLECTION} in this "
                f"order; the request gives {list(bands)} of {sorted(collections)}"
            )

    def load(self) -> None:
        from rs_embed_ssl4eo_model import build

        self.net = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        if x.ndim != 5 or x.shape[1] != 1 or x.shape[2] != len(S2_BANDS):
            raise SpecError(f"SSL4EO takes one 13-band frame per item, (B, 1, 13, H, W); got {tuple(x.shape)}. "
                            "Use a compositing sensor (composite='median' or 'mosaic', frames=1).")
        if self.net is None:
            self.load()
        from rs_embed_ssl4eo_model import embed

        pooled, grid = embed(self.net, x[:, 0].float())  # type: ignore[arg-type]
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None)


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(SSL4EO)
