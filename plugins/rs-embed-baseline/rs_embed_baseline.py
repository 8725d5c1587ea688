"""Weights-free baselines: per-band spectral statistics and MOSAIKS random convolutional features.

Foundation models should beat these; if one does not on your task, the task is spectral or
textural enough that a few hundred fixed numbers per ROI already carry the signal. Both run
on numpy only, need no download, and are deterministic across machines.

Validity: the runner hands `ctx.valid` (bool, (B, T, H, W)) aligned with `x`; pixels that
are invalid there, or not finite in any band, never reach a statistic or a pooled feature.
Several frames (composite="none") are pooled together: every valid (frame, pixel) is a sample.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant
from rs_embed_core.embedder import BatchContext, EmbedOutput, Embedder
from rs_embed_core.errors import SpecError
from rs_embed_core.hookspecs import hookimpl

COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
BANDS = ("B2", "B3", "B4", "B8", "B11", "B12")
GRID_CELLS = 8  # grid outputs are GRID_CELLS x GRID_CELLS cells over the (preprocessed) ROI

# Normalised differences (a - b) / (a + b), by band name (Sentinel-2; other sensors map onto these
# names through the band table's descriptions, see `band_roles`).
INDICES: tuple[tuple[str, str, str], ...] = (
    ("NDVI", "B8", "B4"),  # vegetation (Rouse et al. 1974)
    ("NDWI", "B3", "B8"),  # open water (McFeeters 1996)
    ("NDBI", "B11", "B8"),  # built-up (Zha et al. 2003)
    ("MNDWI", "B3", "B11"),  # water vs built-up (Xu 2006)
    ("NBR", "B8", "B12"),  # burn severity (Key & Benson 2006)
)
# band-table description -> the Sentinel-2 name the indices use
_ROLE = {"blue": "B2", "green": "B3", "red": "B4", "near infrared": "B8", "short-wave infrared 1": "B11",
         "short-wave infrared 2": "B12"}
STATS = ("mean", "std", "p10", "p50", "p90")
CHANNELS = BANDS + tuple(name for name, _, _ in INDICES)
FEATURE_NAMES: tuple[str, ...] = tuple(f"{c}_{s}" for c in CHANNELS for s in STATS)

# Approximate global Sentinel-2 L2A band statistics in reflectance units (the Clay v1 model's
# published sentinel-2-l2a metadata, /10000): blue, green, red, nir, swir16, swir22.
S2_MEAN = (0.1105, 0.1355, 0.1552, 0.2743, 0.2388, 0.1835)
S2_STD = (0.1809, 0.1757, 0.1888, 0.1742, 0.1470, 0.1379)

_ND_EPS = 1e-6  # |a + b| at or below this -> the index is 0 (no signal, not a division by ~0)


# ---------------------------------------------------------------- shared helpers


def cell_edges(n: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel ranges [start, end) of `cells` cells along an axis of n pixels.

    start = floor(i*n/cells); end = max(floor((i+1)*n/cells), start + 1): a partition when
    n >= cells, and every cell still gets one pixel when the ROI is smaller than the grid.
    """
    i = np.arange(cells)
    starts = (i * n) // cells
    ends = np.maximum(((i + 1) * n) // cells, starts + 1)
    return starts, ends


def band_roles(names: tuple[str, ...], collection: str | None) -> tuple[str, ...]:
    """Each band as the Sentinel-2 name of its role (B2 blue ... B12 swir2) when the band table
    says what it is (Landsat SR_B4 -> B4), else its own name."""
    from rs_embed_core.collections import known_collection

    coll = known_collection(collection) if collection else None
    out = []
    for n in names:
        role = n
        if coll is not None and n in coll.band_names:
            role = _ROLE.get(coll.band(n).description, n)
        out.append(role)
    return tuple(out)


def default_chain_for(sensor: Any, card_chain: tuple, standardize: bool) -> tuple:
    """The card's chain for its own sensor; for any other: the sensor's bands, DN -> reflectance
    when the band table knows the scale, then (MOSAIKS) per-ROI standardisation."""
    from rs_embed_core.collections import known_collection

    if sensor.collection == COLLECTION and tuple(sensor.bands) == BANDS:
        return card_chain
    steps = [Step("select_bands", {"bands": list(sensor.bands)})]
    coll = known_collection(sensor.collection)
    if coll is not None and (coll.reflectance_scale, coll.reflectance_offset) != (1.0, 0.0):
        steps.append(Step("scale", {"factor": coll.reflectance_scale, "offset": coll.reflectance_offset}))
    if standardize:
        steps.append(Step("standardize"))
    return tuple(steps)


def _check_input(x: Any, ctx: BatchContext, model: str) -> tuple[np.ndarray, np.ndarray]:
    """x as float32 (B, T, C, H, W) with invalid pixels zeroed, and the effective valid mask."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 5:
        raise SpecError(f"{model}: expected input (B, T, C, H, W), got shape {x.shape}")
    names = tuple(getattr(ctx, "band_names", ()) or ())
    if names and x.shape[2] != len(names):
        raise SpecError(f"{model}: {x.shape[2]} channels but {len(names)} band names {list(names)}")
    b, t, _, h, w = x.shape
    valid = getattr(ctx, "valid", None)
    if valid is None:
        valid = np.ones((b, t, h, w), dtype=bool)
    else:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != (b, t, h, w):
            raise SpecError(f"{model}: valid mask shape {valid.shape} does not match input {(b, t, h, w)}")
    valid = valid & np.isfinite(x).all(axis=2)
    x = np.where(valid[:, :, None], x, np.float32(0.0))
    return x, valid


# ---------------------------------------------------------------- spectral statistics


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b), 0 where |a + b| <= 1e-6, clipped to [-1, 1] (negative reflectances)."""
    s = a + b
    ok = np.abs(s) > _ND_EPS
    out = np.divide(a - b, s, out=np.zeros_like(s), where=ok)
    return np.clip(out, -1.0, 1.0)


def available_indices(roles: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    return tuple(ix for ix in INDICES if ix[1] in roles and ix[2] in roles)


def feature_names(names: tuple[str, ...], roles: tuple[str, ...]) -> tuple[str, ...]:
    """Feature names for these bands: per channel (bands, then the indices they allow), 5 statistics."""
    channels = names + tuple(n for n, _, _ in available_indices(roles))
    return tuple(f"{c}_{s}" for c in channels for s in STATS)


def spectral_channels(x: np.ndarray, roles: tuple[str, ...] = BANDS) -> np.ndarray:
    """(..., C bands, H, W) reflectance -> (..., C + k, H, W): the bands, then the INDICES their roles allow."""
    idx = {name: i for i, name in enumerate(roles)}
    nd = [normalized_difference(x[..., idx[a], :, :], x[..., idx[b], :, :]) for _, a, b in available_indices(roles)]
    return np.concatenate([x, np.stack(nd, axis=-3)], axis=-3) if nd else x


def channel_stats(samples: np.ndarray) -> np.ndarray:
    """(channels, n) samples -> (channels * 5,) [mean, std, p10, p50, p90] per channel, channel-major.

    std is the population std (ddof=0); percentiles interpolate linearly (numpy's default).
    No samples -> zeros (documented fallback: never NaN).
    """
    c, n = samples.shape
    if n == 0:
        return np.zeros(c * len(STATS), dtype=np.float32)
    s = samples.astype(np.float64)
    mean = s.mean(axis=1)
    std = s.std(axis=1)
    p10, p50, p90 = np.percentile(s, [10.0, 50.0, 90.0], axis=1)
    return np.stack([mean, std, p10, p50, p90], axis=1).reshape(-1).astype(np.float32)


def _stats_item(x: np.ndarray, valid: np.ndarray, cells: int | None,
                roles: tuple[str, ...] = BANDS) -> tuple[np.ndarray, np.ndarray | None]:
    """One item: x (T, C, H, W), valid (T, H, W) -> pooled (D,), and (D, cells, cells) if cells."""
    samples = np.moveaxis(spectral_channels(x.astype(np.float64), roles), 1, 0)  # (C + k, T, H, W)
    pooled = channel_stats(samples[:, valid])
    if cells is None:
        return pooled, None
    _, h, w = valid.shape
    rs, re = cell_edges(h, cells)
    cs, ce = cell_edges(w, cells)
    grid = np.zeros((samples.shape[0] * len(STATS), cells, cells), dtype=np.float32)
    for i in range(cells):
        for j in range(cells):
            block = samples[:, :, rs[i]:re[i], cs[j]:ce[j]]
            grid[:, i, j] = channel_stats(block[:, valid[:, rs[i]:re[i], cs[j]:ce[j]]])
    return pooled, grid


class SpectralStats(Embedder):
    """Per-band and per-index statistics over the valid pixels: the 'what colour is it' baseline."""

    uses_torch = False
    card = ModelCard(
        id="spectral_stats",
        aliases=("stats", "spectral-stats"),
        description=(
            "Weights-free baseline: mean, std and 10/50/90th percentiles of six Sentinel-2 L2A "
            "surface-reflectance bands and five normalised-difference indices over the valid pixels "
            "of the ROI. No learning, no texture: a foundation model that cannot beat it on a task "
            "adds nothing there beyond the ROI's spectral distribution."
        ),
        input=InputSpec(collection=COLLECTION, bands=BANDS, gsd_m=10.0, image_size=None, frames=1),
        variants=(Variant("default", pooled_dim=len(FEATURE_NAMES), grid_dim=len(FEATURE_NAMES),
                          weights=None, params={"grid_cells": GRID_CELLS}),),
        preprocessing=(Step("select_bands", {"bands": list(BANDS)}), Step("scale", {"factor": 1e-4})),
        pooled=(
            "55 values over all valid pixels (and frames) of the ROI, channel-major: for each channel in "
            "B2, B3, B4, B8, B11, B12, NDVI=(B8-B4)/(B8+B4), NDWI=(B3-B8)/(B3+B8), NDBI=(B11-B8)/(B11+B8), "
            "MNDWI=(B3-B11)/(B3+B11), NBR=(B8-B12)/(B8+B12), the 5 statistics mean, std (ddof=0), p10, p50, "
            "p90 (linear interpolation). Index = 0 where |a+b| <= 1e-6, clipped to [-1, 1]. "
            "Names in rs_embed_baseline.FEATURE_NAMES. No valid pixel -> all zeros."
        ),
        grid=(
            "The same 55 statistics per cell of a fixed 8x8 grid over the preprocessed ROI: cell (i, j) "
            "covers rows floor(i*H/8) <= y < max(floor((i+1)*H/8), floor(i*H/8)+1), columns likewise. "
            "A cell without a valid pixel is all zeros."
        ),
        license="Apache-2.0",
        citation=(
            "Indices: Rouse et al. 1974 (NDVI, NASA SP-351); McFeeters 1996, Int. J. Remote Sens. 17(7) "
            "(NDWI); Zha, Gao & Ni 2003, Int. J. Remote Sens. 24(3) (NDBI); Xu 2006, Int. J. Remote Sens. "
            "27(14) (MNDWI); Key & Benson 2006, USDA RMRS-GTR-164-CD (NBR)."
        ),
        notes=(
            "B11 and B12 are 20 m bands resampled onto the 10 m grid by the provider. Pixels that are "
            "invalid in the mask or not finite in any band are excluded from every statistic. "
            "Any other sensor works too (sensor=...): statistics of whatever bands it delivers, converted "
            "to reflectance with the band table's scale/offset when the collection is known (Landsat C2 L2: "
            "DN x 2.75e-5 - 0.2), plus the indices whose bands are present (roles read from the band "
            "table: Landsat SR_B4 is red); D = 5 x (bands + indices), names from feature_names()."
        ),
    )

    @classmethod
    def default_chain(cls, sensor: Any) -> tuple:
        return default_chain_for(sensor, cls.card.preprocessing, standardize=False)

    def output_dims(self, ctx: BatchContext) -> tuple[int, int]:
        """5 statistics per band and per index the bands allow: 55 for the card's bands, fewer for others."""
        roles = band_roles(tuple(ctx.band_names) or BANDS, getattr(getattr(ctx, "sensor", None), "collection", None))
        n = len(roles) + sum(1 for _, a, b in INDICES if a in roles and b in roles)
        return len(STATS) * n, len(STATS) * n

    def forward(self, x: Any, ctx: BatchContext) -> EmbedOutput:
        xs, valid = _check_input(x, ctx, self.card.id)
        names = tuple(ctx.band_names) or BANDS[: xs.shape[2]]
        roles = band_roles(names, getattr(getattr(ctx, "sensor", None), "collection", None))
        cells = int(self.variant.params.get("grid_cells", GRID_CELLS)) if ctx.want == "grid" else None
        items = [_stats_item(xs[b], valid[b], cells, roles) for b in range(xs.shape[0])]
        grid = np.stack([g for _, g in items]) if cells is not None else None
        return EmbedOutput(pooled=np.stack([p for p, _ in items]), grid=grid)


# ---------------------------------------------------------------- MOSAIKS random convolutional features


def gaussian_stream(seed: int, n: int) -> np.ndarray:
    """n standard normals from PCG64(seed)'s raw 64-bit stream via Box-Muller.

    numpy promises a stable bit stream for its bit generators but not for Generator's
    distribution methods, so the transform is done here: the same filters on every machine
    and numpy version. A longer stream extends a shorter one (k1024 starts with k512's filters).
    """
    pairs = (n + 1) // 2
    raw = np.random.PCG64(seed).random_raw(2 * pairs)
    u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # uniform in (0, 1)
    r = np.sqrt(-2.0 * np.log(u[0::2]))
    theta = 2.0 * math.pi * u[1::2]
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1).reshape(-1)[:n]


def mosaiks_filters(num_filters: int, channels: int, size: int, seed: int) -> np.ndarray:
    """(K, C, k, k) float32 filters: Gaussian, then each made zero-mean and unit-L2-norm.

    The paper samples k x k x C patches from the study's own images and ZCA-whitens them; the
    per-patch centring and unit norm are kept here, whitening is not (white noise is already white).
    """
    w = gaussian_stream(seed, num_filters * channels * size * size).reshape(num_filters, -1)
    w = w - w.mean(axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return w.reshape(num_filters, channels, size, size).astype(np.float32)


_CHUNK_WINDOWS = 4096  # windows per matmul: blocks big enough for BLAS threads, buffer reused across blocks


def mosaiks_cell_sums(
    x: np.ndarray, valid: np.ndarray, filters: np.ndarray, bias: float, cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell sums of relu(conv - bias) and relu(-conv - bias), and window counts, for one image.

    x (C, H, W) standardised with invalid pixels zeroed; valid (H, W). The convolution is a
    'same'-size cross-correlation (zero padding): the window centred on pixel (y, x) belongs
    to the cell holding (y, x) and counts only if all its k x k pixels are valid, so invalid
    pixels never influence a feature. Returns sums (cells, cells, 2K) float64, counts (cells, cells).
    """
    k_filters, c, k, _ = filters.shape
    _, h, w = x.shape
    r = k // 2
    xp = np.zeros((c, h + 2 * r, w + 2 * r), dtype=np.float32)
    xp[:, r:r + h, r:r + w] = x
    vp = np.zeros((h + 2 * r, w + 2 * r), dtype=bool)
    vp[r:r + h, r:r + w] = valid
    win_valid = sliding_window_view(vp, (k, k)).all(axis=(-2, -1))  # (H, W)
    windows = sliding_window_view(xp, (k, k), axis=(1, 2))  # (C, H, W, k, k), a view
    fmat = filters.reshape(k_filters, -1).T  # (C*k*k, K), flattened like the patches
    rs, re = cell_edges(h, cells)
    cs, ce = cell_edges(w, cells)
    col_member = np.zeros((cells, w), dtype=np.float32)
    for j in range(cells):
        col_member[j, cs[j]:ce[j]] = 1.0
    sums = np.zeros((cells, cells, 2 * k_filters), dtype=np.float64)
    counts = np.zeros((cells, cells), dtype=np.float64)
    step = max(1, _CHUNK_WINDOWS // w)
    buf = np.empty((step * w, k_filters), dtype=np.float32)  # reused: no fresh pages per chunk
    for i in range(cells):
        for y0 in range(rs[i], re[i], step):
            y1 = min(y0 + step, re[i])
            patches = np.ascontiguousarray(windows[:, y0:y1].transpose(1, 2, 0, 3, 4)).reshape(-1, c * k * k)
            # membership (cells, n): window n counts for column cell j if valid and inside it
            member = (col_member[:, None, :] * win_valid[None, y0:y1, :]).reshape(cells, -1)
            conv = np.matmul(patches, fmat, out=buf[: patches.shape[0]])  # (n, K)
            if bias == 0.0:  # relu(-c) = relu(c) - c: one activation pass instead of two
                total = member @ conv
                np.maximum(conv, 0.0, out=conv)
                pos = member @ conv
                neg = np.maximum(pos - total, 0.0)  # a float32 difference may round just below 0
            else:
                neg_act = np.maximum(np.negative(conv) - bias, 0.0)
                np.subtract(conv, bias, out=conv)
                np.maximum(conv, 0.0, out=conv)
                pos = member @ conv
                neg = member @ neg_act
            sums[i, :, :k_filters] += pos
            sums[i, :, k_filters:] += neg
            counts[i] += member.sum(axis=1)
    return sums, counts


def _mosaiks_sums(
    x: np.ndarray, valid: np.ndarray, filters: np.ndarray, bias: float, cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """One item, all its frames: x (T, C, H, W), valid (T, H, W) -> summed cell sums and counts."""
    sums, counts = mosaiks_cell_sums(x[0], valid[0], filters, bias, cells)
    for t in range(1, x.shape[0]):
        s, n = mosaiks_cell_sums(x[t], valid[t], filters, bias, cells)
        sums += s
        counts += n
    return sums, counts


def _safe_mean(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """sums (..., F) / counts (...), zeros where nothing was counted (never NaN)."""
    c = np.asarray(counts, dtype=np.float64)[..., None]
    return np.divide(sums, c, out=np.zeros_like(sums), where=c > 0).astype(np.float32)


def _mosaiks_variant(name: str, num_filters: int) -> Variant:
    return Variant(name, pooled_dim=2 * num_filters, grid_dim=2 * num_filters, weights=None,
                   params={"num_filters": num_filters, "kernel_size": 3, "bias": 0.0, "seed": 20210712,
                           "grid_cells": GRID_CELLS})


class Mosaiks(Embedder):
    """MOSAIKS-style random convolutional features: the 'cheap texture + colour' baseline."""

    uses_torch = False
    card = ModelCard(
        id="mosaiks",
        aliases=("rcf", "random_conv_features"),
        description=(
            "Weights-free baseline after MOSAIKS (Rolf et al. 2021): K fixed random 3x3x6 filters "
            "convolved over standardised Sentinel-2 L2A reflectance (B2, B3, B4, B8, B11, B12 at 10 m), "
            "ReLU of +conv - b and -conv - b, averaged over the ROI: 2K features that a linear model "
            "on top turns into a strong, cheap baseline."
        ),
        input=InputSpec(collection=COLLECTION, bands=BANDS, gsd_m=10.0, image_size=None, frames=1),
        variants=(_mosaiks_variant("k512", 512), _mosaiks_variant("k1024", 1024)),
        default_variant="k512",
        preprocessing=(
            Step("select_bands", {"bands": list(BANDS)}),
            Step("scale", {"factor": 1e-4}),
            Step("normalize", {"mean": list(S2_MEAN), "std": list(S2_STD)}),
        ),
        pooled=(
            "2K values (K = num_filters = 512 for k512, 1024 for k1024): features 0..K-1 are the mean of "
            "relu(conv_k - b), features K..2K-1 the mean of relu(-conv_k - b) (b = 0 as in the paper's "
            "configuration), averaged over every 3x3 window whose 9 pixels are all valid (over all frames). "
            "No such window -> all zeros."
        ),
        grid=(
            "The same 2K averages per cell of a fixed 8x8 grid over the ROI: a window belongs to the cell "
            "holding its centre pixel; cell (i, j) covers rows floor(i*H/8) <= y < "
            "max(floor((i+1)*H/8), floor(i*H/8)+1), columns likewise. A cell without a fully valid window "
            "is all zeros."
        ),
        license="Apache-2.0",
        citation=(
            "Rolf, E., Proctor, J., Carleton, T., Bolliger, I., Shankar, V., Ishihara, M., Recht, B. & "
            "Hsiang, S. A generalizable and accessible approach to machine learning with global satellite "
            "imagery. Nature Communications 12, 4392 (2021). https://doi.org/10.1038/s41467-021-24638-z"
        ),
        homepage="https://www.mosaiks.org",
        notes=(
            "Deviations from the paper: filters are Gaussian (seeded PCG64 bit stream, Box-Muller, then "
            "per-filter zero mean and unit L2 norm), not 3x3 patches sampled from the study's own images "
            "and ZCA-whitened, so the features are study-independent and reproducible everywhere; input is "
            "6-band 10 m Sentinel-2 L2A standardised per band with fixed constants (approximate global L2A "
            "statistics, Clay v1 metadata) instead of 3-band RGB imagery scaled to [0, 1]; no resize "
            "(native 10 m, so texture keeps its ground scale), zero-padded 'same' convolution, and windows "
            "touching an invalid pixel are excluded. Paper: K = 4096 filters (8192 features), bias 0. "
            "Any other sensor works too (sensor=...): C channels give C-channel filters from the same seed, "
            "and the input is converted to reflectance when the band table knows the collection, then "
            "standardised per ROI and band over its valid pixels (the 'standardize' step), since fixed "
            "constants exist only for the six Sentinel-2 bands."
        ),
    )

    @classmethod
    def default_chain(cls, sensor: Any) -> tuple:
        return default_chain_for(sensor, cls.card.preprocessing, standardize=True)

    def load(self) -> None:
        p = self.variant.params
        self.bias = float(p.get("bias", 0.0))
        self.cells = int(p.get("grid_cells", GRID_CELLS))
        self._filters: dict[int, np.ndarray] = {}
        self.filters = self.filters_for(len(BANDS))

    def filters_for(self, channels: int) -> np.ndarray:
        """The seeded filters for `channels` input channels (the six-band ones are the card's)."""
        if channels not in self._filters:
            p = self.variant.params
            self._filters[channels] = mosaiks_filters(int(p["num_filters"]), channels, int(p.get("kernel_size", 3)),
                                                      int(p.get("seed", 20210712)))
        return self._filters[channels]

    def forward(self, x: Any, ctx: BatchContext) -> EmbedOutput:
        if not hasattr(self, "_filters"):
            self.load()
        xs, valid = _check_input(x, ctx, self.card.id)
        filters = self.filters_for(xs.shape[2])
        h, w = xs.shape[-2:]
        pooled, grid = [], []
        for b in range(xs.shape[0]):
            if ctx.want == "grid":
                sums, counts = _mosaiks_sums(xs[b], valid[b], filters, self.bias, self.cells)
                grid.append(np.moveaxis(_safe_mean(sums, counts), -1, 0))
                if h >= self.cells and w >= self.cells:  # cells partition the image: reuse their sums
                    pooled.append(_safe_mean(sums.sum(axis=(0, 1)), counts.sum()))
                    continue
            sums, counts = _mosaiks_sums(xs[b], valid[b], filters, self.bias, 1)
            pooled.append(_safe_mean(sums[0, 0], counts[0, 0]))
        return EmbedOutput(pooled=np.stack(pooled), grid=np.stack(grid) if grid else None)


@hookimpl
def register_embedders(register):
    register(SpectralStats)
    register(Mosaiks)
