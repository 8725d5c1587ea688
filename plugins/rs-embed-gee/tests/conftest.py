"""Offline fixtures: the real earthengine-api client against a fake Earth Engine REST server on
127.0.0.1 (rs_embed_gee.fake), with the environment cleared of any real credentials."""

from __future__ import annotations

import pytest

import rs_embed_gee
from rs_embed_core.grid import GridSpec
from rs_embed_core.plugins import load_plugins, pm
from rs_embed_core.providers import FetchRequest
from rs_embed_core.specs import SensorSpec, TemporalSpec
from rs_embed_gee.fake import isolated, L8, S2, FakeEarthEngine, month_scenes, quick_retry, sample_grid



@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No real credentials or project leak in; a fresh client and raster cache per test."""
    yield from isolated(monkeypatch, tmp_path / "home")


@pytest.fixture
def fake():
    with FakeEarthEngine(scenes={S2: month_scenes(), L8: month_scenes("L8", (5, 21))}) as server:
        yield server


@pytest.fixture
def req():
    """req(sensor=None, grid=sample grid, temporal=June 2022) -> FetchRequest (S2 B4 B3 B2 at 10 m)."""

    def make(sensor: SensorSpec | None = None, grid: GridSpec | None = None,
             temporal: TemporalSpec | None = None) -> FetchRequest:
        return FetchRequest(grid or sample_grid(), temporal or TemporalSpec.range("2022-06-01", "2022-07-01"),
                            sensor or SensorSpec(S2, ("B4", "B3", "B2"), 10))

    return make


@pytest.fixture
def provider(fake):
    return fake.provider(retry=quick_retry(), quota_retry=quick_retry())


@pytest.fixture
def gee_plugin():
    """The plugin registered for this test, whether or not its entry point is installed."""
    load_plugins()
    added = not pm.is_registered(rs_embed_gee)
    if added:
        pm.register(rs_embed_gee, name="gee-test")
    yield rs_embed_gee
    if added:
        pm.unregister(rs_embed_gee)
