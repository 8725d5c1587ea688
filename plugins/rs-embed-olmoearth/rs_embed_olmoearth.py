"""OlmoEarth (Ai2, 2025) for rs-embed: multi-frame Sentinel-2 L2A time series with their dates.

OlmoEarth is a family of FlexiViT encoders pre-trained with latent masked modelling on Sentinel-2,
Sentinel-1 and Landsat time series. Its authors' inference package `olmoearth-pretrain-minimal`
holds the network; this plugin builds it with the package's class constructor (no Hub access) and
loads the released weights through rs-embed's pinned, verified path (rs_embed_olmoearth_model).

- `OlmoEarth` (model id "olmoearth"): variants v1, v1.1 and v1.2 in sizes nano, tiny and base
  (default "v1.2-base"). Input: T frames (default 12 equal temporal bins of the window, each a
  median composite) of 12 Sentinel-2 L2A bands; the frames' dates feed the model, empty bins and
  masked patches are masked tokens. pooled = mean of the visible tokens; grid = per patch, mean
  over visible frames and band groups (D x 16 x 16 for a 64 x 64 input with 4-pixel patches).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput
from rs_embed_core.errors import SpecError
from rs_embed_core.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch

    from rs_embed_olmoearth_model import OlmoEarthEncoder

__all__ = ["OlmoEarth", "timestamps", "token_missing", "register_embedders"]

# The package's Sentinel-2 L2A band order (Modality.SENTINEL2_L2A.band_order: B02 B03 B04 B08 B05
# B06 B07 B8A B11 B12 B01 B09), in the band table's (Earth Engine) names.
BANDS = ("B2", "B3", "B4", "B8", "B5", "B6", "B7", "B8A", "B11", "B12", "B1", "B9")
# Per-band mean and std of the pre-training data, in that order: olmoearth-pretrain-minimal 0.1.5,
# data/norm_configs/computed.json, "sentinel2_l2a" (a test checks them against the installed file).
# The package's Normalizer maps x to (x - (mean - 2 std)) / (4 std).
S2_MEAN = (1188.9412572078477, 1407.7739105458452, 1513.0573882432757, 2755.481305028308, 1890.9893042634167,
           2483.7812315422448, 2722.728248756412, 2885.570263047681, 2562.852607796968, 1914.1383249044113,
           1115.8494388252218, 3269.812554170875)
S2_STD = (1859.1923971769581, 1727.7387413631088, 1740.7757298757895, 1612.2565699990187, 1754.7320388511766,
          1622.1172720635755, 1621.8226170190276, 1611.3587521042082, 1441.5471830655151, 1328.8914382756407,
          1955.6991794280914, 2651.088425085525)
STD_MULTIPLIER = 2.0  # Normalizer(std_multiplier=2.0), the package's documented default
IMAGE_SIZE = 64  # pixels a side after the chain (640 m at 10 m); larger ROIs: resize, or input_prep="tile"
PATCH_SIZE = 4  # pixels per token side (the package accepts 1..8)
FRAMES = 12  # OlmoEarth was pre-trained on at most 12 timesteps (max_sequence_length)
MAX_FRAMES = 12

# Weights: allenai/OlmoEarth-* on the Hugging Face Hub, file weights.pth, pinned to the commits and
# sha256 values torchgeo records for them (torchgeo/models/olmoearth.py, development branch:
# OlmoEarthV1_Weights / V1_1 / V1_2, meta "revision" and "weights_sha256"; an earlier torchgeo
# revision names the same v1 files weights-<that sha256>.pth, and the Hub's own page for v1-Large
# shows the same digest torchgeo records for it). Not recomputed here (no Hub access).
LICENSE = "OlmoEarth Artifact License"
_PINS = {
    ("v1", "nano"): ("allenai/OlmoEarth-v1-Nano", "529248a4dc3c54014c56b7504641cec98de31d1c",
                     "795c68419a658fd22ccf8f2e020607675f963e9ef3b93d8e368bb17646765347"),
    ("v1", "tiny"): ("allenai/OlmoEarth-v1-Tiny", "885784437d4e2d632b7bf51b4233426c6f4479dc",
                     "66b9827af383bc444d7909a406a5b62c072bb08d6804ff47a247c2dce8fad9a4"),
    ("v1", "base"): ("allenai/OlmoEarth-v1-Base", "4bd1392a4539404d2c74276c39f3cb4cfff466cc",
                     "551c1cc53337c6faaddead88071d7ebd2bd53ec271600fa6f0ee0a518c8b6e11"),
    ("v1.1", "nano"): ("allenai/OlmoEarth-v1_1-Nano", "6c16c7da0d05a1c4f32c2a7f9233e07c9ebfa61a",
                       "883561154dd4eb874a3e28bb0559c15aa06bd8a2e4ffb54a0d6bc4bc15777eb3"),
    ("v1.1", "tiny"): ("allenai/OlmoEarth-v1_1-Tiny", "74fab5714f763d6b94f8b1536bdd3300d77f45e8",
                       "2a3fe8132adf9ff2ca96d00c9e376b8925bfe430fda6140749b3b92764c67ae1"),
    ("v1.1", "base"): ("allenai/OlmoEarth-v1_1-Base", "4ef31d45f80c1d4fcce18f9cde40c1b5e4d96cf4",
                       "37fc73d542618f28357583fd17307002a4bdfb5321142c08e928102341105989"),
    ("v1.2", "nano"): ("allenai/OlmoEarth-v1_2-Nano", "e1f693ae2a7d5b57871a978e9d09e22d05206747",
                       "2773fca48c238d78adde5e83b7d140a63d36c9e5f73746b8dbadaed743020378"),
    ("v1.2", "tiny"): ("allenai/OlmoEarth-v1_2-Tiny", "12a9fdbfeff905d7e147e7497f9f7a95c518eefc",
                       "835c0b21ab010c4c4515faafa44dc1a41c9bc512d3a30af184803c4f4257697d"),
    ("v1.2", "base"): ("allenai/OlmoEarth-v1_2-Base", "581aa9baaa7aed4348c0903617eb92ee9f89e2ec",
                       "57f7b66faf206db1307670673839e639d3a19c305f6ad968c62392ad3e88deec"),
}
_DIMS = {"nano": 128, "tiny": 192, "base": 768}  # encoder widths (package MODEL_SIZE_CONFIGS)


def _variant(version: str, size: str) -> Variant:
    repo, rev, sha = _PINS[(version, size)]
    return Variant(
        f"{version}-{size}", pooled_dim=_DIMS[size], grid_dim=_DIMS[size],
        weights=WeightsSpec(repo, rev, "weights.pth", sha, LICENSE),
        params={"model_size": size, "model_version": version, "patch_size": PATCH_SIZE},
    )


VARIANTS = tuple(_variant(v, s) for v in ("v1", "v1.1", "v1.2") for s in ("nano", "tiny", "base"))

NOTES = f"""\
Input: Sentinel-2 L2A (COPERNICUS/S2_SR_HARMONIZED), the 12 bands of the package's band order \
(B2 B3 B4 B8 B5 B6 B7 B8A B11 B12 B1 B9), at 10 m, {FRAMES} frames: the window split into {FRAMES} equal \
bins, each a median composite (SensorSpec.frames); a one-year window gives roughly monthly frames, as \
in pre-training. Chain: select the bands in that order; the package's Normalizer, (x - (mean - 2 std)) \
/ (4 std) with its pre-training statistics; invalid pixels set to 0 after normalisation (what the \
package's Normalizer(model_type='v1.1'/'v1.2') does with missing values); resize to {IMAGE_SIZE} x \
{IMAGE_SIZE} (bilinear, antialiased). The encoder is told the input's real pixel size (input_res, from \
the grid), so a resized ROI is not mistaken for 10 m; for native 10 m use buffer_m={IMAGE_SIZE * 10 // 2} \
or input_prep="tile".
Time: each frame's date (the bin centre the provider stamps) enters as (day, month - 1, year): the \
month embedding (all versions) and, for v1.2, the temporal RoPE in days since 2000. A frame without a \
date, or more than {MAX_FRAMES} frames, is a SpecError.
Masks: a token (frame, patch) is MaskValue.MISSING when none of the patch's pixels is valid in that \
frame (an empty temporal bin, or a patch fully cloud-masked in that composite) and the patch has valid \
pixels in some other frame; masked tokens are left out of attention and of both outputs. A patch with no \
valid pixel in any frame stays visible (it describes the fill value, as the core's low-valid policy \
states). Items with masked tokens are encoded one per forward pass: in eval mode the package pads \
sequences of different lengths without an attention mask, which would make results depend on the batch.
Outputs: pooled = mean of all visible tokens (the package's pool_unmasked_tokens(MEAN, \
spatial_pooling=False)); grid = per patch, the mean over visible frames and band groups (its \
spatial_pooling=True), D x 16 x 16 for 4-pixel patches of the 64 x 64 input. Tokens are after the \
encoder's final LayerNorm. Patch size is a variant parameter ("patch_size", 1..8; the package's README \
example uses 8).
Deviations: the architecture comes from the package's constructor OlmoEarthPretrain_v1(model_size, \
model_version), not from the Hub's config.json (not consulted: no Hub access; torchgeo's later loader \
builds from config.json). Only Sentinel-2 is wired; the encoder also takes Sentinel-1 and Landsat.
Weights: allenai/OlmoEarth-* weights.pth at the commits and full sha256 torchgeo records, not \
recomputed here (no Hub access); loaded strictly into the encoder, dropping the decoder and the target \
encoder. Licence: {LICENSE} (https://github.com/allenai/olmoearth_pretrain/blob/main/LICENSE)."""


def normalize_params() -> dict[str, list[float]]:
    """The Normalizer as a `normalize` step: mean' = mean - k std, std' = 2 k std."""
    k = STD_MULTIPLIER
    return {"mean": [m - k * s for m, s in zip(S2_MEAN, S2_STD)], "std": [2 * k * s for s in S2_STD]}


def timestamps(times: Sequence[Sequence[Any]]) -> np.ndarray:
    """Per item, per frame datetimes -> (B, T, 3) int64 (day, month - 1, year), the package's layout."""
    out = []
    for i, frames in enumerate(times):
        row = []
        for t, when in enumerate(frames):
            if not isinstance(when, (dt.date, dt.datetime)):
                raise SpecError(f"OlmoEarth needs the date of every frame; item {i} frame {t} has {when!r}. "
                                "Use a provider that stamps frames (composites are stamped at their bin centre).")
            row.append((when.day, when.month - 1, when.year))
        out.append(row)
    return np.asarray(out, dtype=np.int64).reshape(len(out), -1, 3)


def token_missing(valid: np.ndarray, patch: int) -> np.ndarray:
    """(B, T, H, W) valid pixels -> (B, T, H/patch, W/patch) masked tokens (see the card notes)."""
    b, t, h, w = valid.shape
    if h % patch or w % patch:
        raise SpecError(f"OlmoEarth needs an input that tiles into {patch}-pixel patches, got {h}x{w}")
    seen = valid.reshape(b, t, h // patch, patch, w // patch, patch).any(axis=(3, 5))
    ever = seen.any(axis=1, keepdims=True)
    return ~seen & ever


class OlmoEarth(Embedder):
    card = ModelCard(
        id="olmoearth",
        description=(
            "OlmoEarth (Ai2, 2025): FlexiViT encoders pre-trained on Sentinel-1/2 and Landsat time series "
            f"with latent masked modelling; here a {FRAMES}-frame Sentinel-2 L2A series with its dates, empty "
            "frames masked. Versions v1, v1.1, v1.2; sizes nano, tiny, base."
        ),
        input=InputSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS, 10.0, image_size=IMAGE_SIZE, frames=FRAMES,
                        composite="median"),
        variants=VARIANTS,
        default_variant="v1.2-base",
        preprocessing=(
            Step("select_bands", {"bands": list(BANDS)}),
            Step("normalize", normalize_params()),
            Step("fill_invalid", {"value": 0.0}),
            Step("resize", {"size": IMAGE_SIZE, "method": "bilinear", "antialias": True}),
        ),
        pooled="mean of the visible (unmasked) tokens over space, time and band groups",
        grid="per patch, mean of the visible tokens over frames and band groups (D x 16 x 16 for 4-pixel patches)",
        side_inputs=("frame dates (day, month, year)", "valid mask -> token mask", "pixel size (input_res)"),
        license=f"code: Apache-2.0 (rs-embed; olmoearth-pretrain-minimal is Apache-2.0); weights: {LICENSE}",
        citation=(
            "Ai2 OlmoEarth team. OlmoEarth: Stable Latent Image Modeling for Multimodal Earth Observation. "
            "arXiv:2511.13655, 2025 (v1.1 / v1.2: arXiv:2605.20804)"
        ),
        homepage="https://github.com/allenai/olmoearth_pretrain",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.model: OlmoEarthEncoder | None = None

    def load(self) -> None:
        from rs_embed_olmoearth_model import build

        self.model = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        import torch

        if x.ndim != 5 or tuple(ctx.band_names) != BANDS:
            raise SpecError(f"OlmoEarth takes (B, T, 12, H, W) in the band order {list(BANDS)}; got "
                            f"{tuple(x.shape)} with bands {list(ctx.band_names)}")
        if x.shape[1] > MAX_FRAMES:
            raise SpecError(f"OlmoEarth was pre-trained on at most {MAX_FRAMES} frames; got {x.shape[1]} "
                            "(use SensorSpec(frames<=12) with a compositing sensor)")
        b = x.shape[0]
        valid = np.ones((b, x.shape[1], x.shape[3], x.shape[4]), bool) if ctx.valid is None else np.asarray(ctx.valid, bool)
        missing = token_missing(valid, int(self.variant.params["patch_size"]))
        days = timestamps(ctx.times)
        if days.shape[:2] != x.shape[:2]:
            raise SpecError(f"OlmoEarth got {days.shape[1]} frame dates for {x.shape[1]} frames")
        res = [round(math.sqrt(g.res * g.yres), 6) for g in ctx.grids] if ctx.grids else [10.0] * b
        if self.model is None:
            self.load()
        pooled = torch.empty((b, self.variant.pooled_dim), dtype=torch.float32, device=x.device)
        grid = None
        for r in sorted(set(res)):  # input_res is one number per encoder call
            idx = [i for i in range(b) if res[i] == r]
            p, g = self.model(x[idx].float(), torch.from_numpy(missing[idx]).to(x.device),  # type: ignore[misc]
                              torch.from_numpy(days[idx]).to(x.device), r)
            if grid is None:
                grid = torch.empty((b, *g.shape[1:]), dtype=torch.float32, device=x.device)
            pooled[idx], grid[idx] = p.float(), g.float()  # bf16 / fp16 under autocast
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None)


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(OlmoEarth)
