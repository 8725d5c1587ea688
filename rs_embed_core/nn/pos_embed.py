"""Fixed sine-cosine position embeddings (1D, 2D and 3D), as MAE-family encoders define them.

One axis of `dim` channels: position p gives [sin(p*w_0) .. sin(p*w_{k-1}), cos(p*w_0) .. cos(p*w_{k-1})]
with k = dim/2 and w_i = 10000^(-i/k). A grid embedding concatenates one such block per axis; the
tokens are row-major over the grid (last axis fastest), the order `PatchEmbed` produces. The
channel order of the blocks differs between model families, so it is a parameter: MAE's 2D
embedding puts the column (x) block first, Prithvi's 3D one orders the blocks width, height, time.
Computed in float64 and returned as float32, which is how the reference code builds them.

Clay's variants (vit-pytorch's `simple_vit` lineage) differ in three ways, each a parameter here:
frequencies span 1 .. 1/10000 inclusive (w_i = 10000^(-i/(k-1)), `endpoint=True`), the arithmetic
is float32 (`dtype`), and its 2D table (`sincos_2d_gsd`) scales every frequency by the ground
sampling distance so that tokens of coarser imagery sit further apart.
"""

from __future__ import annotations

import torch

from ..errors import SpecError

_BASE = 10000.0


def sincos_1d(dim: int, positions: torch.Tensor | list[float] | int, exponent_scale: float = 1.0, *,
              endpoint: bool = False, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(M, dim) float32 embedding of M (possibly fractional) positions; an int n means positions 0..n-1.

    `exponent_scale` multiplies the frequency exponent i/k: Galileo's tables use
    w_i = 10000^(-i/(2 dim)), i.e. exponent_scale = 0.25 (slower frequencies than MAE's).
    `endpoint=True`: w_i = 10000^(-i/(k-1)) (Clay's wavelength code); `dtype`: the arithmetic's precision.
    """
    if dim <= 0 or dim % 2 or (endpoint and dim < 4):
        raise SpecError(f"sin-cos embedding dim must be a positive even number (>= 4 with endpoint), got {dim}")
    pos = torch.arange(positions) if isinstance(positions, int) else torch.as_tensor(positions)
    pos = pos.to(dtype).reshape(-1)
    half = dim // 2
    omega = 1.0 / _BASE ** (exponent_scale * torch.arange(half, dtype=dtype, device=pos.device)
                            / (half - 1 if endpoint else half))
    angles = pos[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).to(torch.float32)


def _grid(sizes: dict[str, int], dims: dict[str, int], concat: str, step: float = 1.0,
          exponent_scale: float = 1.0) -> torch.Tensor:
    """Row-major tokens over the axes in `sizes` order; channel blocks in `concat` order.

    Token i of an axis sits at position i * step."""
    if sorted(concat) != sorted(sizes):
        raise SpecError(f"concat order {concat!r} must name each axis of {''.join(sizes)} once")
    coords = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) * step for n in sizes.values()], indexing="ij")
    by_axis = dict(zip(sizes, coords))
    return torch.cat([sincos_1d(dims[a], by_axis[a].reshape(-1), exponent_scale) for a in concat], dim=1)


def _with_cls(emb: torch.Tensor, cls_token: bool) -> torch.Tensor:
    return torch.cat([emb.new_zeros(1, emb.shape[1]), emb], dim=0) if cls_token else emb


def sincos_2d(dim: int, h: int, w: int, cls_token: bool = False, concat: str = "wh", *, step: float = 1.0,
              exponent_scale: float = 1.0) -> torch.Tensor:
    """(h*w [+1], dim): half the channels per axis; MAE order (x block, then y block) by default.

    With `cls_token`, a zero row is prepended for the class token. `step` spaces the tokens
    (resolution-aware tables: a token's ground size over a reference size, as Galileo and
    Scale-MAE scale positions); `exponent_scale` as in `sincos_1d`.
    """
    if dim % 4:
        raise SpecError(f"2D sin-cos embedding dim must be a multiple of 4, got {dim}")
    emb = _grid({"h": h, "w": w}, {"h": dim // 2, "w": dim // 2}, concat, step, exponent_scale)
    return _with_cls(emb, cls_token)


def sincos_3d(
    t: int,
    h: int,
    w: int,
    dims: tuple[int, int, int],
    concat: str = "thw",
    cls_token: bool = False,
) -> torch.Tensor:
    """(t*h*w [+1], sum(dims)) for a (time, height, width) token grid, w fastest.

    `dims` = channels of the (t, h, w) blocks; `concat` orders the blocks in the channel axis
    (Prithvi: dims=(D//16*4, D//16*6, D//16*6), concat="wht").
    """
    if len(dims) != 3:
        raise SpecError(f"dims must be (dim_t, dim_h, dim_w), got {dims!r}")
    emb = _grid({"t": t, "h": h, "w": w}, dict(zip("thw", dims)), concat)
    return _with_cls(emb, cls_token)


def sincos_2d_gsd(dim: int, h: int, w: int, gsd: torch.Tensor) -> torch.Tensor:
    """(B, h*w, dim) float32 table for B ground sampling distances (metres), row-major tokens.

    Clay's `posemb_sincos_2d_with_gsd`: k = dim/4 frequencies w_i = gsd * 10000^(-2 i / ((k-1) dim)),
    channel blocks [sin(x w), cos(x w), sin(y w), cos(y w)] with x the column index; float32
    arithmetic in the reference's order. One GSD per item (the reference takes one per batch).
    """
    if dim % 4 or dim < 8:
        raise SpecError(f"GSD-scaled 2D sin-cos embedding dim must be a multiple of 4 (>= 8), got {dim}")
    gsd = torch.as_tensor(gsd, dtype=torch.float32).reshape(-1)
    q = dim // 4
    omega = torch.arange(q, dtype=torch.float32, device=gsd.device) / (q - 1)
    omega = (1.0 / (_BASE ** (2 * omega / dim)))[None, :] * gsd[:, None]  # (B, q)
    y, x = torch.meshgrid(torch.arange(h, device=gsd.device), torch.arange(w, device=gsd.device), indexing="ij")
    ax = x.reshape(1, -1, 1) * omega[:, None, :]
    ay = y.reshape(1, -1, 1) * omega[:, None, :]
    return torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()], dim=-1)
