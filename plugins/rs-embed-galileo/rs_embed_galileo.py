"""Galileo (Tseng et al., ICML 2025) for rs-embed: monthly Sentinel-2 / Sentinel-1 time series.

Galileo is a family of ViT encoders (nano / tiny / base) pre-trained on many remote-sensing inputs
at once, tokenised by *channel group* along four kinds of axes: space-time (Sentinel-1 VV/VH,
Sentinel-2 in five band groups, NDVI), space (SRTM, Dynamic World, WorldCereal), time (ERA5,
TerraClimate, VIIRS) and static (LandScan, location, static land cover). Every group may be
missing: its tokens are masked. Side inputs, per batch item, all read from the request:

- space-time pixels: the Sentinel-2 and/or Sentinel-1 bands the request delivers, each whole
  group present is embedded, the others are masked (NDVI from B8 and B4 when both are there);
- months: each frame's month (frames are equal temporal bins of the window; a one-year window in
  12 frames gives monthly frames, as pre-trained);
- location: the ROI centre as a unit vector (the static "location" group);
- pixel size: the preprocessed grid's GSD scales the spatial position table;
- token masks: a (frame, patch) token is masked when none of its pixels is valid there.

Space, time and the other static groups (elevation, land cover, climate, night lights,
population) cannot come from an imagery request: they are masked, as the authors' input builder
masks every input it is not given. The network (rs_embed_galileo_model) is written here in torch
with the parameter names of the authors' `encoder.pt`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput
from rs_embed_core.errors import SpecError, UnknownBandError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.raster import Raster
from rs_embed_core.specs import SensorSpec

if TYPE_CHECKING:
    import torch

    from rs_embed_galileo_model import Galileo as GalileoNet

__all__ = ["Galileo", "galileo_select", "galileo_normalize", "register_embedders", "register_preprocessors"]

# ---- channel groups (the authors' single_file_galileo.py band tables, in the band table's names) ----
S1_BANDS = ("VV", "VH")
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
NDVI = "NDVI"
SPACE_TIME_BANDS = S1_BANDS + S2_BANDS + (NDVI,)  # the authors' space-time channel order
SPACE_TIME_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("S1", S1_BANDS), ("S2_RGB", ("B2", "B3", "B4")), ("S2_Red_Edge", ("B5", "B6", "B7")),
    ("S2_NIR_10m", ("B8",)), ("S2_NIR_20m", ("B8A",)), ("S2_SWIR", ("B11", "B12")), ("NDVI", (NDVI,)),
)
# groups no imagery request fills (always masked); channel counts only, for the checkpoint's shapes
SPACE_GROUPS = (("SRTM", 2), ("DW", 9), ("WC", 5))
TIME_GROUPS = (("ERA5", 2), ("TC", 3), ("VIIRS", 1))
STATIC_GROUPS = (("LS", 1), ("location", 3), ("DW_static", 9), ("WC_static", 5))

S2_COLLECTION = "COPERNICUS/S2_HARMONIZED"  # level-1C, what the pre-training exported (src/data/earthengine/s2.py)
S2_L2A_COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
S1_COLLECTION = "COPERNICUS/S1_GRD"  # VV, VH backscatter in dB
COLLECTIONS = {S2_COLLECTION: S2_BANDS, S2_L2A_COLLECTION: S2_BANDS, S1_COLLECTION: S1_BANDS}

# Pre-training statistics of the 13 space-time channels (config/normalization.json, key "13": S1 in dB,
# S2 L1C DN, NDVI), in SPACE_TIME_BANDS order. The authors' Normalizer(std=True, std_multiplier=2) maps
# each S1/S2 band to (x - (mean - 2 std)) / (4 std); NDVI passes through (shift 0, div 1).
_MEAN = (-11.728724389184965, -18.85558188024017, 1395.3408730676722, 1338.4026921784578, 1343.09883810357,
         1543.8607982512297, 2186.2022069512263, 2525.0932853316694, 2410.3377187373408, 2750.2854646886753,
         2234.911100061487, 1474.5311266077113, 0.2892116502999044)
_STD = (4.887145774840316, 5.730270320384293, 917.7041440370853, 913.2988423581528, 1092.678723527555,
        1047.2206083460424, 1048.0101611156767, 1143.6903026819996, 1098.979177731649, 1204.472755085893,
        1145.9774063078878, 980.2429840007796, 0.2720939024500081)
STD_MULTIPLIER = 2.0
SHIFT = {b: (m - STD_MULTIPLIER * s if b != NDVI else 0.0) for b, m, s in zip(SPACE_TIME_BANDS, _MEAN, _STD)}
DIV = {b: (2 * STD_MULTIPLIER * s if b != NDVI else 1.0) for b, s in zip(SPACE_TIME_BANDS, _STD)}

IMAGE_SIZE = 32  # pixels a side after the chain: 4 x 4 tokens of 8 px, the pre-training's 12-frame shape
PATCH_SIZE = 8  # the stored kernel size (max_patch_size); other sizes run through FlexiViT resizing
GSD_M = 10.0
FRAMES = 12
MAX_FRAMES = 24  # the frame table's rows (max_sequence_length)

# ---- weights ----
# nasaharvest/galileo on the Hugging Face Hub, at the commit allenai/rslearn pins for its Galileo
# wrapper (hf_hub_download(..., revision=...)); files models/{nano,tiny,base}/encoder.pt (+ config.json).
# sha256: only the nano file's digest could be established: the authors also commit the nano encoder to
# their GitHub repository (data/models/nano/encoder.pt, "Add nano model to git", 2025-02-13); its sha256
# eab6acac... was computed here from that repository (and is the one a third-party reproduction recipe pins
# for the GitHub file). The Hub copy is assumed to be the same file, not verified (no Hub access): a
# mismatch fails on load with a sha256 error. tiny and base: no published sha256 found; the commit pins
# them all the same: the digest is each file's Git LFS sha256 at REVISION, read from the Hub on the first
# download, verified and recorded (WeightsSpec.from_revision).
REPO_ID = "nasaharvest/galileo"
REVISION = "f039dd5dde966a931baeda47eb680fa89b253e4e"
WEIGHTS_LICENSE = "mit"
NANO_SHA256 = "eab6acacf527886a508a555bc24efe4b4a2cf91b162e84cd1c4a1807e942180c"

_CONFIGS = {  # config/models/{nano,tiny,base}.json "model.encoder" (drop_path: training only)
    "nano": {"embedding_size": 128, "depth": 4, "num_heads": 8},
    "tiny": {"embedding_size": 192, "depth": 12, "num_heads": 3},
    "base": {"embedding_size": 768, "depth": 12, "num_heads": 12},
}


def _variant(size: str) -> Variant:
    cfg = {**_CONFIGS[size], "mlp_ratio": 4.0, "max_sequence_length": MAX_FRAMES, "max_patch_size": PATCH_SIZE,
           "patch_size": PATCH_SIZE}
    filename = f"models/{size}/encoder.pt"
    weights = (WeightsSpec(REPO_ID, REVISION, filename, NANO_SHA256, WEIGHTS_LICENSE) if size == "nano"
               else WeightsSpec.from_revision(REPO_ID, REVISION, filename, WEIGHTS_LICENSE))
    dim = int(cfg["embedding_size"])
    return Variant(size, pooled_dim=dim, grid_dim=dim, weights=weights, params=cfg)


VARIANTS = tuple(_variant(s) for s in ("nano", "tiny", "base"))


# ---- preprocessing steps ----


def present_groups(bands: tuple[str, ...] | list[str]) -> list[str]:
    """The space-time groups whose bands are all in `bands` (in the authors' group order); refuses other
    bands and partial groups by name (a group is embedded whole or masked)."""
    unknown = [b for b in bands if b not in SPACE_TIME_BANDS]
    if unknown:
        raise UnknownBandError(f"Galileo takes Sentinel-1 {list(S1_BANDS)} and Sentinel-2 {list(S2_BANDS)} bands "
                               f"(NDVI is computed); it has no channel for {unknown}")
    have = set(bands)
    groups = []
    for g, members in SPACE_TIME_GROUPS:
        got = [b for b in members if b in have]
        if got and len(got) != len(members):
            raise SpecError(f"Galileo embeds channel group {g} {list(members)} whole; the request has only {got}. "
                            "Add the missing band(s) or drop the group (it is then masked).")
        if got:
            groups.append(g)
    if not groups or groups == ["NDVI"]:
        raise SpecError(f"Galileo needs at least one Sentinel-1 or Sentinel-2 channel group; got bands {list(bands)}")
    return groups


def galileo_select(raster: Raster) -> Raster:
    """Galileo's bands in its order, invalid pixels filled as the authors' loader fills NaN (each band's
    mean over the item's valid pixels, all frames; 0 when none), NDVI appended from B8 and B4.

    NDVI = (B8 - B4) / (B8 + B4) where the sum is > 0, else 0, on the filled values (src/data/dataset.py
    calculate_ndi). Must run before normalisation.
    """
    bands = [b for b in SPACE_TIME_BANDS if b in raster.bands and b != NDVI]
    present_groups([b for b in raster.bands])  # refuses unknown bands and partial groups
    data = raster.data[:, raster.band_index(bands)].astype(np.float32)
    valid = np.broadcast_to(raster.valid[:, None], data.shape)
    n = valid.sum(axis=(0, 2, 3))
    sums = np.where(valid, data, 0.0).sum(axis=(0, 2, 3), dtype=np.float64)
    mean = np.where(n > 0, sums / np.maximum(n, 1), 0.0).astype(np.float32)
    data = np.where(valid, data, mean[None, :, None, None]).astype(np.float32)
    if "B8" in bands and "B4" in bands:
        nir, red = data[:, bands.index("B8")], data[:, bands.index("B4")]
        s = nir + red
        ndvi = np.where(s > 0, (nir - red) / np.where(s > 0, s, 1.0), 0.0).astype(np.float32)
        data = np.concatenate([data, ndvi[:, None]], axis=1)
        bands.append(NDVI)
    return raster.replace(data=data, bands=tuple(bands))


def galileo_normalize(raster: Raster, shift: dict[str, float], div: dict[str, float]) -> Raster:
    """(x - shift[band]) / div[band] for every band, by name (the chain adapts to the groups present)."""
    missing = [b for b in raster.bands if b not in shift or b not in div]
    if missing:
        raise SpecError(f"galileo_normalize has no shift/div for band(s) {missing}")
    if any(float(div[b]) == 0 or not math.isfinite(float(div[b])) for b in raster.bands):
        raise SpecError("galileo_normalize: every div must be finite and non-zero")
    s = np.array([shift[b] for b in raster.bands], np.float32)[None, :, None, None]
    d = np.array([div[b] for b in raster.bands], np.float32)[None, :, None, None]
    return raster.replace(data=((raster.data - s) / d).astype(np.float32))


NOTES = f"""\
Default input: Sentinel-2 level-1C ({S2_COLLECTION}, what Galileo's pre-training exported), the 10 bands \
B2 B3 B4 B5 B6 B7 B8 B8A B11 B12, {FRAMES} frames (the window split into {FRAMES} equal bins, each a median \
composite; a one-year window gives monthly frames as pre-trained), {IMAGE_SIZE} x {IMAGE_SIZE} px at \
{GSD_M:g} m with {PATCH_SIZE}-px patches: 4 x 4 tokens x {FRAMES} frames, the largest-time shape of the \
pre-training (config shape_time_combinations: 4 tokens, 12 timesteps). Larger ROIs are resized (the model is \
told the real pixel size) or tiled (input_prep="tile"). Frames: 1..{MAX_FRAMES} (the frame table's rows); \
more is a SpecError before any fetch.
Also accepted: Sentinel-1 ({S1_COLLECTION}, VV and VH in dB), alone or with Sentinel-2 as a multi-sensor \
request (sensor=(SensorSpec(S2...), SensorSpec(S1...)), same frames), and Sentinel-2 level-2A \
({S2_L2A_COLLECTION}; runs with the L1C statistics, not what Galileo saw). Any subset of whole channel \
groups (S2_RGB B2-B4, S2_Red_Edge B5-B7, S2_NIR_10m B8, S2_NIR_20m B8A, S2_SWIR B11-B12, S1 VV+VH) runs, \
the others masked; a partial group, another band or another collection (Landsat, HLS, MODIS: Galileo has no \
channel group for them) is refused before any fetch.
Chain: galileo_select (Galileo's band order; invalid pixels filled with the band's mean over the item's \
valid pixels in all frames, as the authors' loader fills NaN; NDVI = (B8 - B4) / (B8 + B4), 0 where the sum \
is not positive, from DN); galileo_normalize with the authors' Normalizer(std=True, std_multiplier=2): \
(x - (mean - 2 std)) / (4 std) per S1/S2 band with the pre-training statistics (config/normalization.json \
"13"), NDVI unchanged; resize to {IMAGE_SIZE} (bilinear, antialiased; after the affine normalisation, \
equivalent to before).
Side inputs: months = each frame's month from its timestamp (bin centre; a frame without one is a \
SpecError); location = the ROI centre as (cos lat cos lon, cos lat sin lon, sin lat), the static \
"location" group (tiles share it); pixel size = the preprocessed grid's GSD (sqrt(res_x res_y)), scaling \
the spatial table by token size / 10 m. Masks: a (frame, patch) token is masked when none of its pixels is \
valid in that frame (empty bin, fully clouded patch) and the patch is valid in some other frame; a patch \
never valid stays visible (it describes the fill value). Groups not in the request, and every space / time \
/ other static group (SRTM, Dynamic World, WorldCereal, ERA5, TerraClimate, VIIRS, LandScan), are masked, \
as the authors' construct_galileo_input masks inputs it is not given. Deviation: the authors' builder \
masks NDVI unless passed explicitly; here NDVI is computed and visible whenever B4 and B8 are, as in their \
pre-training data.
Outputs (after the encoder's final LayerNorm): pooled = mean of all visible tokens (the authors' \
average_tokens); grid = per 8-px patch, the mean of its visible space-time tokens over frames and groups \
plus the static location token (apply_mask_and_average_tokens_per_patch), D x 4 x 4 for the default input, \
row 0 north. Items in a batch are independent (masked tokens are excluded by an attention mask), so a \
batch equals its items.
Network: written here with the authors' parameter names; pos_embed and month_embed are the checkpoint's \
stored tables; the spatial sin-cos table is recomputed per call in float64 (the authors' in float32). \
LayerNorm eps 1e-5. patch_size is a variant parameter (1..8 via FlexiViT pseudo-inverse kernel resizing; \
default 8, the stored kernel, no resizing).
Weights: {REPO_ID} at commit {REVISION} (the revision allenai/rslearn pins), models/<size>/encoder.pt, a \
plain state dict opened with weights_only=True, converted once to safetensors, loaded strictly with no \
ignore list (the file holds the encoder only; a ".backbone" infix some of the authors' files carry is \
removed first, as their loader does). nano: sha256 of the authors' nano encoder as committed to their \
GitHub repository, assumed identical to the Hub copy (not verified; a mismatch fails on load). tiny, base: \
no published sha256 could be found, so the digest is each file's Git LFS sha256 at the pinned commit, read \
from the Hub's metadata on the first download, verified and recorded in the rs-embed cache for later \
(offline) loads (not verified here: no Hub access). Licence: MIT."""


class Galileo(Embedder):
    card = ModelCard(
        id="galileo",
        description=(
            "Galileo (Tseng et al., ICML 2025): multi-modal ViT pre-trained on space-time, space, time and "
            "static channel groups with masks and a month embedding; here monthly Sentinel-2 (and/or Sentinel-1) "
            "time series with the ROI's location. Sizes nano, tiny, base."
        ),
        input=InputSpec(S2_COLLECTION, S2_BANDS, GSD_M, image_size=IMAGE_SIZE, frames=FRAMES, composite="median"),
        variants=VARIANTS,
        default_variant="nano",
        preprocessing=(
            Step("galileo_select"),
            Step("galileo_normalize", {"shift": dict(SHIFT), "div": dict(DIV)}),
            Step("resize", {"size": IMAGE_SIZE, "method": "bilinear", "antialias": True}),
        ),
        pooled="mean of the visible tokens (space-time tokens of every frame and group, and the location token)",
        grid=("per patch, mean of its visible space-time tokens over frames and groups plus the location token "
              "(D x 4 x 4 for 32 px with 8-px patches)"),
        side_inputs=("frame months (0..11) from the frame timestamps", "location: ROI centre lon/lat -> unit vector",
                     "pixel size from the preprocessed grid", "valid mask -> (frame, patch) token masks"),
        license="code: Apache-2.0 (rs-embed); weights: MIT",
        citation=(
            "Tseng, G., Fuller, A., Reil, M., Herzog, H., Beukema, P., Bastani, F., Green, J. R., Shelhamer, E., "
            "Kerner, H., Rolnick, D. Galileo: Learning Global & Local Features of Many Remote Sensing Modalities. "
            "ICML 2025, arXiv:2502.09356"
        ),
        homepage="https://github.com/nasaharvest/galileo",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.model: GalileoNet | None = None

    @classmethod
    def check_request(cls, variant: Variant, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        """Collections, whole channel groups and the frame count, before any fetch or weights work."""
        for s in sensors:
            if s.collection not in COLLECTIONS:
                raise SpecError(f"Galileo takes {sorted(COLLECTIONS)} (Sentinel-2 L1C/L2A, Sentinel-1 GRD dB); "
                                f"{s.collection!r} has no Galileo channel group")
            other = [b for b in s.bands if b not in COLLECTIONS[s.collection]]
            if other:
                raise UnknownBandError(f"Galileo has no channel for band(s) {other} of {s.collection}; it takes "
                                       f"{list(COLLECTIONS[s.collection])}")
            if s.composite != "none" and not 1 <= s.frames <= MAX_FRAMES:
                raise SpecError(f"Galileo takes 1..{MAX_FRAMES} frames (its frame table); the request asks for "
                                f"{s.frames} (SensorSpec(frames=...))")
        if len({(s.frames, s.composite) for s in sensors}) > 1:
            raise SpecError("Galileo's Sentinel-1 and Sentinel-2 groups share one frame axis: give both sensors "
                            "the same frames and composite")
        present_groups([b for s in sensors for b in s.bands])
        p = int(variant.params.get("patch_size", PATCH_SIZE))
        if not 1 <= p <= PATCH_SIZE:
            raise SpecError(f"Galileo runs patch sizes 1..{PATCH_SIZE}, variant asks for {p}")

    def load(self) -> None:
        from rs_embed_galileo_model import build

        self.model = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        import torch

        from rs_embed_core.nn.geo_time import lonlat_to_xyz, months_of
        from rs_embed_core.nn.tokens import patch_missing

        if x.ndim != 5 or len(ctx.band_names) != x.shape[2]:
            raise SpecError(f"Galileo takes (B, T, C, H, W) with one band name per channel; got {tuple(x.shape)} "
                            f"and bands {list(ctx.band_names)}")
        b, t = x.shape[:2]
        if t > MAX_FRAMES:
            raise SpecError(f"Galileo takes at most {MAX_FRAMES} frames; got {t}")
        groups = present_groups(list(ctx.band_names))
        months = torch.tensor(months_of(ctx.times, "Galileo"), dtype=torch.long, device=x.device).reshape(b, t)
        lon, lat = (torch.tensor([c[i] for c in ctx.centers_lonlat], dtype=torch.float64) for i in (0, 1))
        location = lonlat_to_xyz(lon, lat).to(torch.float32).to(x.device)
        p = int(self.variant.params["patch_size"])
        valid = (torch.ones((b, t, x.shape[3], x.shape[4]), dtype=torch.bool) if ctx.valid is None
                 else torch.from_numpy(np.asarray(ctx.valid, bool)))
        visible = ~patch_missing(valid, p).to(x.device)
        res = torch.tensor([math.sqrt(g.res * g.yres) for g in ctx.grids] if ctx.grids else [GSD_M] * b,
                           dtype=torch.float64, device=x.device)
        idx = {name: i for i, name in enumerate(ctx.band_names)}
        pixels = {g: x[:, :, [idx[band] for band in dict(SPACE_TIME_GROUPS)[g]]].float() for g in groups}
        if self.model is None:
            self.load()
        pooled, grid = self.model(pixels, visible, months, location, p, res)  # type: ignore[misc]
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None,
                           extra={"groups": [groups] * b, "months": months.tolist(),
                                  "masked_tokens": (~visible).sum(dim=(1, 2, 3)).tolist()})


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(Galileo)


@hookimpl
def register_preprocessors(register) -> None:  # type: ignore[no-untyped-def]
    register("galileo_select", galileo_select)
    register("galileo_normalize", galileo_normalize)
