"""Shifted-window attention plumbing of Swin-family models, for any number of axes (2D images, 3D videos).

A feature map (B, *S, C) is cut into non-overlapping windows of `window` cells, each attended to on its
own; alternate blocks roll the map by `shift` first and mask the pairs of cells that the roll brought
together from opposite edges. Swin v1/v2 (2D) and Video Swin (3D) share these definitions; only their
attention inside a window differs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """(B, *S, C) -> (B * windows, prod(window), C); each S[i] must be a multiple of window[i].

    Windows are ordered row-major over the window grid, cells row-major inside a window (last axis fastest).
    """
    b, *sizes, c = x.shape
    n = len(sizes)
    split: list[int] = [b]
    for s, w in zip(sizes, window):
        split += [s // w, w]
    x = x.reshape(*split, c)
    order = [0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1]
    return x.permute(*order).reshape(-1, math.prod(window), c)


def window_reverse(windows: torch.Tensor, window: Sequence[int], sizes: Sequence[int]) -> torch.Tensor:
    """The inverse of `window_partition`: (B * windows, prod(window), C) -> (B, *sizes, C)."""
    n = len(sizes)
    counts = [s // w for s, w in zip(sizes, window)]
    c = windows.shape[-1]
    x = windows.reshape(-1, *counts, *window, c)
    order = [0]
    for i in range(n):
        order += [1 + i, 1 + n + i]
    return x.permute(*order, 2 * n + 1).reshape(-1, *sizes, c)


def shifted_window_mask(sizes: Sequence[int], window: Sequence[int], shift: Sequence[int],
                        device: torch.device | str | None = None) -> torch.Tensor:
    """(windows, N, N) additive mask for a map rolled by -shift: 0 inside a region, -100 across regions.

    Along each axis the rolled map has three regions (the body, the last window's unshifted part and
    the wrapped-around strip); cells of different regions never attend to each other.
    """
    labels = torch.zeros((1, *sizes, 1), device=device)
    region = 0
    axes = [(slice(0, -w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift)]
    for index in itertools.product(*axes):
        labels[(slice(None), *index, slice(None))] = region
        region += 1
    cells = window_partition(labels, window).squeeze(-1)  # (windows, N)
    diff = cells[:, None, :] - cells[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def relative_position_index(window: Sequence[int]) -> torch.Tensor:
    """(N, N) index of each pair's relative offset into a table of prod(2 * window - 1) entries.

    Offsets along each axis are shifted to start at 0 and combined in mixed radix (2w - 1), first
    axis most significant: Swin's and Video Swin's `relative_position_index`.
    """
    grids = torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")
    coords = torch.stack(grids).flatten(1)  # (n, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, n)
    index = torch.zeros(rel.shape[:2], dtype=torch.long)
    for i, w in enumerate(window):
        index = index * (2 * w - 1) + rel[..., i] + (w - 1)
    return index
