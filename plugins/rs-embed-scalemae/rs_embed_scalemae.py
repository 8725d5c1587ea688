"""Scale-MAE (Reed et al., ICCV 2023) for rs-embed: a ViT-L/16 whose position encoding follows the GSD.

Scale-MAE scales the sin-cos position of every token by the image's ground sampling distance, so the
same scene at two resolutions gets consistent positional codes. The GSD is a side input: the real GSD
of each preprocessed input (`ctx.grids[b].res`, metres per pixel after resizing) divided by
`GSD_REFERENCE_M`. The network (rs_embed_scalemae_model) is written here in torch with the timm
parameter names of torchgeo's released file, which loads strictly; torchgeo 0.8.1
`scalemae_large_patch16` is the test-time reference.

- `ScaleMAE` (model id "scalemae"), variant "vit_large": pooled = the class token after the final
  LayerNorm (the authors' kNN feature); grid = the patch tokens after it (1024 x 14 x 14).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput
from rs_embed_core.errors import SpecError
from rs_embed_core.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch

    from rs_embed_core.nn.vit import TimmViT

__all__ = ["ScaleMAE", "gsd_ratios", "register_embedders"]

# torchgeo 0.8.1 ScaleMAELarge16_Weights.FMOW_RGB:
# https://hf.co/isaaccorley/vit_large_patch16_224_fmow_rgb_scalemae/resolve/9dc7f569424baeb780698352cf6e87638c882123/
#   vit_large_patch16_224_fmow_rgb_scalemae-98ed9821.pth
# The repository now lives at torchgeo/vit_large_patch16_224_fmow_rgb_scalemae (same commits). The Git LFS
# pointer of that commit ("Upload vit_large_patch16_224_fmow_rgb_scalemae-98ed9821.pth",
# huggingface.co/torchgeo/vit_large_patch16_224_fmow_rgb_scalemae/commit/9dc7f56...) gives sha256
# 386989c9...9ed9 and size 1,213,304,038 bytes: that digest is what the Hub serves at the pinned commit
# and is pinned here. It does NOT start with the 98ed9821 of the file name (torchgeo does not check
# hashes when downloading, so its name suffix was never enforced); neither value was recomputed here
# (no Hub access): a mismatch fails on load. Licence cc-by-nc-4.0 (that repository's, and the Scale-MAE
# code's, github.com/bair-climate-initiative/scale-mae LICENSE: Attribution-NonCommercial 4.0).
REPO_ID = "torchgeo/vit_large_patch16_224_fmow_rgb_scalemae"
REVISION = "9dc7f569424baeb780698352cf6e87638c882123"
WEIGHTS_LICENSE = "cc-by-nc-4.0"
WEIGHTS = WeightsSpec(REPO_ID, REVISION, "vit_large_patch16_224_fmow_rgb_scalemae-98ed9821.pth",
                      "386989c9cf349a5045c2ac76f7d0225ae3a54b2a2c158fa87e5df5103e5d9ed9", WEIGHTS_LICENSE)

# torchgeo's `res` is "the spatial resolution of the image in meters" and multiplies the integer token
# positions as is, i.e. a reference GSD of 1 m; rs-embed divides the real GSD by this one constant.
GSD_REFERENCE_M = 1.0

# Scale-MAE's fMoW config (mae/config/fmow.yaml) and torchgeo's transforms: x / 255, ImageNet mean/std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
S2_RGB = ("B4", "B3", "B2")
RGB_LOW_DN, RGB_HIGH_DN = 0.0, 3000.0  # S2 L2A reflectance 0..0.3 -> 0..255, the stretch the RGB models here share
IMAGE_SIZE = 224

# torchgeo scalemae_large_patch16: ViT-L/16, mlp_ratio 4, qkv_bias, LayerNorm eps 1e-6, image 224.
VIT_LARGE = {"embed_dim": 1024, "depth": 24, "heads": 16, "patch_size": 16, "image_size": IMAGE_SIZE,
             "mlp_ratio": 4.0, "norm_eps": 1e-6}

NOTES = f"""\
Input: Sentinel-2 L2A B4, B3, B2 at 10 m, one median composite; chain: linear 8-bit stretch of \
reflectance 0..0.3 (rounded, like the 8-bit fMoW images), / 255, resize to 224 (bilinear, antialiased, \
like the PIL Resize of the authors' evaluation), ImageNet mean/std (Scale-MAE's fMoW config and \
torchgeo's transforms). Deviations: the resize runs on floats, not on uint8 as PIL did (at most half a \
grey level); the 8-bit stretch stands in for fMoW's visual products.
GSD side input: each item's position table is computed from res = (real GSD of the preprocessed input, \
metres per pixel after the resize; the geometric mean of the two sides when a non-square footprint \
left rectangular pixels) / {GSD_REFERENCE_M} m, torchgeo's convention (its `res` is the \
resolution in metres, multiplying the integer token positions). Sentinel-2 at 10 m gives res = 10: \
positions far larger than in pre-training, where the authors' code passed a relative scale (crop ratio \
x base_resolution 2.5 on fMoW) and 1.0 at evaluation; embeddings of 10 m imagery are therefore \
outside the pre-training range of scales. Two inputs of the same place at different GSDs get \
different, scale-consistent tables: that is the model's design, not noise.
Network: ViT-L/16 (timm names), class token, blocks, LayerNorm eps 1e-6, position table computed in \
float32 as torchgeo and the authors do; the file's fixed `pos_embed` is dropped by name (unused by \
Scale-MAE). pooled = class token after the final LayerNorm (the authors' kNN feature); grid = the \
patch tokens after it, row-major.
Weights: torchgeo's Hub file at the commit torchgeo 0.8.1 pins, full sha256 from that commit's Git LFS \
pointer (its file-name suffix 98ed9821 is not a prefix of it; the pointer is what the Hub serves). \
Licence CC-BY-NC-4.0: non-commercial use only."""


def gsd_ratios(ctx: BatchContext) -> tuple[float, ...]:
    """Per item: real GSD of the preprocessed input (metres/pixel) / GSD_REFERENCE_M.

    A resize of a non-square footprint to the square input leaves rectangular pixels; Scale-MAE
    takes one GSD per image, so that is the geometric mean of the two pixel sides.
    """
    out = []
    for grid in ctx.grids:
        res = math.sqrt(float(grid.res) * float(grid.yres))
        if not res > 0:
            raise SpecError(f"Scale-MAE needs a positive ground sampling distance, the input grid has {res!r}")
        out.append(res / GSD_REFERENCE_M)
    return tuple(out)


class ScaleMAE(Embedder):
    card = ModelCard(
        id="scalemae",
        aliases=("scalemae_rgb",),
        description=(
            "Scale-MAE (Reed et al., ICCV 2023): scale-aware MAE ViT-L/16 pre-trained on fMoW-RGB, with "
            "position encodings scaled by the input's ground sampling distance; Sentinel-2 RGB in. "
            "Weights CC-BY-NC-4.0 (non-commercial)."
        ),
        input=InputSpec("COPERNICUS/S2_SR_HARMONIZED", S2_RGB, 10.0, image_size=IMAGE_SIZE, frames=1,
                        composite="median"),
        variants=(Variant("vit_large", pooled_dim=1024, grid_dim=1024, weights=WEIGHTS, params=VIT_LARGE),),
        default_variant="vit_large",
        preprocessing=(
            Step("select_bands", {"bands": list(S2_RGB)}),
            Step("to_8bit", {"low": RGB_LOW_DN, "high": RGB_HIGH_DN, "round": True}),
            Step("scale", {"factor": 1.0 / 255.0}),
            Step("resize", {"size": IMAGE_SIZE, "method": "bilinear", "antialias": True}),
            Step("normalize", {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}),
        ),
        pooled="class token after the final LayerNorm (the authors' kNN feature)",
        grid="patch tokens after the final LayerNorm, row-major spatial order (1024 x 14 x 14)",
        side_inputs=(f"ground sampling distance (per item, from the preprocessed grid; res = GSD / {GSD_REFERENCE_M} m)",),
        license="code: Apache-2.0 (rs-embed); weights: CC-BY-NC-4.0 (non-commercial use only)",
        citation=(
            "Reed, C. J., Gupta, R., Li, S., Brockman, S., Funk, C., Clipp, B., Keutzer, K., Candido, S., "
            "Uyttendaele, M., Darrell, T. Scale-MAE: A Scale-Aware Masked Autoencoder for Multiscale Geospatial "
            "Representation Learning. ICCV 2023. arXiv:2212.14532"
        ),
        homepage="https://github.com/bair-climate-initiative/scale-mae",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.net: TimmViT | None = None

    def load(self) -> None:
        from rs_embed_scalemae_model import build

        self.net = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        import torch

        if x.ndim != 5 or x.shape[1] != 1 or x.shape[2] != 3:
            raise SpecError(f"Scale-MAE takes one RGB frame per item, (B, 1, 3, H, W); got {tuple(x.shape)}. "
                            "Use a compositing sensor (composite='median' or 'mosaic', frames=1) with 3 bands.")
        if len(ctx.grids) != x.shape[0]:
            raise SpecError(f"Scale-MAE needs one grid per item for the GSD: {x.shape[0]} items, {len(ctx.grids)} grids")
        res = torch.tensor(gsd_ratios(ctx), dtype=torch.float32)  # before any network work
        if self.net is None:
            self.load()
        from rs_embed_scalemae_model import embed

        pooled, grid = embed(self.net, x[:, 0].float(), res)  # type: ignore[arg-type]
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None,
                           extra={"gsd_ratio": list(res.tolist())})


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(ScaleMAE)
