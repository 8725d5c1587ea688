"""Panopticon (Waldmann, Shah et al., CVPR EarthVision 2025) for rs-embed: one ViT for any sensor.

Panopticon embeds every band of every patch separately, tags it with a channel embedding and fuses
the bands by cross-attention, so any band set of any optical sensor, and Sentinel-1 SAR, goes into
the same DINOv2 ViT-B/14. The channel ids are a side input read from the band table
(`rs_embed_core.collections`) for the bands each batch holds:

- optical band: its centre wavelength in nm (the model floors it to whole nm and encodes it with
  a sin-cos code);
- SAR band: a negative id for its polarisation, -1 VV, -2 VH, -3 HH, -4 HV (the "either orbit"
  ids; -5..-12 are the same polarisations for ascending / descending passes only).

The network (rs_embed_panopticon_model) is written here in torch with the parameter names of the
released teacher checkpoint, which loads strictly; torchgeo is the test-time reference only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.collections import band_entry, delivering_sensor
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput, check_single_frame
from rs_embed_core.errors import SpecError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.specs import SensorSpec

if TYPE_CHECKING:
    import torch

    from rs_embed_panopticon_model import Panopticon as PanopticonNet

__all__ = ["Panopticon", "channel_ids", "register_embedders"]

# torchgeo 0.8.1 Panopticon_Weights.VIT_BASE14 points at
# https://hf.co/lewaldm/panopticon/resolve/c8c2bb9555819e8b2bcedf5b3b00e3bf531554e7/panopticon_vitb14_teacher.pth
# (no hash in the file name). sha256 55024f41...d9b833b65683a4443846603fc7d37591d5afe9d26e and size
# 395,965,930 bytes: as recorded by several independent projects that downloaded that pinned URL
# (found with a code search); no Hub page with the LFS digest could be read here, and it is not
# recomputed (no Hub access). A mismatch fails on load. Licence of the weights: CC-BY-4.0 (the
# authors' README, Panopticon-FM/panopticon: "The model weights are licensed under the CC-BY-4.0 license").
REPO_ID = "lewaldm/panopticon"
REVISION = "c8c2bb9555819e8b2bcedf5b3b00e3bf531554e7"
WEIGHTS_LICENSE = "CC-BY-4.0"

# Panopticon's Sentinel-1 ids (Panopticon-FM/panopticon dinov2/configs/data/satellites/sentinel1.yaml,
# and torchgeo's ChnEmb: id -k selects row k-1 of the SAR table): the orbit-agnostic ids, because a
# composite mixes ascending and descending passes.
SAR_IDS = {"VV": -1, "VH": -2, "HH": -3, "HV": -4}

# Default input: Sentinel-2 L1C, all 13 bands, as fMoW-Sentinel (one of Panopticon's pre-training sets).
# Statistics: the authors' per-band mean / std of fMoW-Sentinel (DN), Panopticon-FM/panopticon
# dinov2/data/datasets/fmow.py at 5ad7f82 (FmowDataset MEAN/STD "fmow_s2", band order of
# dinov2/configs/data/pretrain/fmow_s2.yaml). "Standard normal normalization" is what the README asks for.
S2_COLLECTION = "COPERNICUS/S2_HARMONIZED"
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
FMOW_S2_MEAN = dict(zip(S2_BANDS, (1569.1970, 1383.9951, 1338.4231, 1408.1113, 1537.2856, 1926.5183, 2136.5127,
                                   2033.4019, 2262.4558, 674.1297, 16.7465, 2027.3674, 1501.4686)))
FMOW_S2_STD = dict(zip(S2_BANDS, (517.7932, 595.0351, 690.2477, 994.7734, 994.4599, 1079.4558, 1192.3668,
                                  1170.9979, 1278.2103, 474.7933, 15.1294, 1362.3807, 1134.5983)))
IMAGE_SIZE = 224  # the pre-training crop (README: "224x224 images"); 16 x 16 patches of 14 px
GSD_M = 10.0

BASE = Variant(
    "base", pooled_dim=768, grid_dim=768,
    weights=WeightsSpec(REPO_ID, REVISION, "panopticon_vitb14_teacher.pth",
                        "55024f411a7f383ed1a646d9b833b65683a4443846603fc7d37591d5afe9d26e", WEIGHTS_LICENSE),
    # the authors' hubconf: vit_base, patch 14, LayerScale 1e-5, attn_dim 2304, 16 channel-attention
    # heads, position table for 518 px (37 x 37), resized with DINOv2's interpolation
    params={"embed_dim": 768, "depth": 12, "heads": 12, "patch_size": 14, "attn_dim": 2304, "channel_heads": 16,
            "pos_grid": 37, "mlp_ratio": 4.0, "pos_resize": "dinov2"},
)

_RESIZE = Step("resize", {"size": IMAGE_SIZE, "method": "bilinear", "antialias": True})


def _s2_chain(bands: Sequence[str]) -> tuple[Step, ...]:
    return (_RESIZE, Step("normalize", {"mean": [FMOW_S2_MEAN[b] for b in bands],
                                        "std": [FMOW_S2_STD[b] for b in bands]}))


def channel_ids(sensor: SensorSpec | Sequence[SensorSpec], bands: Sequence[str]) -> tuple[float, ...]:
    """Panopticon's channel id for each band, from the band table of the sensor that delivered it.

    Raises SpecError / UnknownBandError naming the band when it has no id (QA bands, an incidence
    angle, a collection missing from the table) before any network work.
    """
    out = []
    for name in bands:
        coll, band = band_entry(delivering_sensor(sensor, name, "Panopticon").collection, name, "Panopticon")
        if coll.kind == "sar":
            if name not in SAR_IDS:
                raise SpecError(f"Panopticon embeds SAR polarisations {sorted(SAR_IDS)}; {coll.id} band {name!r} "
                                f"({band.description}) is not one")
            out.append(float(SAR_IDS[name]))
        elif band.center_nm is None:
            raise SpecError(f"Panopticon cannot embed band {name!r} of {coll.id}: it has no centre wavelength "
                            f"({band.description}); select spectral bands only")
        else:
            out.append(float(band.center_nm))
    return tuple(out)


NOTES = f"""\
Default input: Sentinel-2 level-1C ({S2_COLLECTION}), all 13 bands, {IMAGE_SIZE} x {IMAGE_SIZE} px at \
{GSD_M:g} m (2.24 km), one median composite, as fMoW-Sentinel, one of Panopticon's pre-training sets. \
Chain: resize to {IMAGE_SIZE} (bilinear, antialiased), then per-band standardisation with the authors' \
fMoW-Sentinel statistics (DN). Any sensor: pass sensor=SensorSpec(...) with any collection of the band \
table. For Sentinel-2 L1C band subsets the chain keeps the authors' statistics of those bands; for every \
other sensor the default chain standardises each band over the ROI's valid pixels (zero mean, unit \
variance per image): the authors standardise with each training dataset's statistics, which do not \
exist for arbitrary inputs, so this is a deviation; pass preprocessing= with your own statistics to \
replace it. Multi-sensor requests (e.g. Sentinel-2 + Sentinel-1 on one grid; Panopticon fuses any \
channels): the default chain follows the first sensor, so put the SAR sensor first or pass \
preprocessing=[("resize", {{"size": {IMAGE_SIZE}}}), ("standardize", {{}})].
Channel ids (side input) from the band table, for the bands the batch holds, each in the collection \
of the sensor that delivered it: optical bands by centre wavelength in nm (the model floors to whole \
nm); SAR bands by polarisation, -1 VV, -2 VH, -3 HH, -4 HV (the ids for "either orbit": composites mix \
passes). Deviation: the band table holds rounded centre wavelengths; Panopticon was trained with the \
means of Gaussian fits to the spectral responses (its sentinel2.yaml), e.g. Sentinel-2 B2 492.99 vs \
490, B8 827.54 vs 842, B11 1613.86 vs 1610, B12 2203.62 vs 2190 nm (others within 1.5 nm); its \
2304-d sin-cos code of the wavelength changes in its high-frequency components for any such shift. \
Bands without a wavelength (QA, SCL, incidence angle) are refused before the network runs.
Outputs: pooled = the class token after the final LayerNorm (the model's output, as the authors' \
forward and torchgeo's); grid = the patch tokens after that LayerNorm (DINOv2's x_norm_patchtokens, \
768 x 16 x 16 at {IMAGE_SIZE} px). The position table is stored for 37 x 37 patches and resized to \
the input's grid with the authors' DINOv2 interpolation (bicubic by scale factor (16 + 0.1) / 37, no \
antialiasing), which the weights were trained with at {IMAGE_SIZE} px. torchgeo 0.8.1 resizes it at \
load time with antialiased bicubic to 16 x 16 instead, so torchgeo's outputs differ from these by \
that table; the equality test runs this network with torchgeo's resize (variant param \
pos_resize="torchgeo") and checks the authors' resize on its own.
Weights: the teacher checkpoint at the commit torchgeo 0.8.1 pins; sha256 as recorded by third \
parties who downloaded that URL (no Hub page with the digest could be read here; not recomputed); \
a pickled state dict, opened with weights_only=True, converted once to safetensors; DINOv2's \
mask_token (training only) is dropped by name, everything else loads strictly. CC-BY-4.0."""


