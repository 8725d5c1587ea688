"""Offline fixtures: the gse and gee plugins registered in-process, the fake Earth Engine server with the
Satellite Embedding collection (two annual images) and Sentinel-2 scenes, no real credentials."""

from __future__ import annotations

import datetime as dt

import pytest

import rs_embed_gee
import rs_embed_gse
from rs_embed_core.plugins import load_plugins, pm
from rs_embed_gee.fake import isolated, S2, FakeEarthEngine, FakeScene, month_scenes, quick_retry

GSE = rs_embed_gse.CARD.input.collection


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No real credentials or project leak in; a fresh client and raster cache per test."""
    yield from isolated(monkeypatch, tmp_path / "home")


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
