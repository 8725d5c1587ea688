"""AnySat (Astruc et al., CVPR 2025) for rs-embed: Sentinel-2 time series, patches sized in metres.

AnySat is one JEPA-trained model for many sensors, resolutions and tile sizes. Each sensor has its
own projector to sub-patch tokens (time series: a per-pixel L-TAE over the dates, each date coded by
its day of year; single images: a strided convolution and an MLP). Sub-patches are grouped into
patches whose side is given *in metres* (a multiple of 10 m; 10 m = one Sentinel-2 pixel); a shared
spatial transformer with relative position encodings (iRPE) summarises each patch into one token,
a ViT runs over the patch tokens of all sensors, and a last cross-attention block with learned,
position-coded queries pools them back to one token per patch plus a tile token.

This module is the model card and everything torch-free (modality tables, statistics, request
checks); the network is rs_embed_anysat_model, written here in torch with the parameter names of the
authors' release checkpoint (`AnyModule`). No reference implementation installs here (see NOTES).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput, requested_bands
from rs_embed_core.errors import SpecError, UnknownBandError, WeightsError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.specs import SensorSpec

if TYPE_CHECKING:
    import torch

    from rs_embed_anysat_model import AnySatEncoder

__all__ = ["AnySat", "check_geometry", "register_embedders"]

# ----------------------------------------------------------------------------- the authors' modality tables
# hubconf.py `get_default_config` (the release model): every projector is in the checkpoint.
# Time series: (input channels, in_norm, date-code period, reduce_scale); L-TAE with 16 heads, d_k 8,
# input MLP [D/8, D/2, D, 2D, D], output MLP [D].
TIME_SERIES: dict[str, tuple[int, bool, int, int]] = {
    "s2": (10, True, 367, 1), "s1-asc": (2, False, 367, 1), "s1": (3, False, 367, 1), "alos": (3, False, 367, 1),
    "l7": (6, False, 367, 1), "l8": (11, False, 366, 1), "modis": (7, False, 367, 12),
}
# Single-date images: (input channels, conv kernel = stride in px, pixel size in m); MLP [D, 2D, D].
IMAGES: dict[str, tuple[int, int, float]] = {
    "aerial": (4, 10, 0.2), "aerial-flair": (5, 10, 0.2), "spot": (3, 10, 1.0), "naip": (4, 8, 1.25),
}
MODALITIES = tuple(sorted((*TIME_SERIES, *IMAGES)))  # the authors register projectors in sorted order
LTAE_HEADS, LTAE_DK = 16, 8
# spatial_encoder input_res: the ground spacing (m) of a modality's sub-patches in the spatial encoder's
# position code (sub-patch index x this).
SUBPATCH_M: dict[str, float] = {"aerial": 2, "aerial-flair": 2, "spot": 10, "naip": 10, "s2": 10, "s1-asc": 10,
                                "s1": 10, "l8": 10, "l7": 30, "alos": 30, "modis": 250}
PATCH_UNIT_M = 10  # the model's patch size argument is metres // 10 (hubconf: patch_size // 10)
IRPE_RATIO = 1.9  # get_rpe_config(ratio=1.9, method="euc", mode="ctx", shared_head=True, skip=1, rpe_on="k")

# ----------------------------------------------------------------------------- the request side
S2_L2A = "COPERNICUS/S2_SR_HARMONIZED"
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")  # the README's s2 channel order
# The authors' demo notebook (demo.ipynb, "AnySat requires data to be normalized"): Sentinel-2 DN statistics.
S2_MEAN = (4304.32958984375, 4159.2666015625, 4057.776611328125, 4328.951171875, 4571.22119140625,
           4644.87109375, 4837.2470703125, 4700.2578125, 2823.264404296875, 2319.97021484375)
S2_STD = (3537.99755859375, 3324.23486328125, 3270.070068359375, 3250.530029296875, 2897.391357421875,
          2754.4970703125, 2821.521484375, 2625.952392578125, 1731.56298828125, 1549.3028564453125)

# The user documentation's default: 8 frames, 24 px at 10 m, patches of 10 m.
GSD_M = 10.0
IMAGE_SIZE = 24
FRAMES = 8
DEFAULT_PATCH_M = 10

# ----------------------------------------------------------------------------- variants and weights
SIZES: dict[str, tuple[int, int, int]] = {"base": (768, 6, 12)}  # width, depth (both encoders), heads
HUB_REPO = "g-astruc/AnySat"
HUB_FILE = "models/AnySat.pth"
PUBLISHED_PARAMS_M = 125.9  # base, as a third-party port of the release checkpoint reports it
SHA256_PREFIX_SEEN, SHA256_SUFFIX_SEEN = "ce124652", "3d4f"  # a public record abbreviates the digest so


def _params(patch_m: int, grid: str) -> dict[str, Any]:
    dim, depth, heads = SIZES["base"]
    return {"embed_dim": dim, "depth": depth, "heads": heads, "mlp_ratio": 4.0, "patch_size_m": patch_m,
            "grid": grid}


VARIANTS = (
    Variant("base", pooled_dim=768, grid_dim=768, weights=None, params=_params(DEFAULT_PATCH_M, "patch")),
    Variant("base-p20", pooled_dim=768, grid_dim=768, weights=None, params=_params(20, "patch")),
    Variant("base-p40", pooled_dim=768, grid_dim=768, weights=None, params=_params(40, "patch")),
    Variant("base-dense", pooled_dim=768, grid_dim=1536, weights=None, params=_params(20, "dense")),
)


def check_geometry(height: int, width: int, patch_m: int, gsd_m: float = GSD_M) -> int:
    """Sentinel-2 pixels per patch side for a `patch_m` patch; refuses what AnySat cannot tile.

    The model takes square tiles (its token grids are square) cut into whole patches; the patch side
    must be a positive multiple of 10 m.
    """
    if patch_m <= 0 or patch_m % PATCH_UNIT_M:
        raise SpecError(f"AnySat patch size must be a positive multiple of {PATCH_UNIT_M} m, got {patch_m}")
    if height != width:
        raise SpecError(f"AnySat takes square tiles; got {height}x{width} px (resize to a square, e.g. {IMAGE_SIZE})")
    px = int(patch_m // gsd_m)
    if height % px:
        raise SpecError(f"AnySat with {patch_m} m patches cuts a tile into {px}-px patches at {gsd_m:g} m; "
                        f"{height} px is not a multiple of {px} (e.g. {IMAGE_SIZE})")
    return px


CHAIN = (
    Step("normalize", {"mean": list(S2_MEAN), "std": list(S2_STD)}),
    Step("fill_invalid", {"value": 0.0}),
    Step("resize", {"size": IMAGE_SIZE, "method": "bilinear", "antialias": True}),
)

NOTES = f"""\
Default input: Sentinel-2 level-2A ({S2_L2A}), the ten bands {' '.join(S2_BANDS)} in the README's s2 order, \
{FRAMES} frames (the window split into {FRAMES} equal bins, each a median composite stamped at its bin centre), \
{IMAGE_SIZE} x {IMAGE_SIZE} px at {GSD_M:g} m (a 240 m tile), patches of {DEFAULT_PATCH_M} m: the user \
documentation's defaults. Frames: any count a SensorSpec allows (1..366; the L-TAE takes any number of dates); \
composite='none' (every scene) also runs, each scene with its own date. Only Sentinel-2 is accepted: AnySat's \
other projectors (Sentinel-1, Landsat 7/8, ALOS-2, MODIS, aerial, \
SPOT, NAIP) load with the checkpoint, but no normalisation statistics are published for them (the authors \
normalise each dataset with statistics files that are not in the repository) and several need inputs a request \
cannot give (the S1 VV/VH ratio band, ascending-only orbits, 0.2 m imagery); another collection, another band set or \
band order is a SpecError before any fetch.
Chain: (x - mean) / std per band with the only statistics the authors publish, their demo notebook's Sentinel-2 \
values (DN; mean {S2_MEAN[0]:.1f}..., std {S2_STD[0]:.1f}...); invalid pixels 0 (the band mean); resize to \
{IMAGE_SIZE} (bilinear, antialiased, after the affine normalisation, equivalent to before). The network takes the \
pixels to be {GSD_M:g} m (Sentinel-2's native spacing; nothing tells it another): an ROI of {IMAGE_SIZE * 10} m \
(PointBuffer buffer {IMAGE_SIZE * 5} m) is exact, a larger one is resized (coarser pixels than the model assumes) \
unless input_prep="tile".
Side inputs: s2_dates = each frame's day of year from its timestamp, 1 January = 0, 31 December = 364 (the \
README's contract for the released model; the pre-training loaders differ: TreeSatAI-TS and S2NAIP count \
from 1, as the demo notebook does, a one-day shift of a 367-day code; PASTIS counts days since 1 September \
2018). A frame without a date is a SpecError. Patch size in metres: a variant parameter ({DEFAULT_PATCH_M} m \
default, 20 m 'base-p20' and 'base-dense', 40 m 'base-p40'), a positive multiple of 10 m dividing the tile.
Outputs: pooled = the tile token (output='tile': the class token after the final cross-attention block). \
grid = one token per patch (output='patch'), D x 24/p x 24/p for p-px patches, row 0 north. 'base-dense' \
(output='dense') gives per Sentinel-2 pixel [its patch's token | its sub-patch token from the spatial encoder], \
1536 x 24 x 24. No final LayerNorm (the release model has none after the cross block).
Network: written here with the parameter names of the release checkpoint (hubconf AnySat(model_size='base') \
-> AnyModule, loaded strictly by the authors with model.model.load_state_dict). Per-pixel L-TAE (16 heads, \
GroupNorm over channels and dates) -> sub-patch tokens; spatial encoder (6 blocks, iRPE on keys, Euclidean, \
ratio {IRPE_RATIO}, class-token summary, LayerNorm eps 1e-5) with sin-cos positions of sub-patches x 10 m; ViT \
(6 pre-norm blocks, eps 1e-6) over patch tokens + sin-cos positions of patches x (patch m / 10); a cross-attention \
block whose queries are a learned vector + those positions, iRPE on keys, no residual around the attention (as \
the authors'). Kept as the authors' code computes it: iRPE's term comes from head 0's query and is added to every \
head (their pure-PyTorch path, the one their hub entry point runs: it does not reach their optional compiled \
rpe_ops); the spatial encoder's RPE sees the scaled queries, the cross block's the unscaled ones. The sin-cos \
position tables are computed in float64 and rounded to float32 (the authors': float32 throughout; about 1e-7 \
apart); the iRPE buckets and the L-TAE date code in float32, as theirs. flash-attn (the authors' optional \
kernel) is the same arithmetic as the plain attention used here.
Weights: {HUB_REPO} {HUB_FILE} (MIT; the hub entry point's only published size is base; small and tiny are \
'coming soon'). No full sha256 or commit of the file could be found (one public record gives 504 MB and \
SHA-256 {SHA256_PREFIX_SEEN}...{SHA256_SUFFIX_SEEN}, abbreviated), so no default weights are pinned: download it \
and pass weights='<path>' (pinned by its own sha256, opened with weights_only=True, unwrapped from its \
'state_dict' entry, loaded strictly with no ignore list: the release file holds the encoder alone). The \
repository's other file, models/AnySat_full.pth (1.1 GB), is not what the hub entry point loads and is not \
supported.
Reference: none installs here (the authors' code is torch.hub-only, not on PyPI; no rshf/torchgeo/terratorch \
class). tests/test_anysat_reference.py compares with the authors' hubconf model on shared random weights \
wherever a checkout of their code is given (ANYSAT_REFERENCE_DIR; skipped here); run by hand against their code \
at commit e03e72e it passes, max |d| 3.3e-6 (tiny) and 1.3e-5 (base, outputs of magnitude ~15: 9e-7 relative) \
for tile, patch and dense at 10..120 m patches. Always run: the release layout and parameter count (125.9 M), a \
full-size strict load through weights=, the iRPE buckets, the L-TAE date code, the locality and \
position-independence of the patch stage, frame-order invariance of the L-TAE, grid and dense order, batch = \
single."""


class AnySat(Embedder):
    card = ModelCard(
        id="anysat",
        description=(
            "AnySat (Astruc et al., CVPR 2025): one JEPA-trained model for many sensors, resolutions and scales; "
            "here Sentinel-2 L2A time series (per-pixel L-TAE with day-of-year codes), patches sized in metres. "
            "Default 8 frames, 24 px at 10 m, 10 m patches. Weights: yours (see notes)."
        ),
        input=InputSpec(S2_L2A, S2_BANDS, GSD_M, image_size=IMAGE_SIZE, frames=FRAMES, composite="median"),
        variants=VARIANTS,
        default_variant="base",
        preprocessing=CHAIN,
        pooled="the tile token (class token after the final cross-attention block, output='tile')",
        grid="one token per patch (output='patch'); 'base-dense': [patch | sub-patch] token per pixel",
        side_inputs=("frame days of year (1 January = 0) from the frame timestamps",
                     "patch size in metres (variant)"),
        license="code: Apache-2.0 (rs-embed); weights: MIT (g-astruc/AnySat), supplied by you",
        citation=(
            "Astruc, G., Gonthier, N., Mallet, C., Landrieu, L. AnySat: One Earth Observation Model for Many "
            "Resolutions, Scales, and Modalities. CVPR 2025, arXiv:2412.14123"
        ),
        homepage="https://github.com/gastruc/AnySat",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.model: AnySatEncoder | None = None

    @classmethod
    def check_request(cls, variant: Variant, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        """Sentinel-2 L2A with the ten bands in order, a resize that tiles into patches; weights given."""
        if len(sensors) != 1 or sensors[0].collection != S2_L2A:
            got = [s.collection for s in sensors]
            raise SpecError(f"AnySat here takes one Sentinel-2 time series ({S2_L2A}); the request gives {got}. "
                            "Its other sensors have no published normalisation (see the card's notes).")
        s = sensors[0]
        unknown = [b for b in s.bands if b not in S2_BANDS]
        if unknown:
            raise UnknownBandError(f"AnySat's s2 projector has no channel for band(s) {unknown}; it takes "
                                   f"{list(S2_BANDS)}")
        bands = requested_bands(sensors, steps)
        if tuple(bands) != S2_BANDS:
            raise SpecError(f"AnySat's s2 projector takes exactly the ten bands {list(S2_BANDS)} in that order; "
                            f"the request gives {list(bands)}")
        parsed = [Step.of(x) for x in steps]
        size = next((x.params.get("size") for x in reversed(parsed) if x.name == "resize"), None)
        if size is not None:
            h, w = (size, size) if isinstance(size, int) else tuple(size)
            check_geometry(int(h), int(w), int(variant.params["patch_size_m"]))
        if variant.weights is None:
            raise WeightsError(_no_weights_message())

    def load(self) -> None:
        if self.variant.weights is None:
            raise WeightsError(_no_weights_message())
        from rs_embed_anysat_model import build

        self.model = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        import torch

        from rs_embed_core.nn.geo_time import days_of_year

        if x.ndim != 5 or x.shape[2] != len(S2_BANDS) or tuple(ctx.band_names) != S2_BANDS:
            raise SpecError(f"AnySat takes (B, T, 10, H, W) with the bands {list(S2_BANDS)}; got "
                            f"{tuple(x.shape)} and {list(ctx.band_names)}")
        patch_m = int(self.variant.params["patch_size_m"])
        px = check_geometry(x.shape[-2], x.shape[-1], patch_m)
        days = torch.tensor(days_of_year(ctx.times, "AnySat"), dtype=torch.float32, device=x.device)
        if days.shape != x.shape[:2]:
            raise SpecError(f"AnySat needs one date per frame: {tuple(days.shape)} dates for {tuple(x.shape[:2])}")
        if self.model is None:
            self.load()
        dense = self.variant.params["grid"] == "dense"
        net = self.model
        assert net is not None
        tile, patches, subs = net.embed_series(x.float(), days, "s2", px, dense=dense)
        grid = subs if dense else patches
        b = x.shape[0]
        extra = {"patch_size_m": [patch_m] * b, "days_of_year": days.long().tolist()}
        return EmbedOutput(pooled=tile, grid=grid if ctx.want == "grid" else None, extra=extra)


def _no_weights_message() -> str:
    return (f"AnySat has no pinned default weights: no verified sha256 or commit of {HUB_REPO}/{HUB_FILE} is known. "
            f"Download it (hf download {HUB_REPO} {HUB_FILE}) and pass weights='<path to AnySat.pth>' (pinned by "
            "its own sha256, loaded strictly).")


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(AnySat)
