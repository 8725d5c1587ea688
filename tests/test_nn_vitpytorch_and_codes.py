"""rs_embed_core.nn parts Clay brought: vit-pytorch blocks, GSD-scaled / endpoint sin-cos tables,
the hypernetwork's name/activation/layout options, and the cyclic time/location codes."""

from __future__ import annotations

import datetime as dt
import math

import pytest

torch = pytest.importorskip("torch")

from rs_embed_core.errors import SpecError  # noqa: E402
from rs_embed_core.nn import (  # noqa: E402
    KernelGenerator,
    ResidualMlp,
    VitPytorchTransformer,
    generated_kernel,
    latlon_code,
    sincos_1d,
    sincos_2d_gsd,
    week_hour_code,
)


def test_vitpytorch_keys_and_attention_equal_the_textbook_formula():
    torch.manual_seed(0)
    t = VitPytorchTransformer(dim=16, depth=1, heads=2, dim_head=4, mlp_dim=32).eval()
    keys = set(t.state_dict())
    assert {"norm.weight", "layers.0.0.norm.weight", "layers.0.0.to_qkv.weight", "layers.0.0.to_out.weight",
            "layers.0.1.net.0.weight", "layers.0.1.net.1.bias", "layers.0.1.net.3.weight"} <= keys
    assert "layers.0.0.to_qkv.bias" not in keys and "layers.0.0.to_out.bias" not in keys
    x = torch.randn(2, 5, 16)
    attn = t.layers[0][0]
    q, k, v = attn.to_qkv(attn.norm(x)).chunk(3, dim=-1)
    heads = [torch.softmax(q[..., h * 4:(h + 1) * 4] @ k[..., h * 4:(h + 1) * 4].transpose(1, 2) / 2.0, -1)
             @ v[..., h * 4:(h + 1) * 4] for h in range(2)]
    torch.testing.assert_close(attn(x), attn.to_out(torch.cat(heads, -1)), atol=1e-6, rtol=1e-5)
    h = x + attn(x)
    torch.testing.assert_close(t(x), t.norm(h + t.layers[0][1](h)))
    with pytest.raises(SpecError):
        VitPytorchTransformer(dim=16, depth=0, heads=2, dim_head=4, mlp_dim=32)


def test_vitpytorch_vit_layout_names_and_same_function():
    """vit_layout: vit-pytorch's vit.Transformer names (to_out.0 with bias, MLP at net.1 / net.4); same maths."""
    simple = VitPytorchTransformer(dim=16, depth=1, heads=2, dim_head=4, mlp_dim=32).eval()
    vit = VitPytorchTransformer(dim=16, depth=1, heads=2, dim_head=4, mlp_dim=32, vit_layout=True).eval()
    keys = set(vit.state_dict())
    assert {"layers.0.0.to_out.0.weight", "layers.0.0.to_out.0.bias", "layers.0.1.net.1.weight",
            "layers.0.1.net.4.weight", "layers.0.1.net.4.bias"} <= keys and "layers.0.1.net.3.weight" not in keys
    rename = {"layers.0.0.to_out.weight": "layers.0.0.to_out.0.weight", "layers.0.1.net.3.weight": "layers.0.1.net.4.weight",
              "layers.0.1.net.3.bias": "layers.0.1.net.4.bias"}
    sd = {rename.get(k, k): v for k, v in simple.state_dict().items()}
    sd["layers.0.0.to_out.0.bias"] = torch.zeros(16)
    vit.load_state_dict(sd, strict=True)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(vit(x), simple(x))
    with torch.no_grad():
        vit.layers[0][0].to_out[0].bias.fill_(0.5)
    assert not torch.allclose(vit(x), simple(x))  # the bias is used


