"""Prithvi-EO-2.0 (IBM, NASA, Jülich; Szwarcman et al. 2024, arXiv:2412.02732) for rs-embed.

A ViT masked autoencoder pre-trained on time series of Harmonized Landsat Sentinel-2 (HLS)
surface reflectance at 30 m: six bands, T frames, 3D (tubelet 1) patch embedding and 3D sin-cos
positions; the TL variants add each frame's (year, day of year) and the chip's (lat, lon) as
learned-weight sin-cos codes. The encoder is rebuilt in torch from `rs_embed_core.nn` with the
checkpoints' parameter names (terratorch 1.2.11 is the test-time reference, never a run-time
dependency).

- `Prithvi` (model id "prithvi", alias "prithvi_eo_v2_s2_6b"): T = 4 median composites over equal
  bins of the window; pooled = mean of the patch tokens over time and space (class token
  excluded); grid = the per-frame token grids averaged over time, georeferenced
  (`EmbedOutput.extra["frame_grids"]` keeps T).
- `inputs_for(collection)`: the sensor and chain for Landsat / HLS instead of Sentinel-2.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import numpy as np

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.collections import known_collection
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput
from rs_embed_core.errors import SpecError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.specs import SensorSpec

if TYPE_CHECKING:
    import torch

    from rs_embed_prithvi_model import PrithviViT

__all__ = ["Prithvi", "inputs_for", "register_embedders"]

# HLS v2 band roles in the model's channel order: Blue, Green, Red, Narrow NIR, SWIR 1, SWIR 2.
S2_BANDS = ("B2", "B3", "B4", "B8A", "B11", "B12")  # Sentinel-2 MSI (and HLS S30) names
OLI_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7")  # Landsat 8/9 OLI (and HLS L30) names
# Per-band mean / std of HLS reflectance x 10000 the model was pre-trained with: "mean"/"std" of
# config.json in every Prithvi-EO-2.0 Hugging Face repository (e.g. Prithvi-EO-2.0-300M at
# fc2d225b), identical to terratorch 1.2.11's PRITHVI_V2_MEAN / PRITHVI_V2_STD (checked).
MEAN = (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
STD = (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)
IMG_SIZE = 224
FRAMES = 4  # num_frames of the released configs: the pre-training sequence length

# Collections whose bands map onto HLS reflectance x 10000: (bands in model order, DN -> HLS DN
# scale and offset). Scales come from the band tables in rs_embed_core.collections.
_SOURCES: dict[str, tuple[str, ...]] = {
    "COPERNICUS/S2_SR_HARMONIZED": S2_BANDS,
    "NASA/HLS/HLSS30/v002": S2_BANDS,
    "NASA/HLS/HLSL30/v002": OLI_BANDS,
    "LANDSAT/LC08/C02/T1_L2": tuple(f"SR_{b}" for b in OLI_BANDS),
    "LANDSAT/LC09/C02/T1_L2": tuple(f"SR_{b}" for b in OLI_BANDS),
}


def _chain(collection: str) -> tuple[Step, ...]:
    bands = _SOURCES[collection]
    coll = known_collection(collection)
    assert coll is not None
    # HLS DN = reflectance x 10000 = (DN * scale + offset) * 10000
    factor, offset = coll.reflectance_scale * 1e4, coll.reflectance_offset * 1e4
    steps = [Step("select_bands", {"bands": list(bands)})]
    if (factor, offset) != (1.0, 0.0):
        steps.append(Step("scale", {"factor": factor, "offset": offset}))
    steps += [
        Step("normalize", {"mean": list(MEAN), "std": list(STD)}),
        Step("fill_invalid", {"value": 0.0}),  # = the band mean after normalisation
        Step("resize", {"size": IMG_SIZE, "method": "bilinear", "antialias": True}),
    ]
    return tuple(steps)


def inputs_for(collection: str, frames: int = FRAMES, composite: str = "median") -> dict[str, Any]:
    """`sensor=` and `preprocessing=` for Prithvi on another HLS-compatible collection.

    `get_embedding("prithvi", ..., **inputs_for("NASA/HLS/HLSL30/v002"))` embeds Landsat 8/9
    (HLS L30 or Collection 2 level-2), converted to HLS reflectance x 10000 before the model's
    normalisation.
    """
    if collection not in _SOURCES:
        raise SpecError(f"Prithvi has no band mapping for {collection!r}; supported: {sorted(_SOURCES)}")
    sensor = SensorSpec(collection, _SOURCES[collection], 30.0, composite=composite, frames=frames)
    return {"sensor": sensor, "preprocessing": list(_chain(collection))}


def _config(dim: int, depth: int, heads: int, patch: int, coords: bool) -> dict[str, Any]:
    return {
        "embed_dim": dim, "depth": depth, "heads": heads, "patch_size": patch, "coords": coords,
        "img_size": IMG_SIZE, "in_chans": 6, "mlp_ratio": 4.0,
        # LayerNorm eps of the authors' prithvi_mae.py shipped in the Hugging Face repos
        # (partial(nn.LayerNorm, eps=1e-6)); terratorch 1.2.11 builds torch's default 1e-5.
        "norm_eps": 1e-6,
    }


_LICENSE = "apache-2.0"


def _weights(repo: str, revision: str, filename: str, sha256: str) -> WeightsSpec:
    return WeightsSpec(f"ibm-nasa-geospatial/{repo}", revision, filename, sha256, _LICENSE)


# Pins: the revision is a commit at which the file exists; the sha256 is the Git LFS oid the
# Hugging Face pages publish for that file (commit diff or blob page, seen through the search
# tool). None was recomputed here (no Hub access); a mismatch fails loudly on load.
VARIANTS = (
    # commit 9bf8f858 "Add weights" adds the file: oid sha256 d45406d5..., size 454,660,610
    Variant("100M-TL", pooled_dim=768, grid_dim=768,
            weights=_weights("Prithvi-EO-2.0-100M-TL", "9bf8f858c0de827e7af25bea129ad5c8de21b88c",
                             "Prithvi_EO_V2_100M_TL.pt",
                             "d45406d5fc51af1d9657d48f2e2c3ff077408a2e1113f9a242889a4fe4469b17"),
            params=_config(768, 12, 12, 16, True)),
    # blob page at 7271240e (file added in 921b18dc): SHA256 3629cedf..., size 1,326,660,716
    Variant("300M-TL", pooled_dim=1024, grid_dim=1024,
            weights=_weights("Prithvi-EO-2.0-300M-TL", "7271240e0f3cb9aef7a8e92552a48bc132b6f0d2",
                             "Prithvi_EO_V2_300M_TL.pt",
                             "3629cedfbb350faafcb0dac902ae0d3c927e25ce8d9e0024aa1276ec66956ddb"),
            params=_config(1024, 24, 16, 16, True)),
    # tree at 72e38e28 lists the file from commit f4c1974 "added model weights"; the blob page of
    # that same version publishes SHA256 7b92c53b...
    Variant("600M-TL", pooled_dim=1280, grid_dim=1280,
            weights=_weights("Prithvi-EO-2.0-600M-TL", "72e38e28182ed98cade16bf48404a67f39d1e2e4",
                             "Prithvi_EO_V2_600M_TL.pt",
                             "7b92c53b0204a76bb775bd8930f045e05776251caa8c83f7367ed0b75b594702"),
            params=_config(1280, 32, 16, 14, True)),
    # blob page at c6f9ef27 (file from commit ebfff1d "added model weights"): SHA256 faab2c8b...
    Variant("300M", pooled_dim=1024, grid_dim=1024,
            weights=_weights("Prithvi-EO-2.0-300M", "c6f9ef2709377aca8a61b193f337ffec3b37d082",
                             "Prithvi_EO_V2_300M.pt",
                             "faab2c8b776f0723f93431747603a7ec586a54fc45473613b4322c29752486e7"),
            params=_config(1024, 24, 16, 16, False)),
)

NOTES = """\
Input: Sentinel-2 L2A B2, B3, B4, B8A, B11, B12 (HLS Blue, Green, Red, Narrow NIR, SWIR 1, SWIR 2) \
at 30 m, T = 4 median composites over equal bins of the window (each frame stamped at its bin's \
centre). Landsat 8/9 (HLS L30 or Collection 2 level 2) through inputs_for(collection). \
Normalisation: (DN - mean) / std with the published per-band mean/std of HLS reflectance x 10000, \
as the models' config.json and the authors' inference code apply it; cybergis/rs-embed feeds \
reflectance / 1e4 instead (values ~1e4 times smaller than the model saw). Sentinel-2 L2A is not \
HLS: HLS S30 adds BRDF and bandpass harmonisation, which are not applied here.
Size: the ROI is resized (bilinear) to 224 x 224, the pre-training chip size; the authors run \
native 30 m chips, so the effective GSD differs unless the ROI is 6720 m wide.
Invalid pixels (clouds, nodata) are set to the band mean (0 after normalisation), close to the \
authors' inference code (nodata -> 0.0001 after normalisation). Empty frames (a temporal bin with \
no clear observation; providers list them in meta["source"]["empty_frames"]) are removed before the \
encoder: the model runs on the observed frames only, each keeping its own date, and the 3D \
position table is computed for that many frames. An item whose frames are all empty runs on all \
of them (mean-filled) and should be discarded. EmbedOutput.extra["frames_used"] records which \
frames each item used.
Side inputs (TL variants): each frame's (year, day of year 1..366) from the frame time, and the \
ROI centre's (lat, lon); a frame without a time (or items without a centre) run without the \
temporal (location) code, which the model was pre-trained to tolerate (metadata dropout).
Architecture: LayerNorm eps 1e-6 as in the authors' prithvi_mae.py (terratorch 1.2.11 builds \
1e-5); the 3D sin-cos position table is recomputed (the checkpoints' pos_embed is the same fixed \
table for 4 frames and is dropped on load, as terratorch replaces it too).
Weights: revisions and sha256 values are those the Hugging Face pages publish (Git LFS oids); \
not recomputed here (no Hub access). Prithvi-EO-2.0-600M (non-TL) is not declared: its file's \
digest could not be found."""


