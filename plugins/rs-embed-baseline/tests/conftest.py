"""Shared fixtures: a real BatchContext for calling forward directly, and in-process registration."""

from __future__ import annotations

import numpy as np
import pytest

import rs_embed_baseline
from rs_embed_core.embedder import BatchContext
from rs_embed_core.grid import GridSpec
from rs_embed_core.plugins import load_plugins, pm
from rs_embed_core.specs import SensorSpec, TemporalSpec


@pytest.fixture
def make_ctx():
    """make_ctx(valid (B, T, H, W), want) -> the BatchContext the runner would build."""

    def make(valid: np.ndarray, want: str = "pooled", band_names=rs_embed_baseline.BANDS) -> BatchContext:
        b, t, h, w = valid.shape
        grid = GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, w, h)
        return BatchContext(
            grids=(grid,) * b, centers_lonlat=((121.5, 31.2),) * b, times=((None,) * t,) * b,
            temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
            sensor=SensorSpec(rs_embed_baseline.COLLECTION, rs_embed_baseline.BANDS, 10),
            want=want, band_names=tuple(band_names), valid=valid,
        )

    return make


@pytest.fixture
def baseline_plugin():
    """Make sure the plugin is registered for this test, whether or not its entry point is installed."""
    load_plugins()  # entry points first, so a later lazy load cannot register the module twice
    added = not pm.is_registered(rs_embed_baseline)
    if added:
        pm.register(rs_embed_baseline, name="baseline-test")
    yield rs_embed_baseline
    if added:
        pm.unregister(rs_embed_baseline)
