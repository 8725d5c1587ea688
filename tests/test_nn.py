"""rs_embed_core.nn: the torch toolkit ViT plugins share, checked against torch's own modules and known properties."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rs_embed_core.errors import SpecError  # noqa: E402
from rs_embed_core.nn import (  # noqa: E402
    Attention,
    Block,
    PatchEmbed,
    QuickGELU,
    Transformer,
    activation,
    grid_to_tokens,
    pool_tokens,
    prepend_tokens,
    sincos_1d,
    sincos_2d,
    sincos_3d,
    split_prefix,
    tokens_to_grid,
)


def _gen(seed: int = 0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- patch embedding + tokens


def test_patch_embed_projects_each_patch_row_major():
    pe = PatchEmbed(3, 5, patch_size=4, bias=True)
    x = torch.randn(2, 3, 8, 12, generator=_gen())
    tokens, hw = pe(x)
    assert hw == (2, 3) and tokens.shape == (2, 6, 5)
    w = pe.weight.reshape(5, -1)
    for r in range(2):
        for c in range(3):
            patch = x[:, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].reshape(2, -1)
            torch.testing.assert_close(tokens[:, r * 3 + c], patch @ w.T + pe.bias)
    assert set(PatchEmbed(3, 5, 4, bias=False).state_dict()) == {"weight"}  # owner names it (e.g. conv1)


def test_patch_embed_refuses_inputs_that_do_not_tile():
    with pytest.raises(SpecError, match="multiple of the patch size"):
        PatchEmbed(3, 5, 4)(torch.zeros(1, 3, 8, 10))
    with pytest.raises(SpecError, match=r"\(B, 3, H, W\)"):
        PatchEmbed(3, 5, 4)(torch.zeros(1, 4, 8, 8))


def test_token_grid_round_trip_and_order():
    tokens = torch.arange(2 * 6 * 4, dtype=torch.float32).reshape(2, 6, 4)
    grid = tokens_to_grid(tokens, (2, 3))
    assert grid.shape == (2, 4, 2, 3)
    assert torch.equal(grid[1, :, 1, 2], tokens[1, 5])  # token r*w + c sits at row r, column c
    back, hw = grid_to_tokens(grid)
    assert hw == (2, 3) and torch.equal(back, tokens)
    with pytest.raises(SpecError, match="do not form a 3x3 grid"):
        tokens_to_grid(tokens, (3, 3))


def test_prefix_tokens_and_pooling():
    x = torch.randn(2, 4, 3, generator=_gen())
    cls = torch.tensor([9.0, 8.0, 7.0])
    y = prepend_tokens(x, cls)
    assert y.shape == (2, 5, 3) and torch.equal(y[:, 0], cls.expand(2, 3))
    prefix, rest = split_prefix(y, 1)
    assert torch.equal(prefix[:, 0], y[:, 0]) and torch.equal(rest, x)
    assert torch.equal(pool_tokens(x, "mean"), x.mean(1)) and torch.equal(pool_tokens(x, "max"), x.max(1).values)
    with pytest.raises(SpecError):
        pool_tokens(x, "median")
    with pytest.raises(SpecError):
        split_prefix(x, 5)


# --------------------------------------------------------------------------- attention and blocks


@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_torch_multihead_attention(causal):
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_(0, 0.1, generator=_gen(1))
    attn = Attention(16, 4)
    attn.load_state_dict(mha.state_dict(), strict=True)  # same parameter names and shapes
    x = torch.randn(3, 7, 16, generator=_gen(2))
    mask = torch.full((7, 7), float("-inf")).triu(1) if causal else None
    with torch.no_grad():
        ref = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        torch.testing.assert_close(attn(x, mask), ref, rtol=1e-5, atol=1e-6)


def test_block_equals_torch_pre_norm_encoder_layer():
    ref = torch.nn.TransformerEncoderLayer(16, 4, dim_feedforward=64, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=_gen(3)))
    names = {"self_attn.": "attn.", "linear1.": "mlp.c_fc.", "linear2.": "mlp.c_proj.", "norm1.": "ln_1.", "norm2.": "ln_2."}
    sd = {}
    for k, v in ref.state_dict().items():
        for old, new in names.items():
            if k.startswith(old):
                k = new + k[len(old):]
        sd[k] = v
    block = Block(16, 4, mlp_ratio=4.0, act="gelu")
    block.load_state_dict(sd, strict=True)
    x = torch.randn(2, 5, 16, generator=_gen(4))
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref(x), rtol=1e-5, atol=1e-5)


def test_transformer_keys_follow_open_clip():
    keys = set(Transformer(8, 2, 2).state_dict())
    block = {"ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
             "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
             "mlp.c_proj.weight", "mlp.c_proj.bias"}
    assert keys == {f"resblocks.{i}.{k}" for i in range(2) for k in block}


def test_activations():
    x = torch.linspace(-4, 4, 17)
    torch.testing.assert_close(QuickGELU()(x), x * torch.sigmoid(1.702 * x))
    torch.testing.assert_close(activation("gelu")(x), torch.nn.functional.gelu(x))
    with pytest.raises(SpecError, match="unknown activation"):
        activation("swishy")
    with pytest.raises(SpecError, match="not divisible"):
        Attention(10, 3)


# --------------------------------------------------------------------------- sin-cos position embeddings


def test_sincos_1d_known_values():
    e = sincos_1d(8, 5)
    assert e.shape == (5, 8) and e.dtype == torch.float32
    assert torch.equal(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))  # sin 0, cos 0
    torch.testing.assert_close(e[:, :4] ** 2 + e[:, 4:] ** 2, torch.ones(5, 4))
    torch.testing.assert_close(e[:, 0], torch.sin(torch.arange(5.0)))  # first frequency is 1
    torch.testing.assert_close(e[3, 3], torch.tensor(math.sin(3 * 10000 ** (-3 / 4))))
    with pytest.raises(SpecError):
        sincos_1d(7, 3)


def test_sincos_2d_layout():
    h, w, d = 3, 4, 16
    e = sincos_2d(d, h, w)
    assert e.shape == (h * w, d)
    grid = e.reshape(h, w, d)
    col, row = sincos_1d(d // 2, w), sincos_1d(d // 2, h)
    for r in range(h):
        for c in range(w):
            # MAE layout: the first half encodes the column (x), the second the row (y)
            assert torch.equal(grid[r, c, : d // 2], col[c]) and torch.equal(grid[r, c, d // 2 :], row[r])
    with_cls = sincos_2d(d, h, w, cls_token=True)
    assert with_cls.shape == (h * w + 1, d) and not with_cls[0].any() and torch.equal(with_cls[1:], e)
    assert torch.equal(sincos_2d(d, h, w, concat="hw")[:, : d // 2], sincos_2d(d, h, w)[:, d // 2 :])


def _open_clip_pos_embed():
    """open_clip's MAE-derived pos_embed.py, loaded alone (numpy + torch) as an external reference."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "pos_embed.py"
    mod_spec = importlib.util.spec_from_file_location("_ref_pos_embed", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def test_sincos_2d_equals_the_mae_reference():
    ref = _open_clip_pos_embed().get_2d_sincos_pos_embed(64, 7, cls_token=True)
    np.testing.assert_allclose(sincos_2d(64, 7, 7, cls_token=True).numpy(), ref, rtol=0, atol=1e-6)


def test_sincos_3d_blocks():
    t, h, w = 2, 3, 4
    dims = (4, 6, 6)
    e = sincos_3d(t, h, w, dims)
    assert e.shape == (t * h * w, 16)
    grid = e.reshape(t, h, w, 16)
    tt, hh, ww = sincos_1d(4, t), sincos_1d(6, h), sincos_1d(6, w)
    assert torch.equal(grid[1, 2, 3], torch.cat([tt[1], hh[2], ww[3]]))
    # Prithvi-style channel order: width, height, time
    p = sincos_3d(t, h, w, dims, concat="wht").reshape(t, h, w, 16)
    assert torch.equal(p[1, 2, 3], torch.cat([ww[3], hh[2], tt[1]]))
    # frames differ only in the time block
    assert torch.equal(grid[0, :, :, 4:], grid[1, :, :, 4:]) and not torch.equal(grid[0, :, :, :4], grid[1, :, :, :4])
    assert sincos_3d(t, h, w, dims, cls_token=True).shape == (t * h * w + 1, 16)
    with pytest.raises(SpecError, match="concat order"):
        sincos_3d(t, h, w, dims, concat="thh")
