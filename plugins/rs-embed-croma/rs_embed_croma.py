"""CROMA (Fuller et al., NeurIPS 2023) for rs-embed: radar-optical encoders with 2D-ALiBi.

CROMA has three encoders: optical (12 Sentinel-2 bands), SAR (Sentinel-1 VV, VH) and a joint
encoder that fuses both. Which one runs is chosen by the bands the request delivers:

- the 12 optical bands (the default sensor)                 -> optical encoder
- `sensor=SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"), 10)` -> SAR encoder
- `sensor=(SensorSpec(<S2>...), SensorSpec(<S1>, ("VV", "VH"), 10))`, a multi-sensor request
  served on one grid                                          -> joint encoder

The network (rs_embed_croma_model) is written here in torch with the parameter names of the
authors' checkpoint, which torchgeo pins on the Hub; it loads strictly. torchgeo is the
test-time reference only. This module stays torch-free: it declares the card, the two
CROMA preprocessing steps (numpy) and the embedder, and imports the network inside load().
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput, check_single_frame
from rs_embed_core.errors import SpecError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.raster import Raster

if TYPE_CHECKING:
    import torch

    from rs_embed_croma_model import CROMA as CROMANet

__all__ = ["CROMA", "croma_select", "croma_scale", "mode_of", "register_embedders", "register_preprocessors"]

# torchgeo 0.8.1 CROMABase_Weights / CROMALarge_Weights point at
# https://hf.co/torchgeo/croma/resolve/387883f08af79d777167519c57cd826eda89a16f/CROMA_base-0238d814.pt and
# .../resolve/92cb1a0f4e34c6c01558baf070197c01255382f6/CROMA_large-921e69ad.pt. torchgeo/croma's files are
# renames "without changes" of the authors' antofuller/CROMA files (HF commits 17591bc, 92cb1a0), whose
# Git LFS pointers (antofuller/CROMA commit 0dd28e3d633bd6715856ae9890e8c49360040598, "Upload 2 files")
# give the full sha256 and size: base 0238d814...3b63, 777,563,846 bytes; large 921e69ad...15a7,
# 2,690,426,614 bytes (the large one also on torchgeo/croma commit 26b3308's pointer). The 8-hex prefixes
# are the ones torchgeo put in the file names. Not recomputed here (no Hub access); a mismatch fails on load.
# Licence: MIT (torchgeo/croma and antofuller/CROMA Hub repositories, and the authors' GitHub repository).
REPO_ID = "torchgeo/croma"
WEIGHTS_LICENSE = "MIT"

# CROMA's channel order: Sentinel-2 without the cirrus band B10 (CROMA README: "Sentinel-2 must be 12
# channels (remove the cirrus band if necessary)"; the order is SSL4EO-S12's, as PANGAEA and rslearn
# feed CROMA), and Sentinel-1 VV, VH.
OPTICAL_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
SAR_BANDS = ("VV", "VH")
OPTICAL_COLLECTION = "COPERNICUS/S2_HARMONIZED"
SAR_COLLECTION = "COPERNICUS/S1_GRD"

# CROMA was pre-trained on SSL4EO-S12 (Sentinel-1 GRD + Sentinel-2 level-1C, 10 m). Its README
# normalises each band to [mean - 2 std, mean + 2 std] -> [0, 1], clipped ("taken from SatMAE and SeCo"),
# with the statistics of the data at hand. The fixed statistics here are SSL4EO-S12's published ones
# ("calculated from 50k data", zhu-xlab/SSL4EO-S12 src/benchmark/pretrain_ssl/datasets/SSL4EO/
# ssl4eo_dataset.py at 1dc0c831: S2C_MEAN/S2C_STD for L1C DN without B10; S1_MEAN/S1_STD in dB).
SSL4EO_MEAN = {
    "B1": 1605.57504906, "B2": 1390.78157673, "B3": 1314.8729939, "B4": 1363.52445545, "B5": 1549.44374991,
    "B6": 2091.74883118, "B7": 2371.7172463, "B8": 2299.90463006, "B8A": 2560.29504086, "B9": 830.06605044,
    "B11": 2177.07172323, "B12": 1524.06546312, "VV": -12.54847273, "VH": -20.19237134,
}
SSL4EO_STD = {
    "B1": 786.78685367, "B2": 850.34818441, "B3": 875.06484736, "B4": 1138.84957046, "B5": 1122.17775652,
    "B6": 1161.59187054, "B7": 1274.39184232, "B8": 1248.42891965, "B8A": 1345.52684884, "B9": 577.31607053,
    "B11": 1336.09932639, "B12": 1136.53823676, "VV": 5.25697717, "VH": 5.91150917,
}
IMAGE_SIZE = 120  # CROMA's pre-training size: 15 x 15 patches of 8 px
GSD_M = 10.0  # SSL4EO-S12 is resampled to 10 m; 120 px = 1.2 km


def _config(embed_dim: int, depth: int) -> dict[str, Any]:
    # torchgeo croma_base / croma_large: 16 heads, patch 8; SAR and joint encoders have depth // 2
    return {"embed_dim": embed_dim, "depth": depth, "heads": 16}


BASE = Variant(
    "base", pooled_dim=768, grid_dim=768,
    weights=WeightsSpec(REPO_ID, "387883f08af79d777167519c57cd826eda89a16f", "CROMA_base-0238d814.pt",
                        "0238d814b53108f3574bf1ea240e38a0a6edd46173816d9a6962070561893b63", WEIGHTS_LICENSE),
    params=_config(768, 12),
)
LARGE = Variant(
    "large", pooled_dim=1024, grid_dim=1024,
    weights=WeightsSpec(REPO_ID, "92cb1a0f4e34c6c01558baf070197c01255382f6", "CROMA_large-921e69ad.pt",
                        "921e69ad4069201298bb5c860dc332f31e0cb01df6864f294a79fa8f921915a7", WEIGHTS_LICENSE),
    params=_config(1024, 24),
)


# ---------------------------------------------------------------- preprocessing steps (numpy)


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise SpecError(f"croma_select: {what} must be a non-empty list of band names, got {value!r}")
    return tuple(str(v) for v in value)


def croma_select(raster: Raster, optical: Sequence[str], sar: Sequence[str]) -> Raster:
    """Keep CROMA's bands in CROMA's order: all `optical` bands, then all `sar` bands, each group
    only when the raster holds it completely (optical only, SAR only, or both for the joint encoder).

    A group present in part is an error naming the missing bands, not a silent drop.
    """
    groups = (("optical", _names(optical, "optical")), ("SAR", _names(sar, "sar")))
    keep: list[str] = []
    for label, names in groups:
        present = [b for b in names if b in raster.bands]
        if present and len(present) < len(names):
            missing = [b for b in names if b not in raster.bands]
            raise SpecError(f"CROMA's {label} encoder needs all of {list(names)}; the input lacks {missing} "
                            f"(it has {list(raster.bands)})")
        keep.extend(present)
    if not keep:
        raise SpecError(f"CROMA needs the optical bands {list(groups[0][1])} and/or the SAR bands "
                        f"{list(groups[1][1])}; the input has {list(raster.bands)}")
    return raster.replace(data=raster.data[:, raster.band_index(keep)], bands=tuple(keep))


def _table(value: Any, what: str) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise SpecError(f"croma_scale: {what} must be a mapping band name -> number, got {value!r}")
    out = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
            raise SpecError(f"croma_scale: {what}[{k!r}] must be a finite number, got {v!r}")
        out[str(k)] = float(v)
    return out


def croma_scale(raster: Raster, mean: Mapping[str, float], std: Mapping[str, float], sigmas: float = 2.0) -> Raster:
    """Per band, by name: clip((x - (mean - k std)) / (2 k std), 0, 1) with k = `sigmas` (CROMA: 2)."""
    m, s = _table(mean, "mean"), _table(std, "std")
    if isinstance(sigmas, bool) or not isinstance(sigmas, (int, float)) or not sigmas > 0:
        raise SpecError(f"croma_scale: sigmas must be a positive number, got {sigmas!r}")
    lacking = [b for b in raster.bands if b not in m or b not in s]
    if lacking:
        raise SpecError(f"croma_scale has no statistics for band(s) {lacking}; it has {sorted(set(m) & set(s))}")
    if any(s[b] <= 0 for b in raster.bands):
        raise SpecError(f"croma_scale: every std must be > 0, got {s}")
    lo = np.array([m[b] - sigmas * s[b] for b in raster.bands]).reshape(1, -1, 1, 1)
    span = np.array([2.0 * sigmas * s[b] for b in raster.bands]).reshape(1, -1, 1, 1)
    z = (raster.data.astype(np.float64) - lo) / span
    return raster.replace(data=np.clip(z, 0.0, 1.0).astype(np.float32),
                          meta=_saturation(raster, (z < 0.0) | (z > 1.0)))


def _saturation(raster: Raster, clipped: np.ndarray) -> dict[str, Any]:
    """The share of valid values croma_scale clipped, in the meta key the core's clipping steps use
    ("saturated"), so the runner warns when data in other units (reflectance, linear SAR) floods the window."""
    valid = np.broadcast_to(raster.valid[:, None], clipped.shape)
    n = int(valid.sum())
    frac = float((clipped & valid).sum()) / n if n else 0.0
    prev = raster.meta.get("saturated", {})
    return {"saturated": {**prev, "croma_scale": max(frac, prev.get("croma_scale", 0.0))}}


# ---------------------------------------------------------------- the embedder


def mode_of(bands: Sequence[str]) -> str:
    """"optical", "sar" or "joint" from the preprocessed band names (CROMA's order exactly)."""
    names = tuple(bands)
    if names == OPTICAL_BANDS:
        return "optical"
    if names == SAR_BANDS:
        return "sar"
    if names == OPTICAL_BANDS + SAR_BANDS:
        return "joint"
    raise SpecError(
        f"CROMA takes bands {list(OPTICAL_BANDS)} (optical), {list(SAR_BANDS)} (SAR) or both in that order "
        f"(joint); the preprocessed input has {list(names)}. The card's chain (croma_select) puts them in order."
    )


NOTES = f"""\
Modes, chosen by the bands the request delivers (the card's chain keeps CROMA's bands in CROMA's \
order): the 12 optical bands -> optical encoder; VV, VH -> SAR encoder; both (a multi-sensor \
request, sensor=(SensorSpec("{OPTICAL_COLLECTION}", ...12 bands..., 10), SensorSpec("{SAR_COLLECTION}", \
("VV", "VH"), 10)), served on one grid) -> joint encoder. Input: {IMAGE_SIZE} x {IMAGE_SIZE} px at \
{GSD_M:g} m GSD (1.2 km), one median composite; Sentinel-2 level-1C (top-of-atmosphere, as SSL4EO-S12's \
Sentinel-2 that CROMA was pre-trained on: rslearn's CROMA wrapper states "trained on L1C images with B10 \
removed"; the paper's pre-training data section could not be read here) and Sentinel-1 GRD backscatter \
in dB (SSL4EO-S12's Sentinel-1 statistics are in dB: mean -12.5 VV, -20.2 VH).
Chain: select CROMA's bands (croma_select), resize to {IMAGE_SIZE} (bilinear, antialiased), then CROMA's \
normalisation per band: clip((x - (mean - 2 std)) / (4 std), 0, 1) (croma_scale, which records the \
share it clipped so data in other units warns). Deviations: the \
authors compute mean and std over the images being embedded (their README normalises the whole array it \
is given); here they are SSL4EO-S12's published statistics (Sentinel-2 L1C DN, Sentinel-1 dB), fixed so \
that an embedding does not depend on the other items of a batch. The README's optional 8-bit rounding \
(use_8_bit) is not applied (values stay continuous in [0, 1], at most 1/255 apart). Level-2A input \
(S2_SR_HARMONIZED) runs with the same chain and L1C statistics but is not what CROMA saw.
Outputs: optical mode: pooled = s2_GAP_FFN(mean of the optical tokens) (the unimodal representation \
CROMA's contrastive loss was trained on), grid = optical encoder tokens after its final LayerNorm \
(D x 15 x 15). SAR mode: the same with s1_GAP_FFN and the SAR encoder. Joint mode: pooled = mean of the \
joint encoder's tokens (CROMA's joint_GAP), grid = joint encoder tokens (D x 15 x 15). Each token covers \
8 x 8 px (80 m). Other input sizes that are multiples of 8 run with 2D-ALiBi computed for their grid \
(CROMA's authors report extrapolation to larger images); 120 px is what the card's chain produces.
Weights: torchgeo/croma at the commits torchgeo 0.8.1 pins (renames of the authors' antofuller/CROMA \
files); full sha256 from the authors' Git LFS pointers, not recomputed here (no Hub access). The file \
holds one state dict per encoder/head; it is opened with weights_only=True and loaded strictly. MIT."""


class CROMA(Embedder):
    card = ModelCard(
        id="croma",
        description=(
            "CROMA (Fuller et al., NeurIPS 2023): contrastive radar-optical masked autoencoder; optical "
            "(12-band Sentinel-2 L1C), SAR (Sentinel-1 VV/VH) and joint radar-optical encoders, chosen by "
            "the request's sensor(s); 120 px at 10 m."
        ),
        input=InputSpec(OPTICAL_COLLECTION, OPTICAL_BANDS, GSD_M, image_size=IMAGE_SIZE, frames=1, composite="median"),
        variants=(BASE, LARGE),
        default_variant="base",
        preprocessing=(
            Step("croma_select", {"optical": list(OPTICAL_BANDS), "sar": list(SAR_BANDS)}),
            Step("resize", {"size": IMAGE_SIZE, "method": "bilinear", "antialias": True}),
            Step("croma_scale", {"mean": dict(SSL4EO_MEAN), "std": dict(SSL4EO_STD), "sigmas": 2.0}),
        ),
        pooled=("optical: s2_GAP_FFN(mean optical token); SAR: s1_GAP_FFN(mean SAR token); "
                "joint: mean joint-encoder token"),
        grid="tokens of the encoder that ran (optical, SAR or joint), after its final LayerNorm (D x 15 x 15)",
        side_inputs=("band names (optical / SAR / both select the encoder)",),
        license="code: Apache-2.0 (rs-embed); weights: MIT",
        citation=(
            "Fuller, A., Millard, K., Green, J. R. CROMA: Remote Sensing Representations with Contrastive "
            "Radar-Optical Masked Autoencoders. NeurIPS 2023, arXiv:2311.00566"
        ),
        homepage="https://github.com/antofuller/CROMA",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.model: CROMANet | None = None

    def load(self) -> None:
        from rs_embed_croma_model import build

        self.model = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        check_single_frame(x, ctx, "CROMA")
        mode = mode_of(ctx.band_names)  # before any network compute
        if self.model is None:
            self.load()
        from rs_embed_croma_model import to_grid

        net, img = self.model, x[:, 0].float()
        if mode == "optical":
            pooled, tokens = net.optical(img)  # type: ignore[union-attr]
        elif mode == "sar":
            pooled, tokens = net.sar(img)  # type: ignore[union-attr]
        else:
            k = len(OPTICAL_BANDS)
            pooled, tokens = net.joint(img[:, :k], img[:, k:])  # type: ignore[union-attr]
        grid = to_grid(tokens, tuple(img.shape[-2:])) if ctx.want == "grid" else None  # type: ignore[arg-type]
        return EmbedOutput(pooled=pooled, grid=grid)


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(CROMA)


@hookimpl
def register_preprocessors(register) -> None:  # type: ignore[no-untyped-def]
    register("croma_select", croma_select)
    register("croma_scale", croma_scale)