class Prithvi(Embedder):
    card = ModelCard(
        id="prithvi",
        aliases=("prithvi_eo_v2_s2_6b",),
        description=(
            "Prithvi-EO-2.0 (IBM/NASA): ViT masked autoencoder pre-trained on multi-temporal HLS time "
            "series; 6 bands x 4 frames at 30 m in, with frame dates and ROI location (TL variants)."
        ),
        input=InputSpec("COPERNICUS/S2_SR_HARMONIZED", S2_BANDS, 30.0, image_size=IMG_SIZE, frames=FRAMES,
                        composite="median"),
        variants=VARIANTS,
        default_variant="100M-TL",
        preprocessing=_chain("COPERNICUS/S2_SR_HARMONIZED"),
        pooled="mean of the patch tokens over time and space (class token excluded), after the final LayerNorm",
        grid="per-frame patch-token grids averaged over the frames used (D x 14 x 14; 16 x 16 for 600M)",
        side_inputs=("frame times -> (year, day of year)", "ROI centre -> (lat, lon)"),
        license="code: Apache-2.0 (rs-embed); weights: Apache-2.0",
        citation=(
            "Szwarcman, D., Roy, S., Fraccaro, P., et al. Prithvi-EO-2.0: A Versatile Multi-Temporal "
            "Foundation Model for Earth Observation Applications. arXiv:2412.02732, 2024"
        ),
        homepage="https://huggingface.co/ibm-nasa-geospatial",
        notes=NOTES,
    )
    uses_torch = True

    @classmethod
    def default_chain(cls, sensor: SensorSpec) -> tuple[Step, ...]:
        """`sensor=` alone is enough for the HLS-compatible collections: their chain converts to HLS DN."""
        if sensor.collection in _SOURCES and tuple(sensor.bands) == tuple(_SOURCES[sensor.collection]):
            return _chain(sensor.collection)
        return cls.card.preprocessing

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.net: PrithviViT | None = None

    def load(self) -> None:
        from rs_embed_prithvi_model import build

        self.net = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        import torch

        if x.ndim != 5 or x.shape[2] != 6:
            raise SpecError(
                f"Prithvi takes (B, T, 6, H, W): the six HLS bands per frame; got {tuple(x.shape)}. "
                "Use the card's bands or inputs_for(collection)."
            )
        if self.net is None:
            self.load()
        b, t = x.shape[:2]
        valid = np.ones((b, t), bool) if ctx.valid is None else np.asarray(ctx.valid).reshape(b, t, -1).any(axis=2)
        kept = [tuple(np.flatnonzero(v)) or tuple(range(t)) for v in valid]
        temporal = [_dates(ctx.times[i] if i < len(ctx.times) else None, kept[i]) for i in range(b)]
        location = [ctx.centers_lonlat[i][::-1] if i < len(ctx.centers_lonlat) else None for i in range(b)]

        # items that use the same number of frames and the same side inputs run together
        groups: dict[tuple[int, bool, bool], list[int]] = {}
        for i in range(b):
            groups.setdefault((len(kept[i]), temporal[i] is not None, location[i] is not None), []).append(i)
        pooled: list[torch.Tensor | None] = [None] * b
        frame_grids: list[torch.Tensor | None] = [None] * b
        for (_, has_t, has_l), items in groups.items():
            xs = torch.stack([x[i, list(kept[i])] for i in items]).transpose(1, 2).float()  # (n, C, T', H, W)
            tc = torch.tensor([temporal[i] for i in items], dtype=torch.float32, device=x.device) if has_t else None
            lc = torch.tensor([location[i] for i in items], dtype=torch.float32, device=x.device) if has_l else None
            tokens, (tt, h, w) = self.net(xs, tc, lc)  # type: ignore[misc]
            patches = tokens[:, 1:]
            grids = patches.reshape(len(items), tt, h, w, -1).permute(0, 1, 4, 2, 3)  # (n, T', D, h, w)
            for j, i in enumerate(items):
                pooled[i] = patches[j].mean(dim=0)
                frame_grids[i] = grids[j]
        out_pooled = torch.stack(pooled)  # type: ignore[arg-type]
        extra: dict[str, Any] = {"frames_used": [list(map(int, k)) for k in kept]}
        if ctx.want != "grid":
            return EmbedOutput(pooled=out_pooled, extra=extra)
        grid = torch.stack([g.mean(dim=0) for g in frame_grids])  # type: ignore[union-attr]
        full = grid.new_full((b, t, *grid.shape[1:]), float("nan"))  # NaN where a frame was empty
        for i in range(b):
            full[i, list(kept[i])] = frame_grids[i]  # type: ignore[index]
        extra["frame_grids"] = full
        return EmbedOutput(pooled=out_pooled, grid=grid, extra=extra)


def _dates(times: Any, kept: tuple[int, ...]) -> list[tuple[int, int]] | None:
    """(year, day of year) of the kept frames, or None when any of them has no time."""
    if not times:
        return None
    picked = [times[k] for k in kept]
    if any(not isinstance(d, (dt.date, dt.datetime)) for d in picked):
        return None
    return [(d.year, d.timetuple().tm_yday) for d in picked]


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(Prithvi)
