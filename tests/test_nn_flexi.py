"""rs_embed_core.nn flexible patch sizes, channel groups and 2D ALiBi, against their published properties."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from rs_embed_core.errors import SpecError  # noqa: E402
from rs_embed_core.nn import (  # noqa: E402
    BandGroupPatchEmbed,
    FlexiPatchEmbed,
    TimmBlock,
    alibi_bias_2d,
    alibi_slopes,
    pi_resize_kernel,
    resize_matrix,
)


def _gen(seed: int = 0):
    return torch.Generator().manual_seed(seed)


def _resize(x: torch.Tensor, n: int) -> torch.Tensor:
    return F.interpolate(x, size=(n, n), mode="bicubic", antialias=True, align_corners=False)


def test_resize_matrix_is_the_bicubic_antialiased_resize():
    for old, new in ((8, 16), (16, 8), (16, 12), (5, 7)):
        x = torch.randn(3, 1, old, old, generator=_gen(old * new), dtype=torch.float64)
        want = _resize(x, new).reshape(3, -1)
        got = x.reshape(3, -1) @ resize_matrix(old, new).T
        assert torch.allclose(got, want, atol=1e-12), (old, new)


@pytest.mark.parametrize("old, new", [(8, 16), (16, 24), (4, 10)])
def test_pi_resize_upsampling_keeps_every_patch_token(old, new):
    """FlexiViT's equivalence: <resize(x), PI-resize(w)> == <x, w> for every patch x when the patch grows."""
    w = torch.randn(5, 2, old, old, generator=_gen(1), dtype=torch.float64)
    x = torch.randn(7, 2, old, old, generator=_gen(2), dtype=torch.float64)
    w_new = pi_resize_kernel(w, new)
    assert w_new.shape == (5, 2, new, new) and w_new.dtype == torch.float64
    before = torch.einsum("bchw,dchw->bd", x, w)
    after = torch.einsum("bchw,dchw->bd", _resize(x, new), w_new)
    assert torch.allclose(before, after, atol=1e-9)


