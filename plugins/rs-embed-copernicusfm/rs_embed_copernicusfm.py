"""Copernicus-FM (Wang et al., ICCV 2025) for rs-embed: one ViT-B/16 for any spectral sensor, with metadata.

Copernicus-FM extends DOFA: its patch-embedding kernel is generated from each band's centre
wavelength *and* bandwidth, and location, acquisition time and patch area enter as Fourier-coded
tokens added to the position table. Side inputs, per batch item, all read from the request:

- spectral: (wavelength, bandwidth) in nm per band, from the band table (rs_embed_core.collections)
  for the bands the batch holds; for the sensors Copernicus-FM was pre-trained on, the values of its
  pre-training (Sentinel-2 MSI bands: the authors' rounded table; Sentinel-1 SAR: 5e7 nm, 1e9 nm);
- location: the ROI centre (lon, lat in degrees);
- time: the frame's timestamp as whole days since 1970-01-01 (unknown -> the learned time token);
- area: ground area of one 16 x 16 patch token in km^2, from the preprocessed grid's real GSD.

The network (rs_embed_copernicusfm_model) is written here in torch with the parameter names of
torchgeo's checkpoint, which loads strictly; torchgeo is the test-time reference only.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any, Sequence

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.collections import band_entry, delivering_sensor
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput, check_single_frame, requested_bands
from rs_embed_core.errors import SpecError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.specs import SensorSpec

if TYPE_CHECKING:
    import torch

    from rs_embed_copernicusfm_model import CopernicusFM as CopernicusFMNet

__all__ = ["CopernicusFM", "metadata", "spectral_inputs", "register_embedders"]

# torchgeo 0.8.1 CopernicusFM_Base_Weights.CopernicusFM_ViT:
# https://huggingface.co/torchgeo/copernicus-fm/resolve/f395812cc990ba25a451dbb9c9e6d95c8482947e/
#   CopernicusFM_ViT_base_varlang-085350e4.pth
# sha256 085350e4...6411d6bee (557,931,327 bytes): stated as "Hugging Face's LFS hash for
# torchgeo/copernicus-fm @ f395812" by a third-party container recipe (bradleylab copernicus-fm image,
# stage_weights.py / README, found with a code search), which checks it on download; it starts with
# the 085350e4 torchgeo put in the file name. No Hub page with the digest could be read here and it is
# not recomputed (no Hub access): a mismatch fails on load. Licence: CC-BY-4.0 (the authors' README,
# zhu-xlab/Copernicus-FM: "The model weights are licensed under the CC-BY-4.0 license").
REPO_ID = "torchgeo/copernicus-fm"
REVISION = "f395812cc990ba25a451dbb9c9e6d95c8482947e"
WEIGHTS_LICENSE = "cc-by-4.0"
WEIGHTS = WeightsSpec(REPO_ID, REVISION, "CopernicusFM_ViT_base_varlang-085350e4.pth",
                      "085350e4fa0ebc6047a501aed1307394c4fcc23c013dd026db65af06411d6bee", WEIGHTS_LICENSE)

IMAGE_SIZE, PATCH_SIZE, GSD_M = 224, 16, 10.0
# The authors' vit_base_patch16 (model_vit.py): ViT-B/16, mlp_ratio 4, LayerNorm eps 1e-6. torchgeo's
# copernicusfm_base builds its LayerNorms with torch's default eps 1e-5 instead (see NOTES).
BASE_PARAMS = {"embed_dim": 768, "depth": 12, "heads": 12, "patch_size": PATCH_SIZE, "image_size": IMAGE_SIZE,
               "mlp_ratio": 4.0, "norm_eps": 1e-6}

# Pre-training inputs, zhu-xlab/Copernicus-FM Copernicus-FM/src/engine_pretrain.py (WV, BW; the same
# values in every Copernicus-Bench config, e.g. cobench_eurosat_s2.yaml / cobench_eurosat_s1.yaml) and
# main_pretrain.py (S2C_MEAN/STD for "s2_toa", 13 bands in this order; S1_MEAN/STD for "s1_grd", VV, VH, dB).
S2_COLLECTION = "COPERNICUS/S2_HARMONIZED"
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S2_PRETRAIN_NM = dict(zip(S2_BANDS, zip(
    (440.0, 490.0, 560.0, 665.0, 705.0, 740.0, 783.0, 842.0, 860.0, 940.0, 1370.0, 1610.0, 2190.0),
    (20.0, 65.0, 35.0, 30.0, 15.0, 15.0, 20.0, 115.0, 20.0, 20.0, 30.0, 90.0, 180.0))))
S2_MEAN = dict(zip(S2_BANDS, (1612.9, 1397.6, 1322.3, 1373.1, 1561.0, 2108.4, 2390.7, 2318.7, 2581.0, 837.7, 22.0,
                              2195.2, 1537.4)))
S2_STD = dict(zip(S2_BANDS, (791.0, 854.3, 878.7, 1144.9, 1127.5, 1164.2, 1276.0, 1249.5, 1345.9, 577.5, 47.5,
                             1340.0, 1142.9)))
S1_COLLECTION = "COPERNICUS/S1_GRD"
S1_MEAN = {"VV": -12.59, "VH": -20.26}
S1_STD = {"VV": 5.26, "VH": 5.91}
SAR_PRETRAIN_NM = (5e7, 1e9)  # every SAR band: "wavelength" 5 cm, "bandwidth" 1 m, as pre-trained for Sentinel-1
# Collections whose bands are Sentinel-2 MSI bands (same names): they take the pre-training values.
MSI_COLLECTIONS = frozenset({"COPERNICUS/S2_HARMONIZED", "COPERNICUS/S2_SR_HARMONIZED", "NASA/HLS/HLSS30/v002"})
EPOCH = dt.date(1970, 1, 1)

BASE = Variant("base", pooled_dim=768, grid_dim=768, weights=WEIGHTS, params=BASE_PARAMS)

_RESIZE = Step("resize", {"size": IMAGE_SIZE, "method": "bilinear", "antialias": True})
_FILL = Step("fill_invalid", {"value": 0.0})  # after normalising: the band mean, as the original's NaN -> 0


def _stats_chain(mean: dict[str, float], std: dict[str, float], bands: Sequence[str]) -> tuple[Step, ...]:
    return (Step("normalize", {"mean": [mean[b] for b in bands], "std": [std[b] for b in bands]}), _FILL, _RESIZE)


NOTES = f"""\
Default input: Sentinel-2 level-1C ({S2_COLLECTION}, top of atmosphere, Copernicus-Pretrain's "s2_toa"), \
all 13 bands in the pre-training order, {IMAGE_SIZE} x {IMAGE_SIZE} px at {GSD_M:g} m, one median composite. \
Chain: per-band mean/std of the authors' pre-training (main_pretrain.py S2C_MEAN/S2C_STD, on DN), invalid \
pixels set to 0 (the band mean; the original maps NaN/inf to 0 after normalising), resize to {IMAGE_SIZE} \
(bilinear, antialiased; normalising first is equivalent, the steps are affine). Sentinel-1 \
({S1_COLLECTION}, VV/VH in dB): the authors' S1 statistics (S1_MEAN/S1_STD). Any other sensor: each band \
standardised over the ROI's valid pixels (the authors standardise every dataset with its own statistics, \
which do not exist for arbitrary inputs: a deviation; pass preprocessing= with your own statistics).
Spectral side input (wavelength, bandwidth in nm, per band of the batch, each from the collection of the \
sensor that delivered it): read from the band table, except for the sensors Copernicus-FM was pre-trained \
on, which take the values it was trained with: Sentinel-2 MSI bands (S2 L1C/L2A, HLS S30) the authors' \
rounded table (e.g. B1 440/20, B8 842/115, B8A 860/20, B12 2190/180; the band table's 443/21, 842/106, \
865/21, 2190/175 differ by a few nm, and the codes' 1 nm periods would turn that into noise); SAR bands \
(Sentinel-1 VV/VH/HH/HV) 5e7 nm and 1e9 nm, the authors' Sentinel-1 encoding, in place of the C-band \
wavelength the band table holds (5.55e7 nm). Other sensors use the band table's centre wavelength and \
bandwidth; a band without one (QA, SCL, incidence angle) or outside 100..1e9 nm / 1..1e9 nm is refused \
before any fetch.
Metadata side inputs, per item: lon/lat = the ROI centre (degrees; tiles of a tiled ROI share it); \
time = the frame's timestamp as whole days since 1970-01-01 (the composite's stamp; none -> the learned \
time token); area = ground area of one {PATCH_SIZE} x {PATCH_SIZE} patch token in km^2 = ({PATCH_SIZE} x \
res_x / 1000) x ({PATCH_SIZE} x res_y / 1000) with the real GSD of the preprocessed input (engine_pretrain.py \
AREA: (kernel x GSD / 1000)^2, 0.0256 km^2 at 10 m). Deviation: the original replaces a value by its \
learned token for the whole batch when any item lacks it; here per item, so a batch equals its items.
Network: ViT-B/16 with LayerNorm eps 1e-6 as the authors' model_vit.py (torchgeo 0.8.1's copernicusfm_base \
uses torch's default 1e-5; the equality test runs torchgeo's class with the authors' eps, and with 1e-5 \
against this network built with 1e-5). The patch convolution pads by 1 pixel (DOFA's choice), so each \
token's window starts one pixel up-left of its cell. The checkpoint's variable-mode hypernetwork \
(patch_embed_variable: language-embedding input for Sentinel-5P / DEM variables) is dropped by name.
Outputs: the checkpoint has no trained final norm. pooled = mean of the patch tokens after the last block, \
then LayerNorm without trained affine (eps 1e-6): the authors' benchmark feature (fc_norm at its initial \
identity affine) and torchgeo's forward. grid = those patch tokens, unnormalised (768 x 14 x 14).
Weights: torchgeo/copernicus-fm at the commit torchgeo 0.8.1 pins; full sha256 as a third party recorded \
for that commit's file (its first 8 hex digits are torchgeo's file-name suffix), not recomputed here (no \
Hub access); a pickle opened with weights_only=True and converted once to safetensors. Licence CC-BY-4.0."""


def _band_code(collection: str, name: str) -> tuple[float, float]:
    coll, band = band_entry(collection, name, "Copernicus-FM")
    if band.center_nm is None:
        raise SpecError(f"Copernicus-FM cannot embed band {name!r} of {collection}: it has no wavelength "
                        f"({band.description}); select spectral or SAR bands only")
    if coll.kind == "sar":
        return SAR_PRETRAIN_NM
    if collection in MSI_COLLECTIONS and name in S2_PRETRAIN_NM:
        return S2_PRETRAIN_NM[name]
    if band.bandwidth_nm is None:
        raise SpecError(f"Copernicus-FM needs the bandwidth of band {name!r} of {collection}; the band table has none")
    wl, bw = float(band.center_nm), float(band.bandwidth_nm)
    if not (100.0 <= wl <= 1e9 and 1.0 <= bw <= 1e9):
        raise SpecError(f"Copernicus-FM encodes wavelengths 100..1e9 nm and bandwidths 1..1e9 nm; band {name!r} of "
                        f"{collection} has {wl:g} / {bw:g} nm")
    return wl, bw


def spectral_inputs(sensor: SensorSpec | Sequence[SensorSpec],
                    bands: Sequence[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(wavelengths, bandwidths) in nm for `bands`, each from the collection of the sensor that delivered it.

    Raises SpecError / UnknownBandError naming the band before any network work.
    """
    codes = [_band_code(delivering_sensor(sensor, name, "Copernicus-FM").collection, name) for name in bands]
    return tuple(c[0] for c in codes), tuple(c[1] for c in codes)


