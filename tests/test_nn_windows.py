"""Shifted-window helpers (rs_embed_core.nn.windows), checked against their definitions cell by cell."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from rs_embed_core.nn import relative_position_index, shifted_window_mask, window_partition, window_reverse  # noqa: E402


@pytest.mark.parametrize("sizes, window", [((8, 12), (4, 3)), ((4, 6, 6), (2, 3, 3))], ids=["2d", "3d"])
def test_partition_groups_each_window_and_reverses(sizes, window):
    x = torch.arange(2 * int(torch.tensor(sizes).prod()) * 3, dtype=torch.float32).reshape(2, *sizes, 3)
    win = window_partition(x, window)
    counts = [s // w for s, w in zip(sizes, window)]
    assert win.shape == (2 * int(torch.tensor(counts).prod()), int(torch.tensor(window).prod()), 3)
    # window k of item 0 holds, row-major, the cells of block k of the window grid (last axis fastest)
    for k, block in enumerate(itertools.product(*[range(c) for c in counts])):
        cells = [x[(0, *[b * w + o for b, w, o in zip(block, window, off)])] for off in
                 itertools.product(*[range(w) for w in window])]
        assert torch.equal(win[k], torch.stack(cells))
    assert torch.equal(window_reverse(win, window, sizes), x)


def test_shift_mask_separates_cells_the_roll_brought_together():
    sizes, window, shift = (8, 8), (4, 4), (2, 2)
    mask = shifted_window_mask(sizes, window, shift)
    assert mask.shape == (4, 16, 16) and set(mask.unique().tolist()) <= {0.0, -100.0}
    # region of a rolled cell along one axis: 0 body, 1 last window's unshifted part, 2 wrapped strip
    def region(i: int, n: int, w: int, s: int) -> int:
        return 0 if i < n - w else (1 if i < n - s else 2)

    labels = torch.tensor([[region(i, 8, 4, 2) * 3 + region(j, 8, 4, 2) for j in range(8)] for i in range(8)])
    cells = window_partition(labels[None, :, :, None].float(), window)[..., 0]
    expected = torch.where(cells[:, :, None] == cells[:, None, :], 0.0, -100.0)
    assert torch.equal(mask, expected)
    assert torch.equal(shifted_window_mask(sizes, window, (0, 0)), torch.zeros(4, 16, 16))  # no shift: no mask


@pytest.mark.parametrize("window", [(3, 4), (2, 3, 3)])
def test_relative_position_index_is_a_bijection_of_offsets(window):
    index = relative_position_index(window)
    cells = list(itertools.product(*[range(w) for w in window]))
    radix = [2 * w - 1 for w in window]
    for a, p in enumerate(cells):
        for b, q in enumerate(cells):
            code = 0
            for d, (pi, qi, w) in enumerate(zip(p, q, window)):
                code = code * radix[d] + (pi - qi + w - 1)
            assert int(index[a, b]) == code
    assert int(index.max()) == int(torch.tensor(radix).prod()) - 1
