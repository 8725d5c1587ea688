"""The one call from this provider into the core's shared compositing (rs_embed_core.providers.composite).

Kept in one place so the provider's contract with the core is explicit: per-scene stacks on the
request grid in, the SensorSpec's composite / frames out, with the same meaning as every provider.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from rs_embed_core.specs import SensorSpec, TemporalSpec


def composite(stack: np.ndarray, valid: np.ndarray, dates: list[dt.datetime], sensor: SensorSpec,
              window: TemporalSpec) -> tuple[np.ndarray, np.ndarray, tuple[dt.datetime | None, ...], dict[str, Any]]:
    """(data (T, C, H, W), valid (T, H, W), frame times, meta such as empty_frames) of N scenes."""
    from rs_embed_core.providers import composite as core

    return core.composite_scenes(stack, valid, dates, sensor, window)