def _days(t: Any) -> float:
    if t is None:
        return math.nan
    day = t.date() if isinstance(t, dt.datetime) else t
    return float((day - EPOCH).days)


def metadata(ctx: BatchContext, patch_size: int = PATCH_SIZE) -> list[list[float]]:
    """Per item [lon deg, lat deg, whole days since 1970-01-01 (NaN: unknown), patch-token area km^2]."""
    if not (len(ctx.grids) == len(ctx.centers_lonlat) == len(ctx.times)):
        raise SpecError(f"Copernicus-FM needs a grid, a centre and times per item: got {len(ctx.grids)}, "
                        f"{len(ctx.centers_lonlat)}, {len(ctx.times)}")
    rows = []
    for grid, (lon, lat), times in zip(ctx.grids, ctx.centers_lonlat, ctx.times):
        rx, ry = float(grid.res), float(grid.yres)
        if not (rx > 0 and ry > 0 and math.isfinite(rx * ry)):
            raise SpecError(f"Copernicus-FM needs a positive ground sampling distance, the input grid has {rx!r}, {ry!r}")
        if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
            raise SpecError(f"Copernicus-FM needs the centre in degrees (lon -180..180, lat -90..90), got {(lon, lat)}")
        area = (patch_size * rx / 1000.0) * (patch_size * ry / 1000.0)
        rows.append([float(lon), float(lat), _days(times[0] if times else None), area])
    return rows