def test_sincos_1d_endpoint_spans_one_to_one_ten_thousandth():
    dim, pos = 8, torch.tensor([0.5, 2.19])
    got = sincos_1d(dim, pos, endpoint=True, dtype=torch.float32)
    omega = torch.tensor([10000.0 ** (-i / 3) for i in range(4)])
    expected = torch.cat([(pos[:, None] * omega).sin(), (pos[:, None] * omega).cos()], dim=1)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    assert got.dtype == torch.float32
    assert not torch.allclose(got, sincos_1d(dim, pos))  # the default (MAE) frequencies differ
    with pytest.raises(SpecError):
        sincos_1d(2, pos, endpoint=True)


def test_sincos_2d_gsd_layout_and_scaling():
    dim = 16
    table = sincos_2d_gsd(dim, 3, 4, torch.tensor([1.0, 2.0]))
    assert table.shape == (2, 12, dim)
    q = dim // 4
    omega = torch.tensor([10000.0 ** (-2 * (i / (q - 1)) / dim) for i in range(q)])
    row, col = 1, 2  # token 1 * 4 + 2, x = column first
    expected = torch.cat([(col * omega).sin(), (col * omega).cos(), (row * omega).sin(), (row * omega).cos()])
    torch.testing.assert_close(table[0, 6], expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(table[1, 1], table[0, 2])  # GSD 2 at column 1 == GSD 1 at column 2
    with pytest.raises(SpecError):
        sincos_2d_gsd(6, 2, 2, torch.tensor([1.0]))


def test_hypernet_parts_take_clay_names_activation_and_layout():
    dofa = ResidualMlp(8)
    assert set(dofa.state_dict()) == {"w1.weight", "w1.bias", "w2.weight", "w2.bias"}
    clay = ResidualMlp(8, activation="gelu", names=("l1", "l2"))
    assert set(clay.state_dict()) == {"l1.weight", "l1.bias", "l2.weight", "l2.bias"}
    x = torch.randn(3, 8)
    torch.testing.assert_close(clay(x), x + torch.nn.functional.gelu(clay.l2(torch.nn.functional.gelu(clay.l1(x)))))
    with pytest.raises(SpecError):
        ResidualMlp(8, activation="tanh")
    gen = KernelGenerator(8, 4, 2, heads=2, hidden=16, weight_tokens=3, encoder_name="encoder")
    assert "encoder.layers.0.self_attn.in_proj_weight" in gen.state_dict()
    assert gen(torch.randn(2, 8))[0].shape == (2, 4)

    c, k, d = 2, 2, 3
    w = torch.arange(c * k * k * d, dtype=torch.float32).reshape(c, k * k * d)
    kkd, b1 = generated_kernel(w, torch.ones(d), k, d, 0.5)
    dkk, b2 = generated_kernel(w, torch.ones(d), k, d, 0.5, layout="dkk", bias_scale=1.0)
    assert kkd.shape == dkk.shape == (d, c, k, k)
    assert kkd[1, 0, 0, 1] == 0.5 * w[0, 1 * d + 1]  # slice laid out (k1, k2, D)
    assert dkk[1, 0, 0, 1] == 0.5 * w[0, 1 * k * k + 1]  # slice laid out (D, k1, k2)
    assert torch.equal(b1, torch.full((d,), 0.5)) and torch.equal(b2, torch.ones(d))
    with pytest.raises(SpecError):
        generated_kernel(w, torch.ones(d), k, d, 0.5, layout="kdk")


def test_cyclic_codes():
    w, h = 28 * 2 * math.pi / 52, 18 * 2 * math.pi / 24
    assert week_hour_code(dt.datetime(2022, 7, 16, 18, 59)) == pytest.approx(
        (math.sin(w), math.cos(w), math.sin(h), math.cos(h)))
    assert latlon_code(90.0, -90.0) == pytest.approx((1.0, 0.0, -1.0, 0.0), abs=1e-12)
    for bad in ((91.0, 0.0), (0.0, 181.0), (float("nan"), 0.0)):
        with pytest.raises(SpecError):
            latlon_code(*bad)
