"""SatMAE (Cong et al., NeurIPS 2022) and SatMAE++ (Noman et al., CVPR 2024) RGB encoders for rs-embed.

Both are MAE-pre-trained ViT-L/16 encoders on fMoW-RGB with the same encoder architecture; they
differ in their checkpoints (SatMAE++ adds a multi-scale reconstruction head during pre-training,
which is not part of the encoder). The network (rs_embed_satmae_model) is
`rs_embed_core.nn.vit.TimmViT` with the checkpoints' timm parameter names, LayerNorm eps 1e-6 as
both were trained; timm `vit_large_patch16_224` is the test-time reference.

- `SatMAE` (model id "satmae"), `SatMAEPP` (model id "satmaepp"), one variant each, "vit_large".
  pooled = mean of the patch tokens after the final LayerNorm (1024); grid = those tokens in
  row-major spatial order (1024 x 14 x 14). No MAE masking is run, so nothing is shuffled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch

    from rs_embed_core.nn.vit import TimmViT

__all__ = ["SatMAE", "SatMAEPP", "authors_eval_chain", "register_embedders"]

# fMoW-RGB statistics both code bases normalise with (SatMAE util/datasets.py and SatMAE++
# util/datasets.py, CustomDatasetFromImages.mean/std; checked in both repositories).
FMOW_MEAN = (0.4182007312774658, 0.4214799106121063, 0.3991275727748871)
FMOW_STD = (0.28774282336235046, 0.27541765570640564, 0.2764017581939697)
S2_RGB = ("B4", "B3", "B2")
# Sentinel-2 L2A DN (reflectance x 10000) -> 8 bit: reflectance 0..0.3 to 0..255, a true-colour stretch
# standing in for fMoW's 8-bit visual products (the same stretch RemoteCLIP's card uses).
RGB_LOW_DN, RGB_HIGH_DN = 0.0, 3000.0
# The authors' fMoW-RGB eval transform (SatMAE / SatMAE++ SatelliteDataset.build_transform, input 224):
# ToTensor, Normalize, Resize(int(224 / (224/256)) = 256 on the short side, bicubic), CenterCrop(224).
# The Resize runs on a float tensor under torchvision 0.12 (SatMAE env.yml): no antialiasing. Here the
# square input is resized straight to 224 (same interpolation) so the embedding covers the requested ROI;
# EVAL_RESIZE is the authors' short side, for a chain that replicates the crop (see the notes).
EVAL_RESIZE, IMAGE_SIZE = 256, 224

# mae_vit_large_patch16_dec512d8b (both models_mae.py): ViT-L/16, LayerNorm eps 1e-6.
VIT_LARGE = {"embed_dim": 1024, "depth": 24, "heads": 16, "patch_size": 16, "image_size": IMAGE_SIZE,
             "mlp_ratio": 4.0, "norm_eps": 1e-6}

# MAE decoder (both files): dropped by name, never loaded.
MAE_DECODER = ("mask_token", "decoder_embed", "decoder_pos_embed", "decoder_blocks", "decoder_norm", "decoder_pred")
# SatMAE++'s multi-scale upsampling head (satmae_pp models_mae.py: proj_up_conv, proj_up_norm, up_block).
SATMAEPP_HEAD = ("proj_up_conv", "proj_up_norm", "up_block")

# SatMAE++: the authors' own Hub upload, linked from github.com/techmn/satmae_pp's README ("ViT-L |
# FMoW-RGB | Pretrain"). Commit 8f4c97f767fb633c635e0c23f6e1441be9487f0f ("Upload
# checkpoint_ViT-L_pretrain_fmow_rgb.pth"); its Git LFS pointer: sha256 95e3feff...d30, size
# 3,952,618,663 bytes (training checkpoint: model + optimizer state + args). Read from the Hub's
# commit and file pages; not recomputed here (no Hub access), a mismatch fails on load. Licence
# apache-2.0 (the repository's and github.com/techmn/satmae_pp's).
SATMAEPP_WEIGHTS = WeightsSpec(
    "mubashir04/checkpoint_ViT-L_pretrain_fmow_rgb",
    "8f4c97f767fb633c635e0c23f6e1441be9487f0f",
    "checkpoint_ViT-L_pretrain_fmow_rgb.pth",
    "95e3feff830ecd945161dacdc791c9c9d433d9943baa0f000d71af3765843d30",
    "apache-2.0",
)

# SatMAE: the authors publish fmow_pretrain.pth (ViT-L, 800 epochs) on Zenodo only
# (zenodo.org/record/7369797, linked from github.com/sustainlab-group/SatMAE). The one Hub copy is a
# community conversion, MVRL/satmae-vitlarge-fmow-pretrain-800 (used by rshf and cybergis/rs-embed),
# whose model.safetensors (the rshf MaskedAutoencoderViT: the authors' key names, decoder included) was
# added in commit a9ba7f4b935310067a49781eeba6482e1a606a5a ("Push model using huggingface_hub."; the
# file's only commit in the Hub's history pages). No page we could read shows its sha256 (nor the Zenodo
# file's, nor its size), so the digest is left to that commit: the download reads the file's Git LFS
# sha256 at exactly this revision from the Hub, verifies the bytes against it and records it
# (WeightsSpec.from_revision). Licence: the SatMAE release's CC-BY-NC-4.0 (the MVRL copy is tagged
# apache-2.0, which is not the authors' licence).
SATMAE_WEIGHTS = WeightsSpec.from_revision(
    "MVRL/satmae-vitlarge-fmow-pretrain-800", "a9ba7f4b935310067a49781eeba6482e1a606a5a", "model.safetensors",
    "cc-by-nc-4.0",
)
SATMAE_ZENODO = "https://zenodo.org/record/7369797/files/fmow_pretrain.pth"


def _chain() -> tuple[Step, ...]:
    return (
        Step("select_bands", {"bands": list(S2_RGB)}),
        Step("to_8bit", {"low": RGB_LOW_DN, "high": RGB_HIGH_DN, "round": True}),
        Step("scale", {"factor": 1.0 / 255.0}),
        Step("normalize", {"mean": list(FMOW_MEAN), "std": list(FMOW_STD)}),
        Step("resize", {"size": IMAGE_SIZE, "method": "bicubic", "antialias": False}),
    )


def authors_eval_chain() -> tuple[Step, ...]:
    """The authors' eval transform exactly: resize the short side to 256, then center-crop 224.

    Pass it as `preprocessing=` to replicate their evaluation; the embedding then covers only the
    central 224/256 of the ROI (its GridSpec says where).
    """
    return _chain()[:-1] + (
        Step("resize", {"size": EVAL_RESIZE, "method": "bicubic", "antialias": False, "shortest_side": True}),
        Step("center_crop", {"size": IMAGE_SIZE}),
    )


_INPUT = InputSpec("COPERNICUS/S2_SR_HARMONIZED", S2_RGB, 10.0, image_size=IMAGE_SIZE, frames=1, composite="median")
_POOLED = "mean of the patch tokens after the final LayerNorm (class token excluded)"
_GRID = "patch tokens after the final LayerNorm, row-major spatial order (1024 x 14 x 14)"

_COMMON_NOTES = """\
Input: Sentinel-2 L2A B4, B3, B2 at 10 m, one median composite. Chain = the authors' fMoW-RGB eval \
transform (SatelliteDataset.build_transform, input 224): 8-bit RGB / 255, Normalize with the fMoW-RGB \
mean/std, then resize (bicubic, on the normalised tensor, without antialiasing as torchvision 0.12 \
did). Deviations: (1) the authors resize the short side to 256 and center-crop 224, dropping the outer \
12.5% of the image; here the square input is resized straight to 224 so the embedding covers the \
requested ROI (rs_embed_satmae.authors_eval_chain() is their exact chain, for preprocessing=); (2) the \
8-bit image is a linear stretch of L2A reflectance 0..0.3 (fMoW's WorldView/QuickBird visual products \
had their own stretch); (3) the ground sampling distance is 10 m instead of fMoW's sub-metre to \
few-metre imagery.
Network: ViT-L/16 encoder only (patch embed + fixed sin-cos positions -> 24 blocks -> LayerNorm, eps \
1e-6 as trained: mae_vit_large_patch16_dec512d8b). The MAE masking step is not run, so the grid is in \
spatial order; wrappers that call forward_encoder(mask_ratio=0.0) (rshf, used by cybergis/rs-embed) \
still shuffle the tokens randomly and never restore their order, and build their LayerNorms with \
torch's default eps 1e-5 because their config cannot carry norm_layer. pooled = mean of the normed \
patch tokens (the class token of an MAE pre-training is not trained for anything)."""

