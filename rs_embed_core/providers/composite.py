"""Compositing scenes into frames: the one implementation every provider shares (numpy only).

`composite_scenes` turns N scenes already on the request grid (stack (N, C, H, W), valid
(N, H, W), acquisition dates) into the frames a SensorSpec asks for, with the meaning the
SensorSpec documents: `composite` is "median", "mosaic" (latest clear pixel wins),
"least_cloudy" (the one scene with the most valid pixels) or "none" (one frame per acquisition
day); `frames=n` splits the window into n equal bins and composites each, an empty bin giving an
all-invalid frame listed in meta["empty_frames"] (never back-filled from another bin).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from ..errors import SpecError
from ..specs import SensorSpec, TemporalSpec


_NETWORK_MAX = 8  # up to this many scenes, a compare-exchange network beats a full sort along axis 0


def _sorted(rows: list[np.ndarray]) -> list[np.ndarray]:
    """The scenes' values sorted per pixel (rank k in the k-th array), reusing `rows`' arrays, which the
    caller owns: an odd-even transposition network of elementwise min/max for a few scenes (each
    exchange makes one new array and overwrites one), numpy's sort for many."""
    n = len(rows)
    if n > _NETWORK_MAX:
        x = np.stack(rows)
        x.sort(axis=0)
        return list(x)
    rows = list(rows)
    for r in range(n):
        for k in range(r % 2, n - 1, 2):
            low = np.minimum(rows[k], rows[k + 1])
            rows[k + 1] = np.maximum(rows[k], rows[k + 1], out=rows[k])
            rows[k] = low
    return rows


def _pick(ranked: list[np.ndarray], count: int) -> np.ndarray:
    """The median of `count` observations from per-pixel sorted values (the middle one, or the mean
    of the middle two)."""
    lo, hi = (count - 1) // 2, count // 2
    return ranked[lo] if lo == hi else np.float32(0.5) * (ranked[lo] + ranked[hi])


def _middle(rows: list[np.ndarray]) -> np.ndarray:
    """Per-pixel median of the scenes as if every observation were valid, as a new array (three
    scenes: the median-of-three formula, four min/max passes)."""
    if len(rows) == 3:
        a, b, c = rows
        med = np.minimum(np.maximum(a, b), c)
        return np.maximum(med, np.minimum(a, b), out=med)
    return np.array(_pick(_sorted([np.array(r) for r in rows]), len(rows)))