def test_pi_resize_downsampling_is_the_least_squares_kernel():
    w = torch.randn(6, 1, 16, 16, generator=_gen(3), dtype=torch.float64)
    w8 = pi_resize_kernel(w, 8)
    bt = resize_matrix(16, 8).T  # (256, 64)
    flat, flat8 = w.reshape(6, -1).T, w8.reshape(6, -1).T
    assert torch.allclose(bt.T @ (bt @ flat8 - flat), torch.zeros(64, 6, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(flat8, torch.linalg.lstsq(bt, flat).solution, atol=1e-9)
    assert pi_resize_kernel(w, 16) is w  # trained size: the kernel itself


def test_flexi_patch_embed_on_a_patchwise_upsampled_image_gives_the_same_tokens():
    """The layer-level statement: patch 16 on an image whose every 8 x 8 patch was upsampled to 16 x 16
    gives the tokens of patch 8 on the image (float32 kernels: within 1e-4)."""
    torch.manual_seed(0)
    emb = FlexiPatchEmbed(1, 12, base_patch=8).eval()
    img = torch.randn(2, 1, 32, 32, generator=_gen(4))
    patches = img.unfold(2, 8, 8).unfold(3, 8, 8)  # (2, 1, 4, 4, 8, 8)
    up = _resize(patches.reshape(-1, 1, 8, 8).double(), 16).float().reshape(2, 1, 4, 4, 16, 16)
    big = up.permute(0, 1, 2, 4, 3, 5).reshape(2, 1, 64, 64)
    with torch.no_grad():
        t8, hw8 = emb(img, 8)
        t16, hw16 = emb(big, 16)
    assert hw8 == hw16 == (4, 4)
    assert torch.allclose(t8, t16, atol=1e-4), (t8 - t16).abs().max()


def test_flexi_patch_embed_is_a_plain_conv_at_its_trained_size_and_refuses_untiled_inputs():
    emb = FlexiPatchEmbed(3, 4, base_patch=4)
    x = torch.randn(1, 3, 8, 12, generator=_gen(5))
    tokens, hw = emb(x)
    ref = F.conv2d(x, emb.weight, emb.bias, stride=4).flatten(2).transpose(1, 2)
    assert hw == (2, 3) and torch.equal(tokens, ref)
    assert set(emb.state_dict()) == {"weight", "bias"}
    with pytest.raises(SpecError, match="multiple of the patch size 5"):
        emb(x, 5)
    with pytest.raises(SpecError, match="expected"):
        emb(torch.zeros(1, 2, 8, 8))


def test_band_group_patch_embed_averages_the_tokens_of_the_bands_present():
    emb = BandGroupPatchEmbed(["S2:Red", "S2:NIR", "S1:VV"], dim=6, base_patch=4)
    assert "patch_embed.S2:Red.weight" in emb.state_dict() and emb.patch_embed["S1:VV"].weight.shape == (6, 1, 4, 4)
    red, nir = torch.randn(2, 1, 16, 16, generator=_gen(6)), torch.randn(2, 1, 16, 16, generator=_gen(7))
    with torch.no_grad():
        both, hw = emb([("S2:Red", red), ("S2:NIR", nir)], 8)
        alone = [emb.patch_embed[n](x, 8)[0] for n, x in (("S2:Red", red), ("S2:NIR", nir))]
        one, _ = emb([("S2:Red", red)], 8)
    assert hw == (2, 2)
    assert torch.allclose(both, (alone[0] + alone[1]) / 2, atol=1e-6)
    assert torch.equal(one, alone[0])
    with pytest.raises(SpecError, match="one size"):
        emb([("S2:Red", red), ("S2:NIR", nir[..., :8, :8])], 4)
    with pytest.raises(SpecError, match="no patch kernel"):
        emb([("S2:Blue", red)], 4)


def test_alibi_slopes_are_the_papers_sequence():
    assert alibi_slopes(8) == [2.0 ** -(i + 1) for i in range(8)]
    assert alibi_slopes(16) == pytest.approx([2.0 ** (-(i + 1) / 2) for i in range(16)])
    # not a power of two: the power below's slopes, then every other slope of twice that power
    assert alibi_slopes(3) == [2 ** -4, 2 ** -8, 2 ** -2]
    assert alibi_slopes(6) == [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]
    assert alibi_slopes(12) == pytest.approx([2.0 ** -(i + 1) for i in range(8)]
                                             + [2.0 ** (-(2 * i + 1) / 2) for i in range(4)])
    with pytest.raises(SpecError):
        alibi_slopes(0)


def test_alibi_bias_is_minus_slope_times_euclidean_distance():
    pts = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.5, 0.5], [0.5, 0.5]])
    bias = alibi_bias_2d(pts, torch.tensor([1.0, 0.25]))
    assert bias.shape == (1, 2, 4, 4)
    assert bias[0, 0, 0, 1] == -5.0 and bias[0, 1, 1, 0] == -1.25
    assert bias[0, 0, 2, 3] == 0.0 and torch.all(torch.diagonal(bias[0], dim1=-2, dim2=-1) == 0)
    assert torch.equal(bias, bias.transpose(-1, -2))
    assert bias[0, 0, 0, 2].item() == pytest.approx(-math.sqrt(0.5))
    with pytest.raises(SpecError):
        alibi_bias_2d(torch.zeros(3), torch.ones(2))


def test_timm_block_attention_bias_is_added_to_the_scaled_logits():
    torch.manual_seed(1)
    blk = TimmBlock(8, 2).eval()
    x = torch.randn(2, 5, 8, generator=_gen(8))
    bias = torch.randn(1, 2, 5, 5, generator=_gen(9))
    a = blk.attn
    h = blk.norm1(x)
    q, k, v = a.qkv(h).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    att = ((q @ k.transpose(-1, -2)) / 2.0 + bias).softmax(-1)
    want = x + a.proj((att @ v).transpose(1, 2).reshape(2, 5, 8))
    want = want + blk.mlp(blk.norm2(want))
    with torch.no_grad():
        assert torch.allclose(blk(x, bias), want, atol=1e-5)
        assert torch.allclose(blk(x, torch.zeros(1, 2, 5, 5)), blk(x), atol=1e-6)
