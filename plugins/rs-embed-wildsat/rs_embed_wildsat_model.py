"""WildSAT's satellite encoders in torch, with torchvision's parameter names.

Imported only when a model is loaded (keeps `rs-embed models` torch-free). WildSAT fine-tunes
torchvision's `vit_b_16`, `resnet50` and `swin_t` *including their ImageNet classifier* (the
1000-way layer is the feature the rest of WildSAT consumes) and adds three bias-free linear heads
1000 -> 256 (text, location, image). The authors' training checkpoint stores this as
`satellite_state_dict`: `backbone.<torchvision keys>` and `decoder.backbone{1,2,3}.0.weight`, with a
`module.` prefix when trained distributed. `WildSAT` below has exactly those names, so the file loads
strictly; the backbones are written here (torchvision is a test-only reference) and equal
torchvision's on shared weights.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_core.card import Variant, WeightsSpec
from rs_embed_core.errors import WeightsError
from rs_embed_core.nn import Attention, tokens_to_grid
from rs_embed_core.weights import load_state_dict, strict_load, weights_file

# The training checkpoint wraps the state dict with the run's argparse options, optimiser and SINR/text
# models; only the satellite model is the encoder. Keys carry "module." when trained with DDP.
CHECKPOINT_ENTRY = "satellite_state_dict"
STRIP_PREFIX = "module."
HEAD_NAMES = ("text", "location", "image")  # decoder.backbone1/2/3, in the order train.py unpacks them


# --------------------------------------------------------------------------- ViT-B/16


class _VitBlock(nn.Module):
    """torchvision EncoderBlock: x + self_attention(ln_1(x)), then x + mlp(ln_2(x)); mlp.0 / mlp.3 Linears."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = Attention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _VitEncoder(nn.Module):
    def __init__(self, tokens: int, dim: int, depth: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.zeros(1, tokens, dim))
        self.layers = nn.Sequential()
        for i in range(depth):
            self.layers.add_module(f"encoder_layer_{i}", _VitBlock(dim, heads, mlp_dim))
        self.ln = nn.LayerNorm(dim, eps=1e-6)