def median(stack: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median over valid observations (mean of the two middle ones when even).

    Invalid observations become +inf and sort last, so a pixel with n observations finds them in
    the first n ranks of its sorted column. Where every scene is valid, the median of all scenes is
    computed at once (`_middle`). Otherwise, for a few scenes, the ranks are whole arrays and each
    observation count takes its median with one masked copy (no per-pixel gathers); for many, the
    stack is sorted and the pixels with missing scenes read their own ranks. The result is always an
    observation or the mean of two (only min, max, sort and that mean), whatever the path. Pixels
    without any observation are NaN.
    """
    n_scenes = stack.shape[0]
    rows = [np.asarray(stack[k], np.float32) for k in range(n_scenes)]
    if valid.all():
        return _middle(rows)[None], np.ones((1, *valid.shape[1:]), bool)
    n = valid.sum(axis=0, dtype=np.uint8 if n_scenes < 256 else np.int64)  # (H, W); the small type is 10x faster
    if n_scenes <= _NETWORK_MAX:
        ranked = _sorted([np.where(valid[k][None], rows[k], np.float32(np.inf)) for k in range(n_scenes)])
        med = np.array(_pick(ranked, n_scenes))
        for count in range(n_scenes - 1, -1, -1):  # before any copy lands in it, med is read by no later pick
            where = n == count
            if where.any():
                np.copyto(med, _pick(ranked, count) if count else np.float32(np.nan), where=where[None])
        return med[None], (n > 0)[None]
    x = np.array(stack, dtype=np.float32)
    np.copyto(x, np.float32(np.inf), where=~valid[:, None])  # 7x faster than boolean indexing
    x.sort(axis=0)
    med = _pick(list(x), n_scenes)
    pr, pc = np.nonzero(n < n_scenes)
    m = n[pr, pc].astype(np.int64)
    lo, hi = np.maximum((m - 1) // 2, 0), np.maximum(m // 2, 0)
    med[:, pr, pc] = (np.float32(0.5) * (x[lo, :, pr, pc] + x[hi, :, pr, pc])).T
    med[:, n == 0] = np.nan
    return med[None], (n > 0)[None]


def mosaic(stack: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Later observations (the stack is oldest first) overwrite earlier ones where valid."""
    out = np.zeros(stack.shape[1:], np.float32)
    for k in range(stack.shape[0]):
        out[:, valid[k]] = stack[k][:, valid[k]]
    return out[None], valid.any(axis=0)[None]


def least_cloudy(stack: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The single scene with the most valid pixels (the latest on a tie), and its index."""
    counts = valid.reshape(valid.shape[0], -1).sum(axis=1)
    k = int(len(counts) - 1 - np.argmax(counts[::-1]))
    return stack[k][None].astype(np.float32), valid[k][None], k


def day_groups(dates: list[dt.datetime | None]) -> list[tuple[dt.date | None, list[int]]]:
    """Scene indices grouped by acquisition day, oldest day first, undated scenes last."""
    keys: dict[dt.date | None, list[int]] = {}
    for k, when in enumerate(dates):
        keys.setdefault(when.date() if when is not None else None, []).append(k)
    order = sorted(keys, key=lambda d: (d is None, d or dt.date.min))
    return [(d, keys[d]) for d in order]


def per_day(stack: np.ndarray, valid: np.ndarray, dates: list[dt.datetime | None]
            ) -> tuple[np.ndarray, np.ndarray, tuple[dt.datetime | None, ...]]:
    """One frame per acquisition day (tiles of one day are mosaicked), oldest first, undated last.

    Frames with no valid pixel are dropped unless every frame is empty.
    """
    used = valid.reshape(len(dates), -1).any(axis=1)
    groups = day_groups(dates)
    if used.any():
        groups = [(d, idx) for d, idx in groups if used[idx].any()]
    data, ok, times = [], [], []
    for d, idx in groups:
        frame, fvalid = mosaic(stack[idx], valid[idx])
        data.append(frame[0])
        ok.append(fvalid[0])
        times.append(min((dates[k] for k in idx), default=None) if d is not None else None)
    return np.stack(data), np.stack(ok), tuple(times)


def middle(dates: list[dt.datetime]) -> dt.datetime | None:
    if not dates:
        return None
    lo, hi = min(dates), max(dates)
    return lo + (hi - lo) / 2


def frame_bins(dates: list[dt.datetime | None], window: TemporalSpec, n: int
               ) -> tuple[list[list[int]], list[dt.datetime], list[int]]:
    """Split [window.start, window.end) into n equal bins: (scene indices per bin, bin centres,
    indices of undated scenes). Scenes dated outside the window fall in no bin."""
    start = dt.datetime.combine(window.start, dt.time())
    span = dt.datetime.combine(window.end, dt.time()) - start
    bins: list[list[int]] = [[] for _ in range(n)]
    undated = []
    for k, when in enumerate(dates):
        if when is None:
            undated.append(k)
            continue
        if when.tzinfo is not None:
            when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
        b = int((when - start) / span * n)
        if 0 <= b < n:
            bins[b].append(k)
    return bins, [start + span * ((b + 0.5) / n) for b in range(n)], undated


def _reduce(composite: str, stack: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One frame from some scenes, and the indices of the scenes that contributed."""
    if composite == "least_cloudy":
        data, ok, k = least_cloudy(stack, valid)
        return data, ok, [k] if ok.any() else []
    data, ok = (median if composite == "median" else mosaic)(stack, valid)
    return data, ok, [k for k in range(stack.shape[0]) if valid[k].any()]


def composite_scenes(
    stack: np.ndarray, valid: np.ndarray, dates: list[dt.datetime | None], sensor: SensorSpec, window: TemporalSpec,
) -> tuple[np.ndarray, np.ndarray, tuple[dt.datetime | None, ...], dict[str, Any]]:
    """(data (T, C, H, W), valid (T, H, W), frame times, meta) of N scenes ordered oldest first.

    Invalid pixels of the result hold `sensor.fill_value`. meta: "composite", "frames",
    "empty_frames" (indices of frames without any observation), "scenes_per_frame"
    (indices into the N scenes that contributed to each frame).
    """
    n_scenes, c, h, w = stack.shape
    meta: dict[str, Any] = {"composite": sensor.composite, "frames": sensor.frames, "empty_frames": []}
    if n_scenes == 0:
        raise SpecError("no scene to composite")
    if sensor.composite == "none":
        data, ok, times = per_day(stack, valid, dates)
        meta["frames"] = len(times)
    elif sensor.frames == 1:
        data, ok, used = _reduce(sensor.composite, stack, valid)
        times = (middle([dates[k] for k in used if dates[k] is not None]),)
        meta["scenes_per_frame"] = [used]
    else:
        n = sensor.frames
        bins, centres, undated = frame_bins(dates, window, n)
        if undated and len(undated) == n_scenes:
            raise SpecError(f"frames={n} bins scenes by date, but none of the {n_scenes} scene(s) has a date")
        frames, oks, times_l, used_l = [], [], [], []
        for b, members in enumerate(bins):
            if members and valid[members].any():
                f, o, used = _reduce(sensor.composite, stack[members], valid[members])
                used = [members[u] for u in used]
            else:
                f, o, used = np.zeros((1, c, h, w), np.float32), np.zeros((1, h, w), bool), []
                meta["empty_frames"].append(b)
            frames.append(f[0])
            oks.append(o[0])
            times_l.append(centres[b])
            used_l.append(used)
        data, ok, times = np.stack(frames), np.stack(oks), tuple(times_l)
        meta["scenes_per_frame"] = used_l
        if undated:
            meta["undated_ignored"] = undated
    data = np.asarray(data, np.float32)  # a new array from every reducer: filled in place
    for k in range(data.shape[0]):
        if not ok[k].all():
            data[k][:, ~ok[k]] = np.float32(sensor.fill_value)
    return data, ok, times, meta