class CopernicusFM(Embedder):
    card = ModelCard(
        id="copernicusfm",
        aliases=("copernicus_fm",),
        description=(
            "Copernicus-FM (Wang et al., ICCV 2025): DOFA-style ViT-B/16 whose patch embedding is generated "
            "from each band's wavelength and bandwidth, with location, time and patch-area metadata; "
            "pre-trained on Copernicus-Pretrain (Sentinel-1/2/3/5P, DEM). Any spectral or SAR band set of the "
            "band table (default Sentinel-2 L1C, 13 bands)."
        ),
        input=InputSpec(S2_COLLECTION, S2_BANDS, GSD_M, image_size=IMAGE_SIZE, frames=1, composite="median"),
        variants=(BASE,),
        default_variant="base",
        preprocessing=_stats_chain(S2_MEAN, S2_STD, S2_BANDS),
        pooled="LayerNorm (no trained affine) of the mean patch token (the authors' benchmark feature)",
        grid="patch tokens after the last transformer block, unnormalised (768 x 14 x 14)",
        side_inputs=(
            "wavelength and bandwidth per band (band table; pre-training values for Sentinel-2 MSI and SAR)",
            "location: ROI centre lon/lat",
            "time: frame timestamp, days since 1970-01-01",
            "area: patch-token ground area (km^2) from the preprocessed grid's GSD",
        ),
        license="code: Apache-2.0 (rs-embed); weights: CC-BY-4.0",
        citation=(
            "Wang, Y., Xiong, Z., Liu, C., Stewart, A. J., Dujardin, T., Bountos, N. I., Zavras, A., Gerken, F., "
            "Papoutsis, I., Leal-Taixé, L., Zhu, X. X. Towards a Unified Copernicus Foundation Model for Earth "
            "Vision. ICCV 2025, arXiv:2503.11849"
        ),
        homepage="https://github.com/zhu-xlab/Copernicus-FM",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.model: CopernicusFMNet | None = None

    @classmethod
    def default_chain(cls, sensor: SensorSpec) -> tuple[Any, ...]:
        """The authors' statistics for Sentinel-2 L1C and Sentinel-1 bands; per-image standardisation otherwise."""
        bands = tuple(sensor.bands)
        if sensor.collection == S2_COLLECTION and all(b in S2_MEAN for b in bands):
            return cls.card.preprocessing if bands == S2_BANDS else _stats_chain(S2_MEAN, S2_STD, bands)
        if sensor.collection == S1_COLLECTION and all(b in S1_MEAN for b in bands):
            return _stats_chain(S1_MEAN, S1_STD, bands)
        return (Step("standardize"), _FILL, _RESIZE)

    @classmethod
    def check_request(cls, variant: Variant, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        """Every band the model will see needs a wavelength and a bandwidth: refuse before any fetch."""
        bands = requested_bands(sensors, steps)
        spectral_inputs(sensors, bands)

    def load(self) -> None:
        from rs_embed_copernicusfm_model import build

        self.model = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        import torch

        check_single_frame(x, ctx, "Copernicus-FM")
        waves, widths = spectral_inputs(ctx.sensor, ctx.band_names)  # side inputs before any network compute
        meta = metadata(ctx, int(self.variant.params["patch_size"]))
        if self.model is None:
            self.load()
        dev = x.device
        pooled, grid = self.model(  # type: ignore[misc]
            x[:, 0].float(), torch.tensor(waves, dtype=torch.float32, device=dev),
            torch.tensor(widths, dtype=torch.float32, device=dev), torch.tensor(meta, dtype=torch.float32, device=dev),
        )
        extra = {"days_since_1970": [None if math.isnan(m[2]) else m[2] for m in meta],
                 "patch_area_km2": [m[3] for m in meta]}
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None, extra=extra)


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(CopernicusFM)
