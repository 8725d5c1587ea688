"""Offline fixtures: the gse and gee plugins registered in-process, the fake Earth Engine server with the
Satellite Embedding collection (two annual images) and Sentinel-2 scenes, no real credentials."""

from __future__ import annotations

import datetime as dt

import pytest

import rs_embed_gee
import rs_embed_gse
from rs_embed_core.fetching import raster_cache
from rs_embed_core.plugins import load_plugins, pm
from rs_embed_gee import auth
from rs_embed_gee.fake import S2, FakeEarthEngine, FakeScene, month_scenes, quick_retry

GSE = rs_embed_gse.CARD.input.collection


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "EE_PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG",
                 "GCE_METADATA_HOST", "COLAB_RELEASE_TAG"):
        monkeypatch.delenv(name, raising=False)
    auth.reset()
    raster_cache.clear()
    yield
    auth.reset()
    raster_cache.clear()


@pytest.fixture
def plugins():
    load_plugins()
    added = [m for m in (rs_embed_gee, rs_embed_gse) if not pm.is_registered(m)]
    for m in added:
        pm.register(m, name=f"{m.__name__}-test")
    yield
    for m in added:
        pm.unregister(m)


@pytest.fixture
def fake():
    scenes = {GSE: [FakeScene(f"gse_{y}_51N", dt.datetime(y, 1, 1), cloud=None) for y in (2021, 2022)],
              S2: month_scenes()}
    with FakeEarthEngine(scenes=scenes) as server:
        yield server


@pytest.fixture
def provider(fake, plugins):
    return fake.provider(retry=quick_retry())
