"""The DOFA family's patch-kernel hypernetwork, with the parameter names of its checkpoints.

DOFA and its descendants (Copernicus-FM) do not store a patch-embedding kernel: they generate one
slice per input band from a code of that band (a wavelength code, a Fourier code of wavelength and
bandwidth, a language embedding...). Parts, named as the released checkpoints name them:

- `ResidualMlp` (`w1`, `w2`): x + relu(w2(relu(w1(x)))), applied to the band codes (`fclayer`).
- `KernelGenerator` (`transformer_encoder.layers.0.*`, `fc_weight`, `fc_bias`, `weight_tokens`,
  `bias_token`): one post-norm transformer layer with torch's `TransformerEncoderLayer` names over
  [learned weight tokens, the C band codes, a bias token]; `fc_weight` of each band's output (plus
  its code) is that band's k*k*D kernel slice, `fc_bias` of the bias token's output the bias.

`generated_kernel` reshapes the generator's output into a (D, C, k, k) convolution kernel and a (D,)
bias, both scaled as the models do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from .transformer import Attention


class ResidualMlp(nn.Module):
    """x + relu(w2(relu(w1(x))))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, dim)
        self.w2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.w2(F.relu(self.w1(x))))


class PostNormEncoderLayer(nn.Module):
    """norm1(x + attn(x)), then norm2(x + linear2(gelu(linear1(x)))): torch's TransformerEncoderLayer
    (norm_first=False, GELU, no dropout) under its own parameter names."""

    def __init__(self, dim: int, heads: int, hidden: int, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


class _EncoderLayers(nn.Module):
    """Holds `layers.{i}`, so keys read `transformer_encoder.layers.0...` as torch's TransformerEncoder's."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class KernelGenerator(nn.Module):
    """Band codes (C, W) -> per-band kernel slices (C, kernel_numel) and a bias (embed_dim,)."""

    def __init__(self, code_dim: int, kernel_numel: int, embed_dim: int, *, heads: int = 4,
                 hidden: int = 2048, weight_tokens: int = 128) -> None:
        super().__init__()
        self.transformer_encoder = _EncoderLayers([PostNormEncoderLayer(code_dim, heads, hidden)])
        self.fc_weight = nn.Linear(code_dim, kernel_numel)
        self.fc_bias = nn.Linear(code_dim, embed_dim)
        self.weight_tokens = nn.Parameter(torch.zeros(weight_tokens, code_dim))
        self.bias_token = nn.Parameter(torch.zeros(1, code_dim))

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if codes.ndim != 2 or codes.shape[1] != self.bias_token.shape[1]:
            raise SpecError(f"band codes must be (C, {self.bias_token.shape[1]}), got {tuple(codes.shape)}")
        n = self.weight_tokens.shape[0]
        seq = torch.cat([self.weight_tokens, codes, self.bias_token], dim=0)[None]  # one sequence
        for layer in self.transformer_encoder.layers:
            seq = layer(seq)
        out = seq[0]
        return self.fc_weight(out[n:-1] + codes), self.fc_bias(out[-1])


def generated_kernel(weights: torch.Tensor, bias: torch.Tensor, kernel_size: int, embed_dim: int,
                     scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, k*k*D) slices, (D,) bias -> (D, C, k, k) kernel and (D,) bias, both times `scale`.

    Each band's slice is laid out (k, k, D), the order the generators were trained with.
    """
    c = weights.shape[0]
    kernel = weights.reshape(c, kernel_size, kernel_size, embed_dim).permute(3, 0, 1, 2)
    return kernel * scale, bias.reshape(embed_dim) * scale
