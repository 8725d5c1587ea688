"""End to end through the public API with the Earth Engine provider on the fake server: the user
documentation's calls as written (backend="gee"), batches with retries, export, inspection, auto."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import ee
from rs_embed import (
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
    export_batch,
    get_embedding,
    get_embeddings_batch,
    inspect_gee_patch,
    inspect_provider_patch,
)
from rs_embed_core.runner import resolve_provider
from rs_embed_gee import GEEProvider, auth
from rs_embed_gee.fake import stub_data_catalog

SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")
SPATIALS = [PointBuffer(121.5, 31.2, 320), PointBuffer(120.5, 30.2, 320), PointBuffer(121.0, 31.0, 320)]


@pytest.fixture
def signed_in(fake, gee_plugin, monkeypatch):
    """The user ran ee.Initialize(project=...) (here against the fake); backend="gee" then just works."""
    stub_data_catalog()
    ee.Initialize(credentials=fake.credentials(), url=fake.url, project=fake.project)
    return fake


def test_batch_through_the_runner_equals_single_calls_and_survives_429s(fake, gee_plugin):
    provider = fake.provider()
    fake.fail_next("computePixels", 429, n=2, retry_after=0.01)
    embs = get_embeddings_batch("spectral_stats", spatials=SPATIALS, temporal=SUMMER, output=OutputSpec.pooled(),
                                backend=provider)
    assert len(embs) == 3
    assert sum(e.meta["source"]["retries"] for e in embs) == 2
    assert all(e.meta["provider"] == "gee" and e.meta["source"]["image_ids"] for e in embs)
    single = get_embedding("spectral_stats", spatial=SPATIALS[1], temporal=SUMMER, backend=provider)
    np.testing.assert_allclose(single.data, embs[1].data, rtol=1e-6)
    assert not np.allclose(embs[0].data, embs[1].data)  # different places, different pixels


def test_seed_workflow_calls_work_as_written(signed_in, tmp_path, monkeypatch):
    fake = signed_in
    emb = get_embedding(
        "spectral_stats",
        spatial=PointBuffer(lon=121.5, lat=31.2, buffer_m=2048),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        output=OutputSpec.pooled(),
        backend="gee",
        device="auto",
    )
    assert np.isfinite(emb.data).all()
    embs = get_embeddings_batch(
        "spectral_stats",
        spatials=[PointBuffer(121.5, 31.2, 2048), PointBuffer(120.5, 30.2, 2048)],
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        output=OutputSpec.pooled(),
        backend="gee",
    )
    assert len(embs) == 2
    monkeypatch.chdir(tmp_path)
    before = len(fake.of("compute"))
    export_batch(
        spatials=[PointBuffer(121.5, 31.2, 2048), PointBuffer(120.5, 30.2, 2048)],
        names=["p1", "p2"],
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        models=["spectral_stats", "mosaiks"],
        out="exports",
        layout="per_item",
        backend="gee",
        save_inputs=True,
        save_embeddings=True,
        resume=True,
    )
    manifest = json.loads((tmp_path / "exports" / "manifest.json").read_text())
    assert manifest
    assert len(fake.of("compute")) - before == 2  # one fetch per place, shared by both models
    report = inspect_provider_patch(
        spatial=PointBuffer(121.5, 31.2, 2048),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        sensor=SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B4", "B3", "B2"), scale_m=10),
        backend="gee",
    )
    assert report["provider"] == "gee"
    alias = inspect_gee_patch(
        spatial=PointBuffer(121.5, 31.2, 2048),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        sensor=SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B4", "B3", "B2"), scale_m=10),
    )
    assert alias["bands"] == report["bands"]


def test_backend_strings_name_the_project(fake, gee_plugin):
    provider = resolve_provider("gee:my-project")
    assert isinstance(provider, GEEProvider) and provider.project == "my-project"
    assert isinstance(resolve_provider("gee"), GEEProvider)


def test_auto_picks_earth_engine_when_signed_in_else_local(fake, gee_plugin, monkeypatch, tmp_path):
    monkeypatch.setenv("RS_EMBED_LOCAL_PATH", str(tmp_path))
    with pytest.warns(UserWarning, match="using the local provider"):
        assert resolve_provider("auto").name == "local"
    auth.ee_credentials_file().parent.mkdir(parents=True)
    auth.ee_credentials_file().write_text(json.dumps({"refresh_token": "r", "project": "p"}))
    with pytest.warns(UserWarning, match="using Google Earth Engine"):
        assert isinstance(resolve_provider("auto"), GEEProvider)


def test_bad_input_fails_before_any_call(fake, gee_plugin):
    provider = fake.provider()
    with pytest.raises(Exception, match="not available"):
        get_embeddings_batch("spectral_stats", spatials=SPATIALS, temporal=SUMMER, backend=provider,
                             sensor=SensorSpec("LANDSAT/LC08/C02/T1_L2", ("SR_B4",), 30, cloud_mask="scl"))
    assert fake.requests == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GEEProvider.available()  # no network, no warning