class VitB16(nn.Module):
    """torchvision `vit_b_16`: conv patch embed, class token, learnt positions, 12 pre-norm blocks, ln, head."""

    def __init__(self, image_size: int = 224, patch: int = 16, dim: int = 768, depth: int = 12, heads: int = 12,
                 mlp_dim: int = 3072, classes: int = 1000) -> None:
        super().__init__()
        self.patch = patch
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = _VitEncoder((image_size // patch) ** 2 + 1, dim, depth, heads, mlp_dim)
        self.heads = nn.Sequential()
        self.heads.add_module("head", nn.Linear(dim, classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 224, 224) -> logits (B, 1000), patch tokens after the final LayerNorm (B, D, 14, 14)."""
        x = self.conv_proj(x)
        hw = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.encoder.pos_embedding
        x = self.encoder.ln(self.encoder.layers(x))
        return self.heads(x[:, 0]), tokens_to_grid(x[:, 1:], hw)


# --------------------------------------------------------------------------- ResNet-50


class _Bottleneck(nn.Module):
    """torchvision Bottleneck (ResNet v1.5: the stride sits on the 3x3 convolution)."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """torchvision `resnet50`: stem, 3/4/6/3 bottlenecks, global average pool, fc."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (blocks, width, stride) in enumerate(((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)), 1):
            layer = []
            for j in range(blocks):
                layer.append(_Bottleneck(cin, width, stride if j == 0 else 1))
                cin = width * 4
            setattr(self, f"layer{i}", nn.Sequential(*layer))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> logits (B, 1000), layer4's map (B, 2048, H/32, W/32)."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3))), x


# --------------------------------------------------------------------------- Swin-T


def _window_attention_mask(hp: int, wp: int, window: tuple[int, int], shift: tuple[int, int],
                           device: torch.device) -> torch.Tensor:
    """Additive (-100) mask keeping a shifted window's attention inside each of its regions (torchvision's)."""
    area = torch.zeros(hp, wp, device=device)
    slices = [((0, -window[i]), (-window[i], -shift[i]), (-shift[i], None)) for i in range(2)]
    count = 0
    for hs in slices[0]:
        for ws in slices[1]:
            area[hs[0]:hs[1], ws[0]:ws[1]] = count
            count += 1
    area = area.view(hp // window[0], window[0], wp // window[1], window[1]).permute(0, 2, 1, 3)
    area = area.reshape(-1, window[0] * window[1])
    mask = area.unsqueeze(1) - area.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def relative_position_index(window: int) -> torch.Tensor:
    """(window^4,) index into the bias table of each (query, key) offset pair in a window (torchvision's)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return (rel[..., 0] * (2 * window - 1) + rel[..., 1]).flatten()


class _ShiftedWindowAttention(nn.Module):
    """torchvision ShiftedWindowAttention (v1): relative position bias table, pad, cyclic shift, windows."""

    def __init__(self, dim: int, window: int, shift: int, heads: int) -> None:
        super().__init__()
        self.window, self.shift, self.heads = window, shift, heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        win = self.window
        x = F.pad(x, (0, 0, 0, (-w) % win, 0, (-h) % win))
        hp, wp = x.shape[1], x.shape[2]
        # a window covering the whole (padded) map is not shifted (torchvision's rule)
        shift = (0 if win >= hp else self.shift, 0 if win >= wp else self.shift)
        if sum(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        nw = (hp // win) * (wp // win)
        x = x.view(b, hp // win, win, wp // win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nw, win * win, c)
        q, k, v = self.qkv(x).reshape(x.shape[0], win * win, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        n = win * win
        bias = self.relative_position_bias_table[self.relative_position_index].view(n, n, -1).permute(2, 0, 1)
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1) + bias
        if sum(shift):
            mask = _window_attention_mask(hp, wp, (win, win), shift, x.device)
            attn = attn.view(b, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b * nw, n, c)
        x = self.proj(x).view(b, hp // win, wp // win, win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        if sum(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :h, :w, :].contiguous()


class _SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = _ShiftedWindowAttention(dim, window, shift, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchMerging(nn.Module):
    """2x2 neighbours concatenated (torchvision's order: (0,0), (1,0), (0,1), (1,1)), norm, linear 4C -> 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class _Permute(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class SwinT(nn.Module):
    """torchvision `swin_t`: 4x4 patch embed, stages of 2/2/6/2 blocks (window 7), norm, average pool, head."""

    def __init__(self, dim: int = 96, depths: tuple[int, ...] = (2, 2, 6, 2), heads: tuple[int, ...] = (3, 6, 12, 24),
                 window: int = 7, classes: int = 1000) -> None:
        super().__init__()
        stages: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, dim, 4, 4), _Permute(), nn.LayerNorm(dim, eps=1e-5))]
        for i, (depth, h) in enumerate(zip(depths, heads)):
            width = dim * 2**i
            stages.append(nn.Sequential(*(_SwinBlock(width, h, window, 0 if j % 2 == 0 else window // 2)
                                          for j in range(depth))))
            if i < len(depths) - 1:
                stages.append(_PatchMerging(width))
        self.features = nn.Sequential(*stages)
        self.num_features = dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features, eps=1e-5)
        self.head = nn.Linear(self.num_features, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> logits (B, 1000), the normed last stage (B, 768, H/32, W/32)."""
        x = self.norm(self.features(x)).permute(0, 3, 1, 2)
        return self.head(x.mean(dim=(2, 3))), x


# --------------------------------------------------------------------------- WildSAT


BACKBONES = {"vit_b_16": VitB16, "resnet50": ResNet50, "swin_t": SwinT}


class _Heads(nn.Module):
    """decoder.backbone{1,2,3}.0: bias-free Linear 1000 -> 256 into the text, location and image spaces."""

    def __init__(self, features: int, dim: int) -> None:
        super().__init__()
        for i in range(1, len(HEAD_NAMES) + 1):
            self.add_module(f"backbone{i}", nn.Sequential(nn.Linear(features, dim, bias=False)))


class WildSAT(nn.Module):
    """`backbone` (a torchvision classifier) + `decoder` (three linear heads): the authors' SingleTaskModel."""

    def __init__(self, arch: str, head_dim: int = 256, **backbone: Any) -> None:
        super().__init__()
        self.backbone = BACKBONES[arch](**backbone)
        self.decoder = _Heads(int(backbone.get("classes", 1000)), head_dim)

    def forward(self, x: torch.Tensor, head: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """pooled = the backbone's 1000-d output, or one head's 256-d projection of it; and the grid."""
        feats, grid = self.backbone(x)
        if head is not None:
            feats = getattr(self.decoder, f"backbone{HEAD_NAMES.index(head) + 1}")(feats)
        return feats, grid


def input_shift(x: torch.Tensor) -> torch.Tensor:
    """The authors' per-image "min-max" step: x - min(x) over all channels and pixels, divided by
    max(max(x - min), 1) -- i.e. by 1 for inputs in 0..1; an image with max == min becomes zeros."""
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    y = x - lo
    hi = y.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(hi > 0, y / torch.clamp(hi, min=1.0), torch.zeros_like(y))


def embed(net: WildSAT, x: torch.Tensor, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, 512, 512) in 0..1 -> pooled, grid. The ViT first resizes to 224 (bilinear, antialiased,
    as torchvision's Resize on the 512 px tile), then the per-image shift, then the network."""
    size = int(params["input_size"])
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return net(input_shift(x), params.get("head"))


# --------------------------------------------------------------------------- loading


def read_checkpoint(spec: WeightsSpec) -> dict[str, torch.Tensor]:
    """The satellite model's tensors from a verified file: a safetensors/state-dict file as is, or the
    authors' training checkpoint, opened with weights_only=True and argparse.Namespace (its "opt" entry,
    a plain attribute bag) as the only allowed class; nothing else in the pickle may build objects."""
    if Path(spec.filename).suffix.lower() == ".safetensors":
        return load_state_dict(spec)
    path = weights_file(spec)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"refused to unpickle {path}: it holds objects other than tensors, plain containers "
                           f"and argparse options ({str(exc).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(f"could not read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if isinstance(obj, dict) and isinstance(obj.get(CHECKPOINT_ENTRY), dict):
        obj = obj[CHECKPOINT_ENTRY]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} holds neither a state dict nor a WildSAT training checkpoint "
                           f"(a dict with {CHECKPOINT_ENTRY!r})")
    return obj


def build_net(params: dict[str, Any]) -> WildSAT:
    """The network of a variant's params; `backbone` (sizes) is set only by tests' small variants."""
    return WildSAT(str(params["arch"]), **dict(params.get("backbone", {})))


def build(variant: Variant, device: str = "cpu") -> WildSAT:
    """The variant's network, weights loaded strictly (nothing dropped: the file is the whole satellite model)."""
    if variant.weights is None:
        raise WeightsError(f"WildSAT variant {variant.name!r} has no weights spec")
    sd = read_checkpoint(variant.weights)
    with torch.device("meta"):
        net = build_net(variant.params)
    strict_load(net, sd, strip_prefix=STRIP_PREFIX, assign=True)
    for m in net.modules():  # a constant of the architecture: the file's copy (torchvision saves it) must agree
        if isinstance(m, _ShiftedWindowAttention):
            want = relative_position_index(m.window)
            if not torch.equal(m.relative_position_index.cpu(), want):
                raise WeightsError("a Swin relative_position_index in the weights file differs from torchvision's; "
                                   "the file is not a torchvision swin_t checkpoint")
    return net.to(device).eval()