SATMAE_NOTES = _COMMON_NOTES + f"""
Weights: the Hub copy {SATMAE_WEIGHTS.repo_id} (file {SATMAE_WEIGHTS.filename}, the community \
conversion of the authors' fmow_pretrain.pth on Zenodo, {SATMAE_ZENODO}), pinned to commit \
{SATMAE_WEIGHTS.revision}. No published sha256 of it could be read, so the digest is the file's Git LFS \
sha256 at that commit: read from the Hub's metadata on the first download, the bytes verified against it, \
and recorded in the rs-embed cache for later (offline) loads. Not verified here (no Hub access). The \
authors' Zenodo training checkpoint works as weights="<path>" too (its `model` entry is used; pinned by \
its own sha256). Licence of the SatMAE release: CC-BY-NC-4.0 (github.com/sustainlab-group/SatMAE LICENSE; \
the MVRL copy is tagged apache-2.0, which is not the authors' licence)."""

SATMAEPP_NOTES = _COMMON_NOTES + """
Weights: the authors' pre-training checkpoint on the Hub (mubashir04/checkpoint_ViT-L_pretrain_fmow_rgb, \
3.95 GB: model + optimizer state), pinned to its commit and the sha256 of its Git LFS pointer (not \
recomputed here). It is read with weights_only=True, allowing only argparse.Namespace (the run's \
arguments) besides tensors; the encoder is converted once to safetensors in the rs-embed cache. \
Images are RGB as in the authors' data loader (cv2 BGR -> RGB); cybergis/rs-embed feeds SatMAE++ BGR."""

