"""FoMo-Net (Bountos et al., AAAI 2025) for rs-embed: one ViT for any set of bands, a token per band and patch.

FoMo-Net_1 was pre-trained (masked autoencoding) on a mix of forest-monitoring data: Sentinel-1/2,
Landsat, Planet, aerial, Gaofen-2 and DEM, each band identified by one of 37 spectral ids. Input
64 x 64 px, 16 px patches: a 10-band Sentinel-2 image gives 10 x 16 tokens. The network is
`rs_embed_fomo_model.FoMoNet`; no installable reference exists (FoMo-Bench is a repository, not a
package): its transformer is checked against vit-pytorch's, the rest by invariants.

- `FoMo` (model id "fomo"), variant "fomonet1" (ViT-B: dim 768, depth 12, 12 heads). pooled = mean
  of all (band, patch) tokens after the final LayerNorm (the authors' pooling, without their
  classifier); grid = the tokens of each patch averaged over bands (768 x 4 x 4).
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

    from rs_embed_fomo_model import FoMoNet

__all__ = ["FoMo", "register_embedders"]

# FoMo-Bench configs/datasets/fomo_pretraining_datasets.json "modality_channels": the spectral id of each
# band the model was pre-trained with (Sentinel-1 VV 4, VH 5; Sentinel-2 B1..B12 6..18).
S2_SPECTRAL_IDS = {"B1": 6, "B2": 7, "B3": 8, "B4": 9, "B5": 10, "B6": 11, "B7": 12, "B8": 13, "B8A": 14,
                   "B9": 15, "B10": 16, "B11": 17, "B12": 18}
SPECTRAL_IDS = 37  # ids 0..36 (Planet, S1, S2, Landsat, aerial, DEM, Gaofen-2); the table has one more row

S2_COLLECTION = "COPERNICUS/S2_HARMONIZED"
# The Sentinel-2 bands of TalloS, FoMo's Sentinel-2 pre-training source, in its channel order
# ("dataset_modality_index" -> "tallos"), and TalloS's per-channel mean / std (configs/stats/stats.json,
# the "standard" normalisation of mae_training.json), in DN.
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
S2_MEAN = (1283.97119, 1438.82031, 1378.67847, 1819.70667, 2835.08765, 3202.86938, 3276.03394, 3422.51392,
           2305.23926, 1555.97595)
S2_STD = (2028.46753, 1908.08655, 1912.57837, 1931.35449, 1730.66138, 1714.06738, 1679.35315, 1671.14331,
          1351.27197, 1257.4989)
IMAGE_SIZE, GSD_M = 64, 10.0

# The authors' Dropbox file (FoMo-Bench README, "Loading pretrained FoMo-Net"); no digest is published.
DROPBOX_URL = ("https://www.dropbox.com/scl/fi/4ckmxlcbc0tcod8hknp7c/fomo_single_embedding_layer_weights.pt"
               "?rlkey=26tlf3yaz93vvcosr0qrvklub&dl=1")
WEIGHTS_FILE = "fomo_single_embedding_layer_weights.pt"

# examples/pretrained_fomo_example.py: image 64, patch 16, dim 768, depth 12, heads 12, mlp_dim 2048,
# dim_head 64 (MultiSpectralViT's default), single embedding layer.
FOMONET1 = Variant("fomonet1", pooled_dim=768, grid_dim=768, weights=None, params={
    "image_size": IMAGE_SIZE, "patch_size": 16, "dim": 768, "depth": 12, "heads": 12, "dim_head": 64,
    "mlp_dim": 2048, "spectral_ids": SPECTRAL_IDS,
})

PREPROCESSING = (
    Step("normalize", {"mean": list(S2_MEAN), "std": list(S2_STD)}),
    Step("fill_invalid", {"value": 0.0}),
    Step("resize", {"size": IMAGE_SIZE, "method": "bilinear", "antialias": True}),
)

NOTES = f"""\
Input: Sentinel-2 ({S2_COLLECTION}) bands {", ".join(S2_BANDS)} (TalloS's Sentinel-2 bands and order, \
FoMo's Sentinel-2 pre-training source) at {GSD_M:g} m, one median composite, {IMAGE_SIZE} x {IMAGE_SIZE} px; \
each band enters with its spectral id from the authors' table (B2 7 ... B12 18). Other band sets are \
refused: the normalisation statistics exist for these bands only. Chain: (DN - mean) / std with TalloS's \
per-band statistics (FoMo-Bench stats.json, the "standard" normalisation its MAE pre-training used), \
invalid pixels 0 (the mean), resize to {IMAGE_SIZE} (bilinear, antialiased). The public code does not say \
whether TalloS's Sentinel-2 is level-1C or level-2A; its blue mean (DN 1284) is typical of top-of-atmosphere \
values, hence level-1C here; pass sensor= with COPERNICUS/S2_SR_HARMONIZED to use level-2A. rs-embed 0.3.1 \
differed: 12 level-2A bands (B1..B12 without B10) scaled DN / 10000, not the authors' normalisation.
Network: the authors' MultiSpectralViT (single embedding layer): per band, 16 x 16 patches -> LayerNorm \
-> Linear -> LayerNorm, + spectral embedding of the band id + position embedding of the patch; tokens of \
all bands concatenated band after band; vit-pytorch pre-norm transformer (dim 768, depth 12, 12 heads of \
64, MLP 2048) with a final LayerNorm. pooled = mean of all tokens (the authors' pool=True path before \
mlp_head); grid = per patch, the mean over bands of its tokens (768 x 4 x 4, row-major). cls_token (unused \
by the authors' forward) and mlp_head (a classifier) are dropped by name; everything else loads strictly.
Weights: FoMo-Net_1 is published only on Dropbox ({DROPBOX_URL.split("?")[0]}), with no sha256 or size \
anywhere found: no default weights are pinned. Download {WEIGHTS_FILE} and pass weights="<path>" (pinned \
by its own sha256; a plain state dict, read with weights_only=True). Licence: MIT (FoMo-Bench repository, \
which publishes the weights). Not verifiable here: the real file (keys, shapes checked on random weights \
of the authors' layout only)."""


class FoMo(Embedder):
    card = ModelCard(
        id="fomo",
        aliases=("fomonet",),
        description=(
            "FoMo-Net_1 (Bountos et al., 2025): a ViT-B pre-trained on multi-sensor forest-monitoring data with "
            "one token per band and patch (spectral ids); 10-band Sentinel-2, 64 px in."
        ),
        input=InputSpec(S2_COLLECTION, S2_BANDS, GSD_M, image_size=IMAGE_SIZE, frames=1, composite="median"),
        variants=(FOMONET1,),
        default_variant="fomonet1",
        preprocessing=PREPROCESSING,
        pooled="mean of all (band, patch) tokens after the final LayerNorm",
        grid="per patch, the mean over bands of its tokens, row-major (768 x 4 x 4)",
        license="code: Apache-2.0 (rs-embed); weights: MIT (FoMo-Bench)",
        citation=(
            "Bountos, N. I., Ouaknine, A., Papoutsis, I., Rolnick, D. FoMo: Multi-Modal, Multi-Scale and Multi-Task "
            "Remote Sensing Foundation Models for Forest Monitoring. AAAI 2025. arXiv:2312.10114"
        ),
        homepage="https://github.com/RolnickLab/FoMo-Bench",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.net: FoMoNet | None = None

    @classmethod
    def check_request(cls, variant: Variant, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        bands = requested_bands(sensors, steps)
        collections = {s.collection for s in sensors}
        if len(collections) != 1 or not next(iter(collections)).startswith("COPERNICUS/S2") or bands != S2_BANDS:
            raise SpecError(f"FoMo takes the Sentinel-2 bands {list(S2_BANDS)} (TalloS's, with its statistics) in "
                            f"this order; the request gives {list(bands)} of {sorted(collections)}")

    def load(self) -> None:
        if self.variant.weights is None:
            raise WeightsError(
                f"FoMo variant {self.variant.name!r} has no pinned default weights: the authors publish "
                f"{WEIGHTS_FILE} only on Dropbox ({DROPBOX_URL}) with no digest. Download it and pass "
                "weights='<path to the .pt>' (pinned by its sha256, loaded strictly)."
            )
        from rs_embed_fomo_model import build

        self.net = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        if x.ndim != 5 or x.shape[1] != 1 or x.shape[2] != len(S2_BANDS):
            raise SpecError(f"FoMo takes one {len(S2_BANDS)}-band frame per item, (B, 1, C, H, W); got {tuple(x.shape)}")
        if self.net is None:
            self.load()
        ids = [S2_SPECTRAL_IDS[b] for b in S2_BANDS]
        pooled, grid = self.net(x[:, 0].float(), ids)  # type: ignore[misc]
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None)


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(FoMo)
