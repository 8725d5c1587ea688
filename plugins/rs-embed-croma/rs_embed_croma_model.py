"""CROMA's encoders in torch, with the parameter names of the released checkpoint (`CROMA_base.pt`).

Imported only when a model is loaded (keeps `rs-embed models` torch-free). Layout as torchgeo
0.8.1's `CROMA` builds it and the authors' file stores it (read there, written here):

- two ViTs without position embeddings or class token: `s2_encoder` (12 optical bands, depth D)
  and `s1_encoder` (VV, VH, depth D/2). Each flattens 8x8 patches channel-major
  (`c i j`) into `linear_input`, then runs pre-norm layers
  `transformer.layers.{i}.0` (attention: `input_norm`, bias-free `to_qkv`, `to_out`) and
  `transformer.layers.{i}.1` (MLP: `input_norm`, `net.0`, GELU, `net.3`), then `norm_out`.
- Position comes only from 2D-ALiBi: every attention adds -slope_h * euclidean distance between
  the two patches (in patch units) to its scores; 16 heads, slopes 2^(-0.5 (h+1)).
- `s1_GAP_FFN` / `s2_GAP_FFN`: LayerNorm -> Linear(D, 4D) -> GELU -> Linear(4D, D) on the mean
  token: the unimodal representations the contrastive loss was trained on.
- `joint_encoder`: depth D/2 of [self-attention on the SAR tokens, cross-attention from the SAR
  tokens to the optical tokens (one shared `input_norm` for both, bias-free `to_q/to_k/to_v`),
  MLP], then `norm_out`; the joint representation is the mean of its tokens.

The checkpoint is a dict of five state dicts (`s1_encoder`, `s1_GAP_FFN`, `s2_encoder`,
`s2_GAP_FFN`, `joint_encoder`); `load_checkpoint` flattens it to `<part>.<key>` names, which are
this module's, and loads it strictly.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.nn import tokens_to_grid
from rs_embed_core.weights import strict_load, weights_file

PATCH = 8  # fixed in CROMA
OPTICAL_CHANNELS, SAR_CHANNELS = 12, 2
PARTS = ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")


def alibi_slopes(heads: int) -> list[float]:
    """CROMA's per-head slopes for a power-of-two head count: start * start**h, start = 2^-(2^-(log2 n - 3))."""
    if heads < 1 or heads & (heads - 1):
        raise SpecError(f"CROMA's 2D-ALiBi is defined for a power-of-two head count, got {heads}")
    start = 2.0 ** (-(2.0 ** -(math.log2(heads) - 3)))
    return [start * start**h for h in range(heads)]


@lru_cache(maxsize=8)
def _alibi(heads: int, rows: int, cols: int) -> torch.Tensor:
    """(1, heads, N, N) float32: -slope_h * distance(patch_i, patch_j), patches in row-major order."""
    yy, xx = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                            indexing="ij")
    pts = torch.stack([yy.flatten(), xx.flatten()], dim=1)
    dist = torch.cdist(pts, pts)  # (N, N), float64
    slopes = torch.tensor(alibi_slopes(heads), dtype=torch.float64)
    return (-dist[None] * slopes[:, None, None]).to(torch.float32)[None]