_CITE_SATMAE = (
    "Cong, Y., Khanna, S., Meng, C., Liu, P., Rozi, E., He, Y., Burke, M., Lobell, D. B., Ermon, S. "
    "SatMAE: Pre-training Transformers for Temporal and Multi-Spectral Satellite Imagery. NeurIPS 2022. "
    "arXiv:2207.08051"
)
_CITE_SATMAEPP = (
    "Noman, M., Naseer, M., Cholakkal, H., Anwer, R. M., Khan, S., Khan, F. S. Rethinking Transformers "
    "Pre-training for Multi-Spectral Satellite Imagery. CVPR 2024. arXiv:2403.05419"
)


class _SatMAEBase(Embedder):
    """Shared load/forward; subclasses set the card and the checkpoint keys to drop."""

    uses_torch = True
    drop: ClassVar[tuple[str, ...]] = MAE_DECODER

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.net: TimmViT | None = None

    def load(self) -> None:
        if self.variant.weights is None:
            raise WeightsError(self._no_weights_message())
        from rs_embed_satmae_model import build

        self.net = build(self.variant, self.drop, self.device)

    def _no_weights_message(self) -> str:
        return f"{self.card.id} variant {self.variant.name!r} has no weights; pass weights=<path to a checkpoint>"

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        if x.ndim != 5 or x.shape[1] != 1 or x.shape[2] != 3:
            raise SpecError(f"{self.card.id} takes one RGB frame per item, (B, 1, 3, H, W); got {tuple(x.shape)}. "
                            "Use a compositing sensor (composite='median' or 'mosaic', frames=1) with 3 bands.")
        if self.net is None:
            self.load()
        from rs_embed_satmae_model import embed

        pooled, grid = embed(self.net, x[:, 0].float())  # type: ignore[arg-type]
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None)


class SatMAE(_SatMAEBase):
    card = ModelCard(
        id="satmae",
        aliases=("satmae_rgb",),
        description=(
            "SatMAE (Cong et al., NeurIPS 2022): MAE-pre-trained ViT-L/16 on fMoW-RGB (800 epochs); "
            "Sentinel-2 RGB in, patch-token embeddings out."
        ),
        input=_INPUT,
        variants=(Variant("vit_large", pooled_dim=1024, grid_dim=1024, weights=SATMAE_WEIGHTS, params=VIT_LARGE),),
        default_variant="vit_large",
        preprocessing=_chain(),
        pooled=_POOLED,
        grid=_GRID,
        license="code: Apache-2.0 (rs-embed); weights: CC-BY-NC-4.0 (SatMAE release)",
        citation=_CITE_SATMAE,
        homepage="https://github.com/sustainlab-group/SatMAE",
        notes=SATMAE_NOTES,
    )


class SatMAEPP(_SatMAEBase):
    drop = MAE_DECODER + SATMAEPP_HEAD
    card = ModelCard(
        id="satmaepp",
        aliases=("satmaepp_rgb",),
        description=(
            "SatMAE++ (Noman et al., CVPR 2024): multi-scale MAE-pre-trained ViT-L/16 on fMoW-RGB; "
            "Sentinel-2 RGB in, patch-token embeddings out."
        ),
        input=_INPUT,
        variants=(Variant("vit_large", pooled_dim=1024, grid_dim=1024, weights=SATMAEPP_WEIGHTS, params=VIT_LARGE),),
        default_variant="vit_large",
        preprocessing=_chain(),
        pooled=_POOLED,
        grid=_GRID,
        license="code: Apache-2.0 (rs-embed); weights: apache-2.0",
        citation=_CITE_SATMAEPP,
        homepage="https://github.com/techmn/satmae_pp",
        notes=SATMAEPP_NOTES,
    )


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(SatMAE)
    register(SatMAEPP)

