"""The DOFA family's patch-kernel hypernetwork, with the parameter names of its checkpoints.

DOFA and its descendants (Copernicus-FM, Clay's `DynamicEmbedding`) do not store a patch-embedding
kernel: they generate one slice per input band from a code of that band (a wavelength code, a Fourier
code of wavelength and bandwidth, a language embedding...). Parts, named as the released checkpoints name them:

- `ResidualMlp` (`w1`, `w2`): x + relu(w2(relu(w1(x)))), applied to the band codes (`fclayer`).
  Clay names its layers `l1`, `l2` and uses GELU: `names=("l1", "l2"), activation="gelu"`.
- `KernelGenerator` (`transformer_encoder.layers.0.*`, `fc_weight`, `fc_bias`, `weight_tokens`,
  `bias_token`): one post-norm transformer layer with torch's `TransformerEncoderLayer` names over
  [learned weight tokens, the C band codes, a bias token]; `fc_weight` of each band's output (plus
  its code) is that band's k*k*D kernel slice, `fc_bias` of the bias token's output the bias.
  Clay holds the layer under `encoder` instead of `transformer_encoder` (`encoder_name`).

`generated_kernel` reshapes the generator's output into a (D, C, k, k) convolution kernel and a (D,)
bias, scaled as the models do: DOFA lays each band's slice out (k, k, D) and scales both, Clay lays
it out (D, k, k) and scales the kernel only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from .transformer import Attention


_RESIDUAL_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class ResidualMlp(nn.Module):
    """x + act(second(act(first(x)))); DOFA: layers `w1`, `w2` with ReLU."""

    def __init__(self, dim: int, activation: str = "relu", names: tuple[str, str] = ("w1", "w2")) -> None:
        super().__init__()
        if activation not in _RESIDUAL_ACTIVATIONS:
            raise SpecError(f"unknown activation {activation!r}; known: {sorted(_RESIDUAL_ACTIVATIONS)}")
        self._act, self._names = _RESIDUAL_ACTIVATIONS[activation], names
        for name in names:
            self.add_module(name, nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = (getattr(self, n) for n in self._names)
        return x + self._act(second(self._act(first(x))))


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
                 hidden: int = 2048, weight_tokens: int = 128, encoder_name: str = "transformer_encoder") -> None:
        super().__init__()
        self._encoder_name = encoder_name
        self.add_module(encoder_name, _EncoderLayers([PostNormEncoderLayer(code_dim, heads, hidden)]))
        self.fc_weight = nn.Linear(code_dim, kernel_numel)
        self.fc_bias = nn.Linear(code_dim, embed_dim)
        self.weight_tokens = nn.Parameter(torch.zeros(weight_tokens, code_dim))
        self.bias_token = nn.Parameter(torch.zeros(1, code_dim))

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if codes.ndim != 2 or codes.shape[1] != self.bias_token.shape[1]:
            raise SpecError(f"band codes must be (C, {self.bias_token.shape[1]}), got {tuple(codes.shape)}")
        n = self.weight_tokens.shape[0]
        seq = torch.cat([self.weight_tokens, codes, self.bias_token], dim=0)[None]  # one sequence
        for layer in getattr(self, self._encoder_name).layers:
            seq = layer(seq)
        out = seq[0]
        return self.fc_weight(out[n:-1] + codes), self.fc_bias(out[-1])


def generated_kernel(weights: torch.Tensor, bias: torch.Tensor, kernel_size: int, embed_dim: int,
                     scale: float, *, layout: str = "kkd",
                     bias_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, k*k*D) slices, (D,) bias -> (D, C, k, k) kernel times `scale` and (D,) bias times
    `bias_scale` (default: `scale`).

    `layout` is how each band's slice was laid out in training: "kkd" (DOFA, Copernicus-FM) or
    "dkk" (Clay).
    """
    c, k = weights.shape[0], kernel_size
    if layout == "kkd":
        kernel = weights.reshape(c, k, k, embed_dim).permute(3, 0, 1, 2)
    elif layout == "dkk":
        kernel = weights.reshape(c, embed_dim, k, k).transpose(0, 1)
    else:
        raise SpecError(f"unknown kernel slice layout {layout!r}; known: 'kkd', 'dkk'")
    return kernel * scale, bias.reshape(embed_dim) * (scale if bias_scale is None else bias_scale)