def alibi(heads: int, rows: int, cols: int, device: torch.device) -> torch.Tensor:
    return _alibi(heads, rows, cols).to(device)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over `heads`; (B, N, D) in and out."""
    b, n, d = q.shape
    q, k, v = (t.reshape(b, -1, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
    return y.transpose(1, 2).reshape(b, n, d)


class SelfAttention(nn.Module):
    """Pre-norm self-attention with an additive position bias (CROMA's `Attention`)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise SpecError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.input_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self.to_qkv(self.input_norm(x)).chunk(3, dim=-1)
        return self.to_out(_attend(q, k, v, self.heads, bias))


class CrossAttention(nn.Module):
    """Queries from x, keys/values from context, both through the same `input_norm`."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise SpecError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.input_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x, context = self.input_norm(x), self.input_norm(context)
        return self.to_out(_attend(self.to_q(x), self.to_k(context), self.to_v(context), self.heads, bias))


class FeedForward(nn.Module):
    """input_norm -> net.0 -> GELU -> net.3 (index 2 held CROMA's dropout: kept as Identity for the key names)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, mult * dim), nn.GELU(), nn.Identity(), nn.Linear(mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_norm(x))


class Transformer(nn.Module):
    """`layers.{i}` = [SelfAttention, FeedForward] residual pairs, then `norm_out`."""

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleList([SelfAttention(dim, heads), FeedForward(dim)]) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for attn, ffn in self.layers:  # type: ignore[misc]
            x = attn(x, bias) + x
            x = ffn(x) + x
        return self.norm_out(x)


class CrossTransformer(nn.Module):
    """`layers.{i}` = [SelfAttention, CrossAttention, FeedForward], then `norm_out` (the joint encoder)."""

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([SelfAttention(dim, heads), CrossAttention(dim, heads), FeedForward(dim)])
            for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for attn, cross, ffn in self.layers:  # type: ignore[misc]
            x = attn(x, bias) + x
            x = cross(x, context, bias) + x
            x = ffn(x) + x
        return self.norm_out(x)


class PatchViT(nn.Module):
    """8x8 patches flattened channel-major into `linear_input`, then the ALiBi transformer."""

    def __init__(self, dim: int, depth: int, heads: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.linear_input = nn.Linear(PATCH * PATCH * channels, dim)
        self.transformer = Transformer(dim, depth, heads)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // PATCH, PATCH, w // PATCH, PATCH).permute(0, 2, 4, 1, 3, 5)
        x = x.reshape(b, (h // PATCH) * (w // PATCH), c * PATCH * PATCH)  # (b, hw, c i j)
        return self.transformer(self.linear_input(x), bias)


def _gap_ffn(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


class CROMA(nn.Module):
    """The three CROMA encoders and the two unimodal heads; keys `<part>.<checkpoint key>`."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        dim, depth, self.heads = int(cfg["embed_dim"]), int(cfg["depth"]), int(cfg["heads"])
        alibi_slopes(self.heads)  # refuse a head count the position bias is not defined for
        self.s1_encoder = PatchViT(dim, depth // 2, self.heads, SAR_CHANNELS)
        self.s1_GAP_FFN = _gap_ffn(dim)
        self.s2_encoder = PatchViT(dim, depth, self.heads, OPTICAL_CHANNELS)
        self.s2_GAP_FFN = _gap_ffn(dim)
        self.joint_encoder = CrossTransformer(dim, depth // 2, self.heads)

    def _bias(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if x.ndim != 4 or h % PATCH or w % PATCH or h < PATCH or w < PATCH:
            raise SpecError(f"CROMA needs (B, C, H, W) inputs with H and W multiples of {PATCH}, got {tuple(x.shape)}")
        return alibi(self.heads, h // PATCH, w // PATCH, x.device)

    def optical(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 12, H, W) -> pooled = s2_GAP_FFN(mean token), tokens (B, N, D)."""
        tokens = self.s2_encoder(x, self._bias(x))
        return self.s2_GAP_FFN(tokens.mean(dim=1)), tokens

    def sar(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, H, W) -> pooled = s1_GAP_FFN(mean token), tokens (B, N, D)."""
        tokens = self.s1_encoder(x, self._bias(x))
        return self.s1_GAP_FFN(tokens.mean(dim=1)), tokens

    def joint(self, x_optical: torch.Tensor, x_sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both images on one grid -> pooled = mean joint token, joint tokens (B, N, D)."""
        if x_optical.shape[-2:] != x_sar.shape[-2:]:
            raise SpecError(f"CROMA's joint encoder needs optical and SAR on one grid, got "
                            f"{tuple(x_optical.shape)} and {tuple(x_sar.shape)}")
        bias = self._bias(x_optical)
        sar_tokens = self.s1_encoder(x_sar, bias)
        optical_tokens = self.s2_encoder(x_optical, bias)
        tokens = self.joint_encoder(sar_tokens, optical_tokens, bias)
        return tokens.mean(dim=1), tokens


def to_grid(tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return tokens_to_grid(tokens, (hw[0] // PATCH, hw[1] // PATCH))


def flatten_checkpoint(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """CROMA's {part: state dict} file -> {"part.key": tensor}; an already flat dict passes through."""
    out: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            out[prefix] = value
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            raise WeightsError(f"{where}: entry {prefix!r} is a {type(value).__name__}, not a tensor")

    if not isinstance(obj, Mapping):
        raise WeightsError(f"{where} does not hold a dict of state dicts (found a {type(obj).__name__})")
    walk("", obj)
    return out


def load_checkpoint(variant: Variant) -> dict[str, torch.Tensor]:
    """The variant's verified file, opened with weights_only=True (memory-mapped), flattened.

    rs_embed_core.weights.load_state_dict takes one flat state dict; CROMA's file nests one per
    part, so the verified path from `weights_file` is read here, with the same safe loader.
    """
    if variant.weights is None:
        raise WeightsError(f"CROMA variant {variant.name!r} has no weights spec")
    spec = variant.weights
    path = weights_file(spec)  # pinned, sha256-verified; a missing file is reported here
    where = f"{spec.repo_id}/{spec.filename} ({path})"
    import pickle

    try:
        try:  # memory-mapped: the 0.8 GB (base) file is not held twice while loading
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"refused to unpickle {where}: it holds objects other than tensors and plain "
                           f"containers, and rs-embed only loads checkpoints with weights_only=True ({exc})") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(f"could not read checkpoint {where}: {exc}") from None
    return flatten_checkpoint(obj, where)


def build(variant: Variant, device: str = "cpu") -> CROMA:
    """All CROMA encoders of `variant`, weights loaded strictly from its pinned checkpoint, eval mode."""
    sd = load_checkpoint(variant)  # a missing file is reported before any model work
    model = CROMA(variant.params)
    strict_load(model, sd, drop=())  # the released file holds exactly these five parts
    return model.to(device).eval()
