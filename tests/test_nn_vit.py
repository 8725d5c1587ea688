"""rs_embed_core.nn.vit.TimmViT: same keys and outputs as timm's VisionTransformer (global_pool="", no head)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from rs_embed_core.errors import SpecError  # noqa: E402
from rs_embed_core.nn.vit import TimmViT  # noqa: E402

CFG = {"dim": 64, "depth": 2, "heads": 4, "patch_size": 8, "image_size": 32, "norm_eps": 1e-6}


def _timm():
    from rs_embed_core.testing.references import import_torchvision

    import_torchvision()
    vit = pytest.importorskip("timm.models.vision_transformer")
    from functools import partial

    return vit.VisionTransformer(
        img_size=CFG["image_size"], patch_size=CFG["patch_size"], in_chans=3, embed_dim=CFG["dim"],
        depth=CFG["depth"], num_heads=CFG["heads"], mlp_ratio=4.0, qkv_bias=True, num_classes=0,
        global_pool="", norm_layer=partial(torch.nn.LayerNorm, eps=CFG["norm_eps"]),
    ).eval()


def _ours(**kw) -> TimmViT:
    cfg = {**CFG, **kw}
    return TimmViT(cfg.pop("dim"), cfg.pop("depth"), cfg.pop("heads"), **cfg).eval()


def _random_state(module: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in module.state_dict().items()}


def test_keys_and_outputs_equal_timm() -> None:
    ref, ours = _timm(), _ours()
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == want
    sd = _random_state(ref)
    ref.load_state_dict(sd, strict=True)
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref.forward_features(x)
        got, hw = ours(x)
    assert hw == (4, 4)
    assert got.shape == expected.shape == (3, 17, 64)
    assert (got - expected).abs().max().item() <= 1e-5


def test_patch_tokens_come_out_row_major() -> None:
    # no blocks and no norm: token 1 + r*w + c must be the projection of patch (r, c) plus its position row
    net = _ours(depth=0, final_norm=False)
    net.load_state_dict(_random_state(net), strict=True)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        tokens, (h, w) = net(x)
        conv = net.patch_embed.proj
        for r in range(h):
            for c in range(w):
                patch = x[:, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8]
                one = torch.nn.functional.conv2d(patch, conv.weight, conv.bias)[0, :, 0, 0]
                pos = net.pos_embed[0, 1 + r * w + c]
                assert torch.allclose(tokens[0, 1 + r * w + c], one + pos, atol=1e-5)


def test_position_table_override_per_item() -> None:
    net = _ours(pos_embed=False)
    sd = _random_state(net)
    net.load_state_dict(sd, strict=True)
    assert "pos_embed" not in net.state_dict()
    g = torch.Generator().manual_seed(3)
    x, tables = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 17, 64, generator=g)
    with torch.no_grad():
        both, _ = net(x, tables)
        first, _ = net(x[:1], tables[:1])
        second, _ = net(x[1:], tables[1:])
        shared, _ = net(x, tables[:1])
    assert torch.allclose(both[:1], first, atol=1e-5) and torch.allclose(both[1:], second, atol=1e-5)
    assert torch.allclose(shared[:1], first, atol=1e-5)
    assert not torch.allclose(shared[1:], second, atol=1e-3)  # the table really reaches the tokens


def test_bad_inputs_raise_spec_errors() -> None:
    net = _ours()
    with pytest.raises(SpecError, match="32, 32"):
        net(torch.zeros(1, 3, 48, 48))
    with pytest.raises(SpecError, match="position table"):
        net(torch.zeros(1, 3, 32, 32), torch.zeros(1, 16, 64))
    with pytest.raises(SpecError, match="position table"):
        _ours(pos_embed=False)(torch.zeros(1, 3, 32, 32))
    with pytest.raises(SpecError, match="multiple"):
        _ours(image_size=30)