class Panopticon(Embedder):
    card = ModelCard(
        id="panopticon",
        description=(
            "Panopticon (Waldmann, Shah et al., 2025): DINOv2 ViT-B/14 with a spectral patch embedding "
            "that fuses any number of channels by cross-attention over per-channel wavelength / SAR "
            "polarisation embeddings; any band set of any collection in the band table (default "
            "Sentinel-2 L1C, 13 bands)."
        ),
        input=InputSpec(S2_COLLECTION, S2_BANDS, GSD_M, image_size=IMAGE_SIZE, frames=1, composite="median"),
        variants=(BASE,),
        default_variant="base",
        preprocessing=_s2_chain(S2_BANDS),
        pooled="class token after the final LayerNorm (the model's output)",
        grid="patch tokens after the final LayerNorm (768 x 16 x 16)",
        side_inputs=("channel ids from the band table: wavelength (nm) per optical band, "
                     "polarisation id per SAR band",),
        license="code: Apache-2.0 (rs-embed); weights: CC-BY-4.0",
        citation=(
            "Waldmann, L., Shah, A., Wang, Y., Lehmann, N., Stewart, A. J., Xiong, Z., Zhu, X. X., Bauer, S., "
            "Chuang, J. Panopticon: Advancing Any-Sensor Foundation Models for Earth Observation. "
            "CVPR Workshops (EarthVision) 2025, arXiv:2503.10845"
        ),
        homepage="https://github.com/Panopticon-FM/panopticon",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.model: PanopticonNet | None = None

    @classmethod
    def default_chain(cls, sensor: SensorSpec) -> tuple[Any, ...]:
        """The authors' statistics for Sentinel-2 L1C bands; per-image standardisation for any other sensor."""
        if sensor.collection == S2_COLLECTION and all(b in FMOW_S2_MEAN for b in sensor.bands):
            return cls.card.preprocessing if tuple(sensor.bands) == S2_BANDS else _s2_chain(sensor.bands)
        return (_RESIZE, Step("standardize"))

    def load(self) -> None:
        from rs_embed_panopticon_model import build

        self.model = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        import torch

        check_single_frame(x, ctx, "Panopticon")
        ids = channel_ids(ctx.sensor, ctx.band_names)  # before any network compute
        if self.model is None:
            self.load()
        chn = torch.tensor(ids, dtype=torch.float32, device=x.device)
        pooled, grid = self.model(x[:, 0].float(), chn)  # type: ignore[misc]
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None)


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(Panopticon)
