"""rs_embed_core.nn: FlexiViT kernel resizing, month / location encoders, patch masks, scaled sin-cos tables."""

from __future__ import annotations

import datetime as dt
import math

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from rs_embed_core.errors import SpecError  # noqa: E402
from rs_embed_core.nn import (  # noqa: E402
    FlexiPatchEmbed,
    lonlat_to_xyz,
    month_table,
    months_of,
    patch_missing,
    pi_resize_kernel,
    sincos_1d,
    sincos_2d,
)


def _gen(seed: int = 0):
    return torch.Generator().manual_seed(seed)


def test_resized_kernel_gives_the_same_token_for_an_upsampled_patch():
    """FlexiViT's invariant: for p >= k, <resize(x), pinv-resized w> = <x, w> (bicubic, antialiased)."""
    w = torch.randn(5, 3, 4, 4, generator=_gen(1))
    x = torch.randn(2, 3, 4, 4, generator=_gen(2))
    for p in (4, 6, 8, 12):
        up = F.interpolate(x, (p, p), mode="bicubic", antialias=True)
        w_p = pi_resize_kernel(w, p)
        assert w_p.shape == (5, 3, p, p)
        torch.testing.assert_close(F.conv2d(up, w_p), F.conv2d(x, w), rtol=1e-4, atol=1e-4)
    assert pi_resize_kernel(w, 4) is w


def test_month_table_is_a_yearly_circle():
    tab = month_table(8)
    assert tab.shape == (12, 8) and tab.dtype == torch.float32
    torch.testing.assert_close(tab[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    torch.testing.assert_close(tab[3], torch.tensor([1.0] * 4 + [0.0] * 4), atol=1e-6, rtol=0)  # April: 90 degrees
    d = lambda a, b: (tab[a] - tab[b]).norm().item()  # noqa: E731
    assert d(11, 0) == pytest.approx(d(0, 1), rel=1e-5) and d(0, 6) > d(0, 1)  # December next to January
    with pytest.raises(SpecError):
        month_table(7)


def test_months_of_frame_dates():
    times = ((dt.datetime(2022, 1, 16), dt.date(2022, 12, 1)),)
    assert months_of(times, "M") == [[0, 11]]
    with pytest.raises(SpecError, match="M needs the date of every frame"):
        months_of(((None,),), "M")


def test_lonlat_to_xyz_unit_vectors():
    xyz = lonlat_to_xyz(torch.tensor([0.0, 90.0, 0.0, 180.0]), torch.tensor([0.0, 0.0, 90.0, 0.0]))
    torch.testing.assert_close(xyz, torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0]]), atol=1e-6, rtol=0)
    rnd = lonlat_to_xyz(torch.tensor([11.6, -70.6]), torch.tensor([48.1, -33.4]))
    torch.testing.assert_close(rnd.norm(dim=-1), torch.ones(2))
    with pytest.raises(SpecError, match="lat -90..90"):
        lonlat_to_xyz(torch.tensor([0.0]), torch.tensor([91.0]))


def test_patch_missing_masks_empty_tokens_but_never_a_patch_everywhere():
    valid = torch.ones(1, 3, 4, 4, dtype=torch.bool)
    valid[0, 1] = False  # frame 1 empty
    valid[0, 0, :2, 2:] = False  # frame 0: top-right patch clouded
    valid[0, :, 2:, :2] = False  # bottom-left patch never valid
    valid[0, 2, 2, 2] = False  # one pixel only: the patch stays
    m = patch_missing(valid, 2)
    expected = torch.zeros(1, 3, 2, 2, dtype=torch.bool)
    expected[0, 1] = True
    expected[0, 0, 0, 1] = True
    expected[0, :, 1, 0] = False
    assert torch.equal(m, expected)
    with pytest.raises(SpecError):
        patch_missing(valid, 3)


def test_sincos_exponent_scale_and_step():
    """Galileo's frequencies 10000^(-i / (2 dim)) and positions scaled by a token's ground size."""
    emb = sincos_1d(8, [0.0, 3.0], exponent_scale=0.25)
    omega = 1.0 / 10000 ** (torch.arange(4, dtype=torch.float64) / 16)
    torch.testing.assert_close(emb[1], torch.cat([(3 * omega).sin(), (3 * omega).cos()]).float())
    scaled = sincos_2d(16, 3, 3, step=2.5, exponent_scale=0.25)
    x_block = sincos_1d(8, [0.0, 2.5, 5.0], exponent_scale=0.25)
    torch.testing.assert_close(scaled[1, :8], x_block[1])  # token (0, 1): x = 2.5
    torch.testing.assert_close(scaled[3, 8:], x_block[1])  # token (1, 0): y = 2.5
    torch.testing.assert_close(sincos_2d(16, 3, 3), sincos_2d(16, 3, 3, step=1.0, exponent_scale=1.0))
    assert not math.isclose(float(sincos_1d(8, [3.0])[0, 1]), float(emb[1, 1]))
