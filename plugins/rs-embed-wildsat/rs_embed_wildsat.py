"""WildSAT (Daroya et al., ICCV 2025) for rs-embed: satellite encoders tuned with wildlife observations.

WildSAT fine-tunes ImageNet classifiers from torchvision (ViT-B/16, ResNet-50, Swin-T) on
SatlasPretrain's Sentinel-2 true-colour tiles, contrasting each image with species-distribution
(SINR) features of its location, Wikipedia habitat text and an augmented view. The network is
`rs_embed_wildsat_model.WildSAT` (torchvision's parameter names, loaded strictly); torchvision is
the test-time reference.

- `WildSATEmbedder` (model id "wildsat"), variants "vitb16" (default), "resnet50", "swint": pooled =
  the image head's 256-d projection of the backbone's output; "<arch>_features": pooled = that 1000-d
  output itself (the fine-tuned classifier layer, the feature WildSAT's heads read). grid = the backbone's last
  feature map (ViT: patch tokens after the final LayerNorm, 768 x 14 x 14; ResNet-50: layer4,
  2048 x 16 x 16; Swin-T: the normed last stage, 768 x 16 x 16).
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

    from rs_embed_wildsat_model import WildSAT

__all__ = ["WildSATEmbedder", "register_embedders"]

# SatlasPretrain's Sentinel-2 "tci" images (ESA's 8-bit true-colour image of level-1C products), 512 x 512
# tiles of Web-Mercator zoom 13 (about 10 m a pixel), are WildSAT's training input (dataset/satlas_sentinel.py).
S2_COLLECTION = "COPERNICUS/S2_HARMONIZED"
S2_COLLECTIONS = (S2_COLLECTION, "COPERNICUS/S2_SR_HARMONIZED")  # level-2A: same chain, not what WildSAT saw
RGB_BANDS = ("B4", "B3", "B2")
TILE_PX, GSD_M = 512, 10.0
# ESA publishes no formula for the TCI stretch; DN 0..2500 -> 0..255 is the emulation rs-embed's DOFA
# plugin follows for the same SatlasPretrain images (a DOFA GEO-Bench wrapper's NormDOFATransform).
TCI_HIGH_DN = 2500.0

# The ImageNet-initialised checkpoints of the authors' README ("Checkpoint when fully trained with WildSAT"),
# on Google Drive. No digest of these files is published anywhere found, so none is pinned (see NOTES).
DRIVE_FILES = {
    "vit_b_16": "https://drive.google.com/file/d/1IxBpf3nbEMzny4YJWS6stMBxel6gMiYE",
    "resnet50": "https://drive.google.com/file/d/1LwCjzT1p0yFOtv1m0YD-rl7tP0eYXTb2",
    "swin_t": "https://drive.google.com/file/d/12rfb3ES9-RuIAk_RjzYrMQJG_5J1Iq5H",
}


def _variant(name: str, arch: str, input_size: int, grid_dim: int, head: str | None) -> Variant:
    return Variant(name, pooled_dim=256 if head else 1000, grid_dim=grid_dim, weights=None,
                   params={"arch": arch, "input_size": input_size, "head": head})


# train.py resizes the 512 px tiles to 224 for vitb16 only; ResNet-50 and Swin-T see them at 512.
# pooled = the image head (as rs-embed 0.3.1's default "feature"); "_features" = the backbone's 1000-d output.
VARIANTS = tuple(
    _variant(name + suffix, arch, size, dim, head)
    for name, arch, size, dim in (("vitb16", "vit_b_16", 224, 768), ("resnet50", "resnet50", 512, 2048),
                                  ("swint", "swin_t", 512, 768))
    for suffix, head in (("", "image"), ("_features", None))
)

PREPROCESSING = (
    Step("to_8bit", {"low": 0.0, "high": TCI_HIGH_DN, "round": True}),
    Step("scale", {"factor": 1.0 / 255.0}),
    Step("fill_invalid", {"value": 0.0}),
    Step("resize", {"size": TILE_PX, "method": "bilinear", "antialias": True}),
)

NOTES = f"""\
Input: Sentinel-2 level-1C ({S2_COLLECTION}) red, green, blue ({", ".join(RGB_BANDS)}) at {GSD_M:g} m, one \
median composite, {TILE_PX} x {TILE_PX} px (SatlasPretrain's tile size); level-2A \
(COPERNICUS/S2_SR_HARMONIZED, rs-embed 0.3.1's default) is accepted with sensor= and the same chain, but is \
not what WildSAT saw; other bands or collections are refused. Chain: DN 0..{TCI_HIGH_DN:g} -> 0..255 rounded (emulating ESA's 8-bit TCI image that SatlasPretrain \
stores and WildSAT was trained on; ESA publishes no formula, the same emulation as rs-embed's DOFA), / 255 \
(torchvision ToTensor), invalid pixels 0, resize to {TILE_PX} (bilinear, antialiased). In the network, as the \
authors' dataset and quickstart do: the ViT-B/16 variants resize the tile to 224 (bilinear, antialiased, \
torchvision's Resize on a tensor); then each image has its minimum (over all channels and pixels) \
subtracted and is divided by max(its new maximum, 1), i.e. by 1 for these inputs; a constant image \
becomes zeros. No ImageNet mean/std normalisation: WildSAT's code applies none. Deviations: the TCI \
stretch is emulated, not reproduced; invalid pixels set to 0 take part in the minimum. rs-embed 0.3.1 \
differed: level-2A, DN / 10000 stretched per image to 0..1, every backbone at 224 px.
Network: torchvision's vit_b_16 / resnet50 / swin_t with their 1000-way ImageNet classifier, fine-tuned \
(train.py: --use_bnft --is_tunefc), plus three bias-free Linear 1000 -> 256 heads into the text, location \
and image spaces (decoder.backbone1/2/3). pooled = the classifier layer's 1000-d output (what the \
authors' SingleTaskModel returns as features) for the "_features" variants; the others return the image \
head's 256-d projection of it (unnormalised, as trained with a contrastive loss; rs-embed 0.3.1's \
default). grid = the last feature map before pooling. \
Checkpoints of the authors' other initialisations (CLIP+LoRA, Prithvi, SatCLIP, Satlas, MoCo, SeCo) use \
other architectures and are not supported.
Weights: the authors publish training checkpoints on Google Drive only ({DRIVE_FILES["vit_b_16"]} ViT-B/16, \
{DRIVE_FILES["resnet50"]} ResNet-50, {DRIVE_FILES["swin_t"]} Swin-T, all ImageNet-initialised), with no \
published sha256 or size: no default weights are pinned. Download the file and pass weights="<path>" \
(pinned by its own sha256). The file may be the training checkpoint itself: its "satellite_state_dict" is \
read with torch.load(weights_only=True), argparse.Namespace (the run's options) being the only class \
allowed; a "module." prefix is stripped; everything else loads strictly. Licence: the authors' repository \
(github.com/cvl-umass/wildsat) states none; ask them before redistributing."""


class WildSATEmbedder(Embedder):
    card = ModelCard(
        id="wildsat",
        description=(
            "WildSAT (Daroya et al., ICCV 2025): torchvision ViT-B/16, ResNet-50 and Swin-T fine-tuned by "
            "contrasting Sentinel-2 RGB tiles with wildlife observations, habitat text and augmentations."
        ),
        input=InputSpec(S2_COLLECTION, RGB_BANDS, GSD_M, image_size=TILE_PX, frames=1, composite="median"),
        variants=VARIANTS,
        default_variant="vitb16",
        preprocessing=PREPROCESSING,
        pooled="the image head's 256-d projection; '_features' variants: the fine-tuned classifier layer's 1000-d output",
        grid="the backbone's last feature map, row-major (ViT 768 x 14 x 14, ResNet-50 2048 x 16 x 16, "
             "Swin-T 768 x 16 x 16)",
        license="code: Apache-2.0 (rs-embed); weights: no licence stated by the authors",
        citation=(
            "Daroya, R., Cole, E., Mac Aodha, O., Van Horn, G., Maji, S. WildSAT: Learning Satellite Image "
            "Representations from Wildlife Observations. ICCV 2025. arXiv:2412.14428"
        ),
        homepage="https://github.com/cvl-umass/wildsat",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.net: WildSAT | None = None

    @classmethod
    def check_request(cls, variant: Variant, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        bands = requested_bands(sensors, steps)
        collections = {s.collection for s in sensors}
        if len(collections) != 1 or not collections <= set(S2_COLLECTIONS) or bands != RGB_BANDS:
            raise SpecError(f"WildSAT takes Sentinel-2 red, green, blue {list(RGB_BANDS)} of one of {list(S2_COLLECTIONS)} "
                            f"in this order; the request gives {list(bands)} of {sorted(collections)}")

    def load(self) -> None:
        if self.variant.weights is None:
            url = DRIVE_FILES[self.variant.params["arch"]]
            raise WeightsError(
                f"WildSAT variant {self.variant.name!r} has no pinned default weights: the authors publish the "
                f"checkpoint only on Google Drive ({url}) with no digest. Download it and pass "
                "weights='<path to the .pth>' (pinned by its sha256, loaded strictly)."
            )
        from rs_embed_wildsat_model import build

        self.net = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        if x.ndim != 5 or x.shape[1] != 1 or x.shape[2] != len(RGB_BANDS):
            raise SpecError(f"WildSAT takes one RGB frame per item, (B, 1, 3, H, W); got {tuple(x.shape)}")
        if self.net is None:
            self.load()
        from rs_embed_wildsat_model import embed

        pooled, grid = embed(self.net, x[:, 0].float(), self.variant.params)  # type: ignore[arg-type]
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None)


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(WildSATEmbedder)
