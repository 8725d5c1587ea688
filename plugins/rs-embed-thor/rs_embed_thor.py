"""THOR (Forgaard et al., 2026) for rs-embed: a FlexiViT over per-GSD channel groups of Sentinel-1/2.

THOR embeds every band with its own single-band patch kernel (trained at 16 px, PI-resized to the
patch size asked for, FlexiViT-style), averages the tokens of the bands of one channel group (bands
sharing a native ground sampling distance: S2 10 m, S2 20 m, S2 60 m, S1 co-pol, S1 cross-pol...),
and runs one ViT over the concatenated groups with 2D ALiBi attention biases computed from each
token's ground position, so groups of different resolutions share one geometry. Each group's tokens
also carry a sin-cos code of their patch footprint and a fixed code of their group.

This module is the model card and everything torch-free (channel table, band mapping, statistics,
request checks); the network is rs_embed_thor_model, written here in torch with the parameter names
of the authors' checkpoints (FM4CS/THOR `ThorViTEncoder`). No reference implementation installs
here (see NOTES); the tests check the published invariants and a full-size strict load instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.collections import delivering_sensor
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput, check_single_frame
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.specs import SensorSpec

if TYPE_CHECKING:
    import torch

    from rs_embed_thor_model import ThorEncoder

__all__ = ["THOR", "channels_for", "check_geometry", "register_embedders"]

# ----------------------------------------------------------------------------- the authors' channel table
# FM4CS/thor_terratorch_ext thor_vit.py `_default_input_params` (== THOR's pre-training config
# thor/config/pretrain/final/thor-*.yaml): the ten channel groups in order (the order fixes the group
# codes `band_embed.group<i>` and the token order), each channel's native GSD in metres, and the kernel
# each channel uses (IW and EW Sentinel-1 share one kernel per polarisation). Every kernel is 16 x 16.
_S3_OLCI = tuple(f"S3:Oa{i:02d}_reflectance" for i in range(1, 22))
GROUPS: tuple[tuple[str, ...], ...] = (
    ("S2:Red", "S2:Green", "S2:Blue", "S2:NIR"),
    ("S2:RE1", "S2:RE2", "S2:RE3", "S2:RE4", "S2:SWIR1", "S2:SWIR2"),
    ("S2:CoastAerosal", "S2:WaterVapor"),
    ("S1:IW-VH", "S1:IW-VV", "S1:EW-VH", "S1:EW-VV"),
    ("S1:IW-HV", "S1:IW-HH", "S1:EW-HV", "S1:EW-HH"),
    _S3_OLCI[:7],
    _S3_OLCI[7:14],
    _S3_OLCI[14:],
    tuple(f"S3:S{i}_reflectance_an" for i in range(1, 7)),
    tuple(f"S3:S{i}_BT_in" for i in range(7, 10)),
)
_GROUP_GSD = (10, 20, 60, 10, 10, 240, 240, 240, 480, 960)
GSD_M: dict[str, int] = {c: gsd for group, gsd in zip(GROUPS, _GROUP_GSD) for c in group}
GROUP_OF: dict[str, int] = {c: i for i, group in enumerate(GROUPS) for c in group}
KERNEL: dict[str, str] = {c: (f"S1:{c.split('-')[1]}" if c.startswith("S1:") else c) for c in GSD_M}
KERNEL_NAMES: tuple[str, ...] = tuple(dict.fromkeys(KERNEL[c] for group in GROUPS for c in group))
KERNEL_PATCH = 16  # px: every kernel's trained size
REF_PATCH, MIN_GSD = 4, 10  # patch-footprint code = patch x GSD / (REF_PATCH x MIN_GSD) (flexivit_ref_patch_size 4)
PRETRAIN_PATCHES = (4, 5, 6, 7, 8, 9, 10, 12, 15, 16, 18, 20, 24, 30, 32)  # flexivit_patch_size_seqs

# ----------------------------------------------------------------------------- the request side
S2_L2A = "COPERNICUS/S2_SR_HARMONIZED"
S2_L1C = "COPERNICUS/S2_HARMONIZED"
S1_GRD = "COPERNICUS/S1_GRD"
_S2_TO_THOR = {"B1": "S2:CoastAerosal", "B2": "S2:Blue", "B3": "S2:Green", "B4": "S2:Red", "B5": "S2:RE1",
               "B6": "S2:RE2", "B7": "S2:RE3", "B8": "S2:NIR", "B8A": "S2:RE4", "B9": "S2:WaterVapor",
               "B11": "S2:SWIR1", "B12": "S2:SWIR2"}  # thor_terratorch_ext lookup_band (HLS names -> THOR)
_S1_TO_THOR = {"VV": "S1:IW-VV", "VH": "S1:IW-VH", "HH": "S1:IW-HH", "HV": "S1:IW-HV"}  # IW GRD
BAND_TO_THOR: dict[str, dict[str, str]] = {S2_L2A: _S2_TO_THOR, S2_L1C: _S2_TO_THOR, S1_GRD: _S1_TO_THOR}

# The pre-training statistics (thor_terratorch_ext THOR_NORMALIZATION_PARAMS): Sentinel-2 as reflectance
# (DN / 10000), Sentinel-1 IW at 10 m as backscatter in dB.
STATS: dict[str, tuple[float, float]] = {
    "S2:Blue": (0.176620, 0.264520), "S2:Green": (0.195923, 0.252949), "S2:Red": (0.213948, 0.259180),
    "S2:NIR": (0.308133, 0.226434), "S2:RE1": (0.263378, 0.272771), "S2:RE2": (0.300818, 0.248175),
    "S2:RE3": (0.313144, 0.235432), "S2:RE4": (0.320993, 0.223274), "S2:SWIR1": (0.221550, 0.171606),
    "S2:SWIR2": (0.175772, 0.156223), "S2:CoastAerosal": (0.182569, 0.282463),
    "S2:WaterVapor": (0.322589, 0.235857),
    "S1:IW-VV": (-12.9850, 5.0062), "S1:IW-VH": (-20.6958, 5.8688), "S1:IW-HH": (-13.9485, 6.8015),
    "S1:IW-HV": (-22.4575, 6.9106),
}
S2_DN_SCALE = 1e-4

# The user documentation's default: Sentinel-2 L2A, the ten 10 m + 20 m bands, 288 px at 10 m
# (ground cover 2880 m, the extension's default), FlexiViT patch 8.
DEFAULT_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
INPUT_GSD_M = 10.0
IMAGE_SIZE = 288
DEFAULT_PATCH = 8

# ----------------------------------------------------------------------------- variants and weights
# thor_vit.py `thor_vit_<size>_encoder_alibi_patch_size_embed_v1`: width, depth, heads, group-code width.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (192, 12, 3, 32), "small": (384, 12, 6, 64), "base": (768, 12, 12, 128), "large": (1024, 24, 16, 256),
}
HUB_REPO = "FM4CS/THOR-1.0-{size}"
HUB_FILE = "thor_v1_vit_{size}.pt"
# The commit of FM4CS/THOR-1.0-base another project pins (with the file's size, 376,628,228 bytes). A Hub
# commit pins each file's Git LFS sha256, so base's default weights are this commit; the digest is read
# from the Hub at first download, checked against the bytes and recorded (WeightsSpec.from_revision). No
# commit of the tiny, small and large repositories is known: they ship no default weights.
BASE_COMMIT = "823c265cbb941a3e1b9054910a65dbe190c11f11"
WEIGHTS_LICENSE = "apache-2.0"


def _params(size: str, patch: int) -> dict[str, Any]:
    dim, depth, heads, group_dim = SIZES[size]
    return {"embed_dim": dim, "depth": depth, "heads": heads, "group_embed_dim": group_dim, "mlp_ratio": 4.0,
            "norm_eps": 1e-6, "patch_size": patch, "size": size}


def _variants() -> tuple[Variant, ...]:
    out = []
    for size, (dim, *_rest) in SIZES.items():
        weights = WeightsSpec.from_revision(HUB_REPO.format(size=size), BASE_COMMIT, HUB_FILE.format(size=size),
                                            WEIGHTS_LICENSE) if size == "base" else None
        out.append(Variant(size, pooled_dim=dim, grid_dim=dim, weights=weights, params=_params(size, DEFAULT_PATCH)))
        out.append(Variant(f"{size}-p16", pooled_dim=dim, grid_dim=dim, weights=weights, params=_params(size, 16)))
    return tuple(out)


def channels_for(sensor: SensorSpec | Sequence[SensorSpec], bands: Sequence[str]) -> tuple[str, ...]:
    """THOR channel of each band, from the collection of the sensor that delivered it.

    Raises SpecError naming the band (and what THOR takes) before any fetch: a collection THOR has
    no channels for, a band it has no kernel for (B10, SCL, QA60, angle), a channel asked twice.
    """
    if not bands:
        raise SpecError("THOR needs at least one band")
    out = []
    for name in bands:
        collection = delivering_sensor(sensor, name, "THOR").collection
        table = BAND_TO_THOR.get(collection)
        if table is None:
            raise SpecError(f"THOR has no channels for collection {collection!r}; it takes {S2_L2A} / {S2_L1C} "
                            f"bands {sorted(_S2_TO_THOR)} and {S1_GRD} polarisations {sorted(_S1_TO_THOR)}")
        if name not in table:
            raise SpecError(f"THOR cannot embed band {name!r} of {collection}: it has kernels for {sorted(table)}")
        out.append(table[name])
    doubled = sorted({c for c in out if out.count(c) > 1})
    if doubled:
        raise SpecError(f"THOR takes each channel once; the request gives {doubled} more than once")
    return tuple(out)


def check_geometry(channels: Sequence[str], height: int, width: int, patch: int) -> None:
    """The input (on the 10 m grid) must resample to whole pixels at every group's GSD and tile by `patch`."""
    if patch < 1:
        raise SpecError(f"THOR patch size must be positive, got {patch}")
    for gsd in sorted({GSD_M[c] for c in channels}):
        ratio = gsd / INPUT_GSD_M
        if height % ratio or width % ratio or (height // ratio) % patch or (width // ratio) % patch:
            raise SpecError(
                f"THOR at patch {patch}: a {height}x{width} px input at {INPUT_GSD_M:g} m gives "
                f"{height / ratio:g}x{width / ratio:g} px for the {gsd} m bands, not a multiple of {patch}; "
                f"use a size that is a multiple of {int(ratio * patch)} (e.g. {IMAGE_SIZE})")


def _chain(channels: Sequence[str], s2: bool) -> tuple[Step, ...]:
    mean = [STATS[c][0] for c in channels]
    std = [STATS[c][1] for c in channels]
    steps = [Step("scale", {"factor": S2_DN_SCALE})] if s2 else []
    return (*steps, Step("normalize", {"mean": mean, "std": std}), Step("fill_invalid", {"value": 0.0}),
            Step("resize", {"size": IMAGE_SIZE, "method": "bilinear", "antialias": True}))


NOTES = f"""\
Default input: Sentinel-2 level-2A ({S2_L2A}), bands {', '.join(DEFAULT_BANDS)} (THOR's 10 m and 20 m \
groups; B1/B9 add the 60 m group), {IMAGE_SIZE} x {IMAGE_SIZE} px at {INPUT_GSD_M:g} m (ground cover 2880 m, the \
authors' downstream default), one median composite. Level-2A because the pre-training's land-cover targets \
include the L2A scene classification (SCL); {S2_L1C} (same band names) is accepted with the same statistics. \
Sentinel-1 ({S1_GRD}, VV/VH/HH/HV in dB, IW kernels) is the other sensor; both together need preprocessing=.
Chain: DN x 1e-4 (reflectance), per-channel mean/std of THOR's pre-training (the extension's \
THOR_NORMALIZATION_PARAMS; S1: the IW 10 m dB statistics; the authors advise dataset statistics for \
fine-tuning, and their example configs use them: for arbitrary places the pre-training ones are the published \
choice, pass preprocessing= to use yours), invalid pixels 0 (the channel mean), resize to \
{IMAGE_SIZE} (bilinear, antialiased). Inside the network, as the authors' TerraTorch wrapper does, each band \
is resampled (bilinear, align_corners=False, no antialias) from the 10 m grid to its group's native GSD \
(20 m bands to half the size, 60 m to a sixth): the input is taken to be at 10 m whatever ROI size was \
resized to {IMAGE_SIZE} px (the model is told the nominal GSD, as in the authors' pipeline; buffer_m=\
{IMAGE_SIZE * 5}, a {IMAGE_SIZE * 10} m square, gives exactly 10 m).
Network: per-band 16 px kernels PI-resized to the variant's patch ({DEFAULT_PATCH} by default, 16 for \
'-p16'; pre-trained with patches {PRETRAIN_PATCHES[0]}..{PRETRAIN_PATCHES[-1]}), tokens averaged within a group \
(subsetmean over the bands present), plus [sin-cos code of patch x GSD / 40 m | fixed group code], 2D ALiBi \
from patch-centre ground positions scaled by the largest patch footprint, pre-norm blocks, LayerNorm eps 1e-6. \
Numerics: ALiBi distances are exact (torch.cdist without its matrix-product path, which the original uses: \
within 2e-6 at the default layout) and the PI-resize pseudo-inverse is computed in float64 (the original: \
float32; the kernels differ by about 1e-6 relative).
Outputs: grid = the last block's tokens, unnormalised (the authors' EmbeddingGenerationTask recipe, \
out_indices [-1]), each group reshaped to its token grid, coarser groups upsampled bilinearly to the finest \
group's grid and the groups averaged (merge_method 'mean'); 36 x 36 for the default. pooled = the pre-training \
global feature (cls_token_type 'pooled'): LayerNorm of the mean over all tokens of the final-normed tokens.
Weights: the authors publish FM4CS/THOR-1.0-tiny/-small/-base/-large ({HUB_FILE.format(size='<size>')}, \
Apache-2.0). base and base-p16 (one file) default to FM4CS/THOR-1.0-base at commit {BASE_COMMIT} (the commit \
another project pins, with 376,628,228 bytes): no page readable here publishes the file's sha256, so it is \
taken from that commit's Git LFS record on the Hub at first download, checked against the bytes and recorded \
(not checked against the real file here: the Hub is unreachable from where this was written). No commit of \
tiny, small or large is known: those variants ship no default weights; download the file and pass \
weights=<path> (pinned by its own sha256). Every file is opened with weights_only=True and loaded strictly \
after stripping the 'encoder.' prefix and dropping the authors' ignore list decoder_* / decode_* / \
pos_embed* / ref_pos_embed*.
Reference: none installs here (the authors' `thor` package is on GitHub only, PyPI's `thor` is another \
project, terratorch 1.2.13 and rshf do not carry THOR). tests/test_thor_equality.py compares with the authors' \
ThorViTEncoder on shared random weights wherever their package is importable (skipped here); run by hand \
against the copy of that code cybergis/rs-embed vendors, it passes; a script through that copy's loader and \
wrapper gave max |d| <= 7.2e-7 (pooled) and <= 7.4e-6 (grid) for all four sizes (docs/models/thor.md)."""


class THOR(Embedder):
    card = ModelCard(
        id="thor",
        aliases=("thor_1_0",),
        description=(
            "THOR (Forgaard et al., 2026): compute-adaptive FlexiViT over per-GSD channel groups of Sentinel-1/2 "
            "(any patch size from 16 px kernels, 2D ALiBi across resolutions); pre-trained on THOR-Pretrain "
            "(Sentinel-1/2/3). Default Sentinel-2 L2A, 10 bands, 288 px, patch 8. Weights: yours (see notes)."
        ),
        input=InputSpec(S2_L2A, DEFAULT_BANDS, INPUT_GSD_M, image_size=IMAGE_SIZE, frames=1, composite="median"),
        variants=_variants(),
        default_variant="base",
        preprocessing=_chain([_S2_TO_THOR[b] for b in DEFAULT_BANDS], s2=True),
        pooled="LayerNorm of the mean over all tokens of the final-normed tokens (THOR's pre-training feature)",
        grid="last-block tokens, each group upsampled to the finest group's grid, groups averaged (36 x 36 default)",
        side_inputs=("each band's THOR channel and native GSD, from its collection (no request metadata)",),
        license="code: Apache-2.0 (rs-embed); weights: Apache-2.0 (FM4CS model cards), supplied by you",
        citation=(
            "Forgaard, T., Reksten, J. H., Waldeland, A. U., Marsocci, V., Longépé, N., Kampffmeyer, M., Salberg, "
            "A.-B. THOR: A Versatile Foundation Model for Earth Observation Climate and Society Applications. "
            "arXiv:2601.16011, 2026"
        ),
        homepage="https://github.com/FM4CS/THOR",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.model: ThorEncoder | None = None

    @classmethod
    def default_chain(cls, sensor: SensorSpec) -> tuple[Any, ...]:
        """The pre-training statistics of the channels the sensor's bands map to (S2 as reflectance)."""
        table = BAND_TO_THOR.get(sensor.collection, {})
        if not sensor.bands or not all(b in table for b in sensor.bands):
            return cls.card.preprocessing  # check_request names what does not fit
        return _chain([table[b] for b in sensor.bands], s2=sensor.collection != S1_GRD)

    @classmethod
    def check_request(cls, variant: Variant, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        """Bands THOR has kernels for, once each; a resize that tiles at the variant's patch; weights given."""
        parsed = [Step.of(s) for s in steps]
        selected = next((s.params.get("bands") for s in parsed if s.name == "select_bands"), None)
        bands = tuple(selected) if selected else tuple(b for s in sensors for b in s.bands)
        channels = channels_for(sensors, bands)
        for step in parsed:  # e.g. the default chain of the first of two sensors: refused here, not after a fetch
            n = len(step.params.get("mean", ())) if step.name == "normalize" else len(bands)
            if n not in (1, len(bands)):
                raise SpecError(f"THOR: the chain normalises {n} channels but the request gives {len(bands)} bands "
                                f"{list(bands)}; pass preprocessing= with statistics for each (see STATS)")
        size = next((s.params.get("size") for s in reversed(parsed) if s.name == "resize"), None)
        if size is not None:
            h, w = (size, size) if isinstance(size, int) else tuple(size)
            check_geometry(channels, int(h), int(w), int(variant.params["patch_size"]))
        if variant.weights is None:
            raise WeightsError(_no_weights_message(variant))

    def load(self) -> None:
        if self.variant.weights is None:
            raise WeightsError(_no_weights_message(self.variant))
        from rs_embed_thor_model import build

        self.model = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        check_single_frame(x, ctx, "THOR")
        channels = channels_for(ctx.sensor, ctx.band_names)
        patch = int(self.variant.params["patch_size"])
        check_geometry(channels, x.shape[-2], x.shape[-1], patch)
        if self.model is None:
            self.load()
        pooled, grid, layout = self.model.embed(x[:, 0].float(), channels, patch)  # type: ignore[union-attr]
        grids = {f"group{g}": list(hw) for g, hw in layout}  # the same for every item; meta is per item
        extra = {"patch_size": [patch] * x.shape[0], "token_grids": [grids] * x.shape[0]}
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None, extra=extra)


def _no_weights_message(variant: Variant) -> str:
    size = variant.params.get("size", variant.name)
    repo, name = HUB_REPO.format(size=size), HUB_FILE.format(size=size)
    return (f"THOR has no pinned default weights: no verified sha256 of {repo}/{name} is known. Download it "
            f"(hf download {repo} {name}) and pass weights='<path to the file>' (pinned by its own sha256, "
            "loaded strictly).")


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(THOR)
