"""Clay v1.5 (Clay Foundation, 2024) for rs-embed: one ViT-L/8 MAE encoder for many sensors, with metadata.

Clay's patch embedding is generated from each band's centre wavelength (a DOFA-style dynamic
embedding), its position table is scaled by the ground sampling distance, and acquisition time
and location enter as cyclic codes added to every patch token. Side inputs, per batch item, all
read from the request:

- wavelengths: per band, the value the authors' metadata.yaml lists for that sensor (micrometres;
  MODIS in nanometres and Sentinel-1 VV/VH as 3.5 / 4.0, as the authors trained it);
- GSD: the preprocessed grid's real ground sampling distance in metres;
- time: [sin, cos] of the ISO week and of the UTC hour of the frame's timestamp (none -> zeros,
  the authors' "no metadata" code, used for 20 % of the pre-training chips);
- location: [sin, cos] of the ROI centre's latitude and longitude.

Sensors: those the authors publish statistics for and the band table holds (SENSORS below). A band
Clay has no published wavelength and statistics for, a mix of sensors, or more than one frame is
refused before any fetch. The network (rs_embed_clay_model) is written here in torch with the
checkpoint's parameter names; the `claymodel` package is the test-time reference only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.collections import delivering_sensor
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput, check_single_frame, requested_bands
from rs_embed_core.errors import SpecError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.specs import SensorSpec

if TYPE_CHECKING:
    import torch

    from rs_embed_clay_model import ClayEncoder

__all__ = ["Clay", "SENSORS", "Sensor", "band_inputs", "metadata", "register_embedders"]

# made-with-clay/Clay, v1.5/clay-v1.5.ckpt (the file the authors' v1.5 model card links, via "main").
# Commit 70200ebc... is the Hub snapshot several independent users' caches hold the file under
# (models--made-with-clay--Clay/snapshots/<commit>/v1.5/clay-v1.5.ckpt, found with a code search).
# sha256 21432069...: recorded for that commit's file by two third-party projects (one states it
# equals the Hub API's x-linked-etag, i.e. the Git LFS pointer's oid). No Hub page could be read here
# and it is not recomputed (no Hub access): a mismatch fails on load. Licence: Apache-2.0 (the Hub
# repository's and the authors' model card's).
REPO_ID = "made-with-clay/Clay"
REVISION = "70200ebcccdf67bf2a0cb9984c77ddee26c10ed2"
WEIGHTS_LICENSE = "apache-2.0"
WEIGHTS = WeightsSpec(REPO_ID, REVISION, "v1.5/clay-v1.5.ckpt",
                      "21432069250b9b3f9a65ffd0071c5ad56b793247285ab0604edf7f531d4798d0", WEIGHTS_LICENSE)

IMAGE_SIZE, PATCH_SIZE, GSD_M = 256, 8, 10.0
# claymodel 1.5.0 model.py clay_mae_large (the v1.5 model card: "we utilized the clay_mae_large").
LARGE_PARAMS = {"embed_dim": 1024, "depth": 24, "heads": 16, "dim_head": 64, "mlp_ratio": 4.0,
                "patch_size": PATCH_SIZE}
LARGE = Variant("large", pooled_dim=1024, grid_dim=1024, weights=WEIGHTS, params=LARGE_PARAMS)


class Sensor(NamedTuple):
    """One platform of the authors' configs/metadata.yaml, keyed by the band table's band names."""

    platform: str  # metadata.yaml key
    bands: tuple[str, ...]  # band-table names, in metadata.yaml's band order
    mean: Mapping[str, float]
    std: Mapping[str, float]
    wavelength: Mapping[str, float]  # what the model was trained with (um; MODIS nm; S1 3.5 / 4.0)


def _sensor(platform: str, rows: Sequence[tuple[str, float, float, float]]) -> Sensor:
    names = tuple(r[0] for r in rows)
    return Sensor(platform, names, {r[0]: r[1] for r in rows}, {r[0]: r[2] for r in rows},
                  {r[0]: r[3] for r in rows})


# Clay-foundation/model configs/metadata.yaml: (band, mean, std, wavelength) per platform, in its order;
# the metadata names in comments. Statistics are on the DN the collections deliver (S2 L2A and MODIS
# reflectance x 1e4, Landsat C2 L2 raw DN) and, for Sentinel-1, on dB (datamodule.py converts the RTC
# chips to 10 log10 before normalising with these values).
S2_L2A = _sensor("sentinel-2-l2a", (
    ("B2", 1105.0, 1809.0, 0.493),  # blue
    ("B3", 1355.0, 1757.0, 0.56),  # green
    ("B4", 1552.0, 1888.0, 0.665),  # red
    ("B5", 1887.0, 1870.0, 0.704),  # rededge1
    ("B6", 2422.0, 1732.0, 0.74),  # rededge2
    ("B7", 2630.0, 1697.0, 0.783),  # rededge3
    ("B8", 2743.0, 1742.0, 0.842),  # nir
    ("B8A", 2785.0, 1648.0, 0.865),  # nir08
    ("B11", 2388.0, 1470.0, 1.61),  # swir16
    ("B12", 1835.0, 1379.0, 2.19),  # swir22
))
LANDSAT_L2 = _sensor("landsat-c2l2-sr", (
    ("SR_B4", 13705.0, 9578.0, 0.65),  # red
    ("SR_B3", 13310.0, 9408.0, 0.56),  # green
    ("SR_B2", 12474.0, 10144.0, 0.48),  # blue
    ("SR_B5", 17801.0, 8277.0, 0.86),  # nir08
    ("SR_B6", 14615.0, 5300.0, 1.6),  # swir16
    ("SR_B7", 12701.0, 4522.0, 2.2),  # swir22
))
S1_RTC = _sensor("sentinel-1-rtc", (
    ("VV", 0.123273, 1.492154, 3.5),  # vv
    ("VH", 0.027337, 0.122182, 4.0),  # vh
))
MODIS = _sensor("modis", tuple(
    (f"sur_refl_b{k:02d}", m, s, w) for k, m, s, w in (
        (1, 1072.471882, 1643.113109, 645.0), (2, 1624.482782, 1878.537956, 858.5),
        (3, 931.892947, 1449.024803, 469.0), (4, 1023.849436, 1538.677198, 555.0),
        (5, 1599.963956, 1763.359331, 1240.0), (6, 1404.271537, 1618.157770, 1640.0),
        (7, 1051.350204, 1396.227168, 2130.0),
    )
))
S2_COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
SENSORS: dict[str, Sensor] = {
    S2_COLLECTION: S2_L2A,
    "LANDSAT/LC08/C02/T1_L2": LANDSAT_L2,
    "LANDSAT/LC09/C02/T1_L2": LANDSAT_L2,
    "COPERNICUS/S1_GRD": S1_RTC,
    "MODIS/061/MOD09A1": MODIS,
}

_RESIZE = Step("resize", {"size": IMAGE_SIZE, "method": "bilinear", "antialias": True})
_FILL = Step("fill_invalid", {"value": 0.0})  # after normalising: the band mean


def _chain(sensor: Sensor, bands: Sequence[str]) -> tuple[Step, ...]:
    return (Step("normalize", {"mean": [sensor.mean[b] for b in bands], "std": [sensor.std[b] for b in bands]}),
            _FILL, _RESIZE)


NOTES = f"""\
Default input: Sentinel-2 level-2A ({S2_COLLECTION}), the 10 bands of the authors' metadata.yaml \
(B2 B3 B4 B5 B6 B7 B8 B8A B11 B12), {IMAGE_SIZE} x {IMAGE_SIZE} px at {GSD_M:g} m (the v1.5 training chip), \
one median composite. Chain: per-band mean/std of metadata.yaml on DN, invalid pixels set to 0 (the band \
mean), resize to {IMAGE_SIZE} (bilinear, antialiased; a no-op when the ROI is {IMAGE_SIZE} px at the \
sensor's GSD; the authors embed native-resolution chips and never resize).
Other sensors, each with its metadata.yaml statistics and wavelengths, any subset of its bands: Landsat 8/9 \
collection 2 level-2 (LANDSAT/LC0x/C02/T1_L2, SR_B2..SR_B7 raw DN, "landsat-c2l2-sr"), Sentinel-1 \
(COPERNICUS/S1_GRD VV/VH in dB, "sentinel-1-rtc"), MODIS (MODIS/061/MOD09A1 sur_refl_b01..b07, "modis"). \
Sentinel-1: the statistics (mean 0.12/0.03, std 1.49/0.12) are applied to dB values, as the authors' \
datamodule.py does (10 log10 of the RTC power, then these values); Earth Engine's GRD is not radiometrically \
terrain-flattened like the RTC chips Clay was trained on (a deviation of the data, not of the chain). \
NAIP and LINZ (also in metadata.yaml) have no collection in the band table; Landsat level-1 DN and other \
collections are refused: no published statistics for them.
Wavelength side input: the metadata.yaml value of each band, in the units the model was trained with \
(micrometres; MODIS in nanometres, e.g. 645.0; Sentinel-1 VV 3.5, VH 4.0: codes, not physical wavelengths).
GSD side input: the preprocessed grid's real GSD in metres (geometric mean of x and y; after the resize), \
as the authors' notebooks pass the chip's GSD. It scales the frequencies of the 2D position table.
Time side input: [sin, cos] of ISO week x 2 pi / 52 and of the UTC hour x 2 pi / 24 of the frame's \
timestamp (a composite's stamp: its hour is the provider's, not one acquisition's); no timestamp -> zeros \
(the pre-training's "no metadata" code). Location: [sin, cos] of the ROI centre's latitude and longitude \
in radians (tiles of a tiled ROI share it).
Deviations: the reference takes one GSD per batch; here each item uses its own (a batch equals its items). \
Outputs: pooled = the class token after the final LayerNorm (the authors' embedding); grid = the patch \
tokens after that norm (1024 x 32 x 32, row-major from the north-west). No masking (mask ratio 0).
Weights: made-with-clay/Clay v1.5/clay-v1.5.ckpt (a Lightning checkpoint) at a commit and sha256 that \
third parties recorded for it (not recomputed here: no Hub access); opened with weights_only=True and \
converted once to safetensors; `model.encoder.` stripped, the MAE decoder (model.decoder), the SAM \
distillation teacher (model.teacher) and its projection (model.proj) dropped by name. Only the v1.5 large \
model is served: the Hub's older v1 base file is a different training run without a pinned digest here. \
Licence Apache-2.0."""


def _sensor_of(collection: str) -> Sensor:
    sensor = SENSORS.get(collection)
    if sensor is None:
        raise SpecError(f"Clay has published statistics and wavelengths for {sorted(SENSORS)}; "
                        f"collection {collection!r} is not one of them")
    return sensor


def band_inputs(sensors: SensorSpec | Sequence[SensorSpec], bands: Sequence[str]) -> tuple[Sensor, tuple[float, ...]]:
    """The one Clay sensor the bands come from and each band's wavelength as trained.

    Raises SpecError / UnknownBandError naming the band or sensor before any network work.
    """
    if not bands:
        raise SpecError("Clay needs at least one band")
    found: list[tuple[Sensor, str]] = []
    for name in bands:
        collection = delivering_sensor(sensors, name, "Clay").collection
        sensor = _sensor_of(collection)
        if name not in sensor.wavelength:
            raise SpecError(f"Clay has no published wavelength and statistics for band {name!r} of {collection}; "
                            f"its bands are {list(sensor.bands)}")
        found.append((sensor, name))
    platforms = {s.platform for s, _ in found}
    if len(platforms) > 1:
        raise SpecError(f"Clay embeds one sensor at a time; the request mixes {sorted(platforms)}")
    return found[0][0], tuple(s.wavelength[n] for s, n in found)


def metadata(ctx: BatchContext) -> tuple[list[float], list[list[float]]]:
    """Per item: GSD in metres, and [sin/cos week, sin/cos hour, sin/cos lat, sin/cos lon]."""
    from rs_embed_core.nn.cyclic import latlon_code, week_hour_code

    if not (len(ctx.grids) == len(ctx.centers_lonlat) == len(ctx.times)):
        raise SpecError(f"Clay needs a grid, a centre and times per item: got {len(ctx.grids)}, "
                        f"{len(ctx.centers_lonlat)}, {len(ctx.times)}")
    gsds, rows = [], []
    for grid, (lon, lat), times in zip(ctx.grids, ctx.centers_lonlat, ctx.times):
        rx, ry = float(grid.res), float(grid.yres)
        if not (rx > 0 and ry > 0 and math.isfinite(rx * ry)):
            raise SpecError(f"Clay needs a positive ground sampling distance, the input grid has {rx!r}, {ry!r}")
        t = times[0] if times else None
        gsds.append(math.sqrt(rx * ry))
        rows.append([*(week_hour_code(t) if t is not None else (0.0,) * 4), *latlon_code(float(lat), float(lon))])
    return gsds, rows


class Clay(Embedder):
    card = ModelCard(
        id="clay",
        aliases=("clay_v15",),
        description=(
            "Clay v1.5 (Clay Foundation): MAE ViT-L/8 whose patch embedding is generated from each band's "
            "wavelength, with a GSD-scaled position table and week/hour + lat/lon codes; pre-trained on "
            "Sentinel-2, Landsat, Sentinel-1, NAIP, LINZ and MODIS. Default Sentinel-2 L2A, 10 bands, 256 px."
        ),
        input=InputSpec(S2_COLLECTION, S2_L2A.bands, GSD_M, image_size=IMAGE_SIZE, frames=1, composite="median"),
        variants=(LARGE,),
        default_variant="large",
        preprocessing=_chain(S2_L2A, S2_L2A.bands),
        pooled="class token after the final LayerNorm (the authors' embedding)",
        grid="patch tokens after the final LayerNorm (1024 x 32 x 32)",
        side_inputs=(
            "wavelength per band (the authors' metadata.yaml values for the sensor)",
            "GSD: the preprocessed grid's ground sampling distance (m)",
            "time: ISO week and UTC hour of the frame timestamp as sin/cos (none -> zeros)",
            "location: ROI centre latitude/longitude as sin/cos",
        ),
        license="code: Apache-2.0 (rs-embed); weights: Apache-2.0",
        citation=(
            "Clay Foundation. Clay Foundation Model v1.5: an open source AI model for Earth. "
            "https://clay-foundation.github.io/model/ (2024)"
        ),
        homepage="https://github.com/Clay-foundation/model",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.model: ClayEncoder | None = None

    @classmethod
    def default_chain(cls, sensor: SensorSpec) -> tuple[Any, ...]:
        """The authors' statistics of the sensor, for the requested bands (refused if it has none)."""
        clay_sensor, _ = band_inputs(sensor, tuple(sensor.bands))
        return _chain(clay_sensor, tuple(sensor.bands))

    @classmethod
    def check_request(cls, variant: Variant, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        """One composited frame of one Clay sensor, every band with a published wavelength: before any fetch."""
        for s in sensors:
            if s.composite == "none" or s.frames != 1:
                raise SpecError(f"Clay takes one composited frame per item; sensor {s.collection} asks for "
                                f"composite={s.composite!r}, frames={s.frames}")
        bands = requested_bands(sensors, steps)
        band_inputs(sensors, bands)

    def load(self) -> None:
        from rs_embed_clay_model import build

        self.model = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        import torch

        check_single_frame(x, ctx, "Clay")
        _, waves = band_inputs(ctx.sensor, ctx.band_names)  # side inputs before any network compute
        gsds, meta = metadata(ctx)
        if self.model is None:
            self.load()
        dev = x.device
        pooled, grid = self.model(  # type: ignore[misc]
            x[:, 0].float(), torch.tensor(waves, dtype=torch.float32, device=dev),
            torch.tensor(gsds, dtype=torch.float32, device=dev), torch.tensor(meta, dtype=torch.float32, device=dev),
        )
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None,
                           extra={"gsd_m": gsds, "wavelengths": [list(waves)] * len(gsds)})  # per item


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(Clay)
