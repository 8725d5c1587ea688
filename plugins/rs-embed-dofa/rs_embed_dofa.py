"""DOFA (Xiong et al., 2024) for rs-embed: one encoder for any band set, conditioned on wavelengths.

DOFA ("Dynamic One-For-All") generates its patch-embedding kernel from each input band's centre
wavelength, so the same weights embed Sentinel-2, Landsat, Sentinel-1 or any band subset. The
wavelengths are a side input read from the band table (`rs_embed_core.collections`) for the bands
the batch actually holds, in their order. The network (rs_embed_dofa_model) is written here in torch
with the parameter names of the torchgeo checkpoints, which load strictly; torchgeo is the test-time
reference only.

- `DOFA` (model id "dofa"): variants "base" (ViT-B/16, default) and "large" (ViT-L/16).
  pooled = torchgeo's `forward_features`: LayerNorm (no trained affine) of the mean patch token;
  grid = the patch tokens after the last block (D x 14 x 14).
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

    from rs_embed_dofa_model import DOFA as DOFANet

__all__ = ["DOFA", "batch_wavelengths", "wavelengths_um", "register_embedders"]

# torchgeo 0.8.1 DOFABase16_Weights / DOFALarge16_Weights point at
# https://hf.co/torchgeo/dofa/resolve/b8db318b64a90b9e085ec04ba8851233c5893666/<file>. The full sha256
# values are the Git LFS oids of that very commit ("Upload 2 files", huggingface.co/torchgeo/dofa/commit/
# b8db318...), whose first 8 hex digits are the suffixes torchgeo put in the file names; sizes
# 445,295,690 and 1,348,512,262 bytes. Not recomputed here (no Hub access); a mismatch fails on load.
# Licence: cc-by-4.0, the licence of the torchgeo/dofa Hub repository (and of the authors' earthflow/DOFA).
REPO_ID = "torchgeo/dofa"
REVISION = "b8db318b64a90b9e085ec04ba8851233c5893666"
WEIGHTS_LICENSE = "cc-by-4.0"

# The authors' Sentinel-2 input: 9 bands in this order with these statistics (DOFA README and
# normalize_dataset.py, zhu-xlab/DOFA: "r,g,b,b05,b06,b07,b08,b11,b12", S2_MEAN / S2_STD), computed on
# SatlasPretrain's 8-bit Sentinel-2 L1C images, which DOFA was pre-trained on.
S2_BANDS = ("B4", "B3", "B2", "B5", "B6", "B7", "B8", "B11", "B12")
S2_MEAN = (114.1099739, 114.81779093, 126.63977424, 84.33539309, 97.84789168, 103.94461911,
           101.435633, 72.32804172, 56.66528851)
S2_STD = (77.84352553, 69.96844919, 67.42465279, 64.57022983, 61.72545487, 61.34187099,
          60.29744676, 47.88519516, 42.55886798)
# SatlasPretrain's 8-bit encoding (satlaspretrain_models Normalization.md): red/green/blue from ESA's
# TCI image; B05..B12 as DN // 32 clipped to 255, i.e. DN 0..8160 -> 0..255. ESA's TCI stretch is
# not published as a formula; DN 0..2500 -> 0..255 is the emulation a DOFA GEO-Bench evaluation
# wrapper uses (NormDOFATransform), followed here.
TCI_HIGH_DN, SATLAS_HIGH_DN = 2500.0, 8160.0
S2_HIGH = (TCI_HIGH_DN,) * 3 + (SATLAS_HIGH_DN,) * 6

SPEED_OF_LIGHT = 299_792_458.0  # m/s


def _config(embed_dim: int, depth: int, heads: int) -> dict[str, Any]:
    # torchgeo dofa_{base,large}_patch16_224: patch 16, image 224, mlp_ratio 4, LayerNorm eps 1e-6
    return {"embed_dim": embed_dim, "depth": depth, "heads": heads, "patch_size": 16, "image_size": 224,
            "mlp_ratio": 4.0, "norm_eps": 1e-6}


BASE = Variant(
    "base", pooled_dim=768, grid_dim=768,
    weights=WeightsSpec(REPO_ID, REVISION, "dofa_base_patch16_224-a0275954.pth",
                        "a027595480a4b0641d0be330d876034439bcb6ead8b9ce10f4949227426856c6", WEIGHTS_LICENSE),
    params=_config(768, 12, 12),
)
LARGE = Variant(
    "large", pooled_dim=1024, grid_dim=1024,
    weights=WeightsSpec(REPO_ID, REVISION, "dofa_large_patch16_224-0ff904d3.pth",
                        "0ff904d35418b0ae26e15812f2669f906a047f94517823bfbc3824eac9328291", WEIGHTS_LICENSE),
    params=_config(1024, 24, 16),
)

NOTES = """\
Default input: Sentinel-2 level-1C (COPERNICUS/S2_HARMONIZED, top-of-atmosphere, as SatlasPretrain's \
Sentinel-2 that DOFA was pre-trained on) bands B4, B3, B2, B5, B6, B7, B8, B11, B12 at 10 m, one median \
composite. Chain: DN -> 8-bit scale as SatlasPretrain stored it (B4/B3/B2: DN 0..2500, emulating ESA's \
TCI image; the others DN 0..8160, Satlas' DN // 32), resize to 224 (bilinear, antialiased), then the \
authors' per-band mean/std on that 0..255 scale. Deviations: values are not floored to integers as \
Satlas' uint8 PNGs were (at most 1 grey level, < 0.025 std); ESA's TCI stretch is emulated, not \
reproduced; Level-2A input (S2_SR_HARMONIZED) works with the same chain but is not what DOFA saw.
Any sensor: pass sensor=SensorSpec(...) with any collection of rs_embed_core.collections and \
preprocessing= for it (the default chain is Sentinel-2's and refuses other bands). Wavelengths are \
read from the band table for the bands the batch holds, in their order, each in the collection of \
the sensor that delivered it (a multi-sensor request such as Sentinel-2 + Sentinel-1 mixes them): \
optical bands by centre wavelength (um). SAR bands by the radar's centre frequency in GHz computed from the table's \
wavelength (5.405 for Sentinel-1 C band): DOFA's authors pass that number in the wavelength slot \
for Sentinel-1 and the model was trained with it. A band without a wavelength (QA, class bands) or a \
collection missing from the table is a SpecError before the network runs. Only the Sentinel-2 \
statistics are the authors'; for other sensors normalise with statistics of your own data.
Outputs: the released encoder has no trained final norm (torchgeo's files drop the MAE `norm`). \
pooled = torchgeo's forward_features: mean of the patch tokens after the last block, then a \
LayerNorm without trained affine (eps 1e-6). grid = those patch tokens unnormalised (D x 14 x 14). \
The patch convolution pads by 1 pixel (DOFA's choice), so each token's 16x16 window starts one \
input pixel up-left of its grid cell (1/16 of a cell).
Weights: torchgeo/dofa at the commit torchgeo 0.8.1 pins; full sha256 from that commit's Git LFS \
pointers, not recomputed here (no Hub access). Licence cc-by-4.0."""


def wavelengths_um(collection: str, bands: Sequence[str]) -> tuple[float, ...]:
    """DOFA's wavelength input for `bands` of `collection`: centre wavelength in um (SAR: GHz, see notes).

    Raises SpecError / UnknownBandError naming the collection and band when a value is unknown.
    """
    out = []
    for name in bands:
        coll, band = band_entry(collection, name, "DOFA")
        if band.center_nm is None:
            raise SpecError(f"DOFA cannot embed band {name!r} of {collection}: it has no centre wavelength "
                            f"({band.description}); select spectral bands only")
        if coll.kind == "sar":  # DOFA's Sentinel-1 convention: the centre frequency in GHz
            out.append(round(SPEED_OF_LIGHT / (band.center_nm * 1e-9) / 1e9, 6))
        else:
            out.append(band.center_nm / 1000.0)
    return tuple(out)


def batch_wavelengths(sensor: SensorSpec | Sequence[SensorSpec], bands: Sequence[str]) -> tuple[float, ...]:
    """Wavelengths of the batch's bands, each looked up in the collection of the sensor that delivered it."""
    return tuple(w for name in bands
                 for w in wavelengths_um(delivering_sensor(sensor, name, "DOFA").collection, (name,)))


class DOFA(Embedder):
    card = ModelCard(
        id="dofa",
        description=(
            "DOFA (Xiong et al., 2024): a ViT whose patch embedding is generated from each band's "
            "wavelength, pre-trained on Sentinel-1/2, NAIP, Gaofen and hyperspectral images; any band set "
            "of any collection in the band table (default Sentinel-2 L1C, 9 bands)."
        ),
        input=InputSpec("COPERNICUS/S2_HARMONIZED", S2_BANDS, 10.0, image_size=224, frames=1, composite="median"),
        variants=(BASE, LARGE),
        default_variant="base",
        preprocessing=(
            Step("select_bands", {"bands": list(S2_BANDS)}),
            Step("to_8bit", {"low": 0.0, "high": list(S2_HIGH), "round": False}),
            Step("resize", {"size": 224, "method": "bilinear", "antialias": True}),
            Step("normalize", {"mean": list(S2_MEAN), "std": list(S2_STD)}),
        ),
        pooled="LayerNorm (no trained affine) of the mean patch token, as torchgeo's DOFA.forward_features",
        grid="patch tokens after the last transformer block, unnormalised (D x 14 x 14)",
        side_inputs=("wavelengths (from the band table, per band of the batch)",),
        license="code: Apache-2.0 (rs-embed); weights: cc-by-4.0",
        citation=(
            "Xiong, Z., Wang, Y., Zhang, F., Stewart, A. J., Hanna, J., Borth, D., Papoutsis, I., Le Saux, B., "
            "Camps-Valls, G., Zhu, X. X. Neural Plasticity-Inspired Multimodal Foundation Model for Earth "
            "Observation. arXiv:2403.15356, 2024"
        ),
        homepage="https://github.com/zhu-xlab/DOFA",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.model: DOFANet | None = None

    def load(self) -> None:
        from rs_embed_dofa_model import build

        self.model = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        import torch

        check_single_frame(x, ctx, "DOFA")
        waves = batch_wavelengths(ctx.sensor, ctx.band_names)  # before any network compute
        if self.model is None:
            self.load()
        wl = torch.tensor(waves, dtype=torch.float32, device=x.device)
        pooled, grid = self.model(x[:, 0].float(), wl)  # type: ignore[misc]
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None)


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(DOFA)
