"""Signing in: where the project and credentials come from, and a typed error with the next step
for each way it fails. Nothing here touches the network beyond the loopback fake."""

from __future__ import annotations

import json
import logging

import pytest

import ee
from rs_embed_core.errors import DataNotFoundError
from rs_embed_core.specs import SensorSpec
from rs_embed_gee import GEEAssetNotFoundError, GEEAuthError, GEEPermissionError, GEEProvider, auth
from rs_embed_gee.fake import TOKEN, quick_retry, stub_data_catalog

S2_RGB = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B3", "B2"), 10)


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_not_signed_in_fails_at_check_with_the_next_step(fake):
    provider = GEEProvider(project="p", url=fake.url)
    with pytest.raises(GEEAuthError, match="earthengine authenticate") as info:
        provider.check(S2_RGB)
    assert "stac:earth-search" in str(info.value)
    assert fake.requests == [] and not GEEProvider.available()


def test_no_project_fails_at_check(monkeypatch):
    write(auth.ee_credentials_file(), {"refresh_token": "r"})
    with pytest.raises(GEEAuthError, match="gee:PROJECT"):
        GEEProvider().check(S2_RGB)
    assert not GEEProvider.available()
    monkeypatch.setenv("EE_PROJECT", "from-env")
    GEEProvider().check(S2_RGB)
    assert GEEProvider.available()


def test_project_lookup_order(monkeypatch, tmp_path):
    adc = write(tmp_path / "gcloud" / "application_default_credentials.json", {"quota_project_id": "from-adc"})
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(adc.parent))
    assert auth.resolve_project(None, None) == "from-adc"
    write(auth.ee_credentials_file(), {"refresh_token": "r", "project": "from-ee-file"})
    assert auth.resolve_project(None, None) == "from-ee-file"
    key = write(tmp_path / "key.json", {"type": "service_account", "client_email": "sa@x.iam", "project_id": "from-key"})
    assert auth.resolve_project(None, auth.service_account_key(key)) == "from-key"
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-gcp-env")
    assert auth.resolve_project(None, auth.service_account_key(key)) == "from-gcp-env"
    monkeypatch.setenv("EE_PROJECT", "from-ee-env")
    assert auth.resolve_project(None, None) == "from-ee-env"
    assert auth.resolve_project("explicit", None) == "explicit"


def test_service_account_key_from_environment_and_bad_key_files(monkeypatch, tmp_path):
    key = write(tmp_path / "key.json", {"type": "service_account", "client_email": "sa@x.iam", "project_id": "kp"})
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    assert auth.service_account_key(None) == (str(key), json.loads(key.read_text()))
    assert GEEProvider.available()
    GEEProvider().check(S2_RGB)  # project from the key
    user_adc = write(tmp_path / "adc.json", {"type": "authorized_user", "refresh_token": "r"})
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(user_adc))
    assert auth.service_account_key(None) is None  # not a service account: left to the client
    with pytest.raises(GEEAuthError, match="not a readable service-account key"):
        GEEProvider(project="p", key_file=tmp_path / "missing.json").check(S2_RGB)
    with pytest.raises(GEEAuthError, match="not a readable service-account key"):
        GEEProvider(project="p", key_file=user_adc).check(S2_RGB)


def test_rejected_credentials_are_an_auth_error_once(fake, req):
    provider = fake.provider(credentials=fake.credentials("stale-token"), retry=quick_retry())
    with pytest.raises(GEEAuthError, match="rejected the credentials") as info:
        provider.fetch(req())
    assert "stale-token" not in str(info.value)
    n = len(fake.requests)
    with pytest.raises(GEEAuthError):
        provider.fetch(req())  # remembered: no second round of failing calls
    assert len(fake.requests) == n


def test_a_project_without_access_is_a_permission_error(fake, req):
    provider = fake.provider(project="not-registered", retry=quick_retry())
    with pytest.raises(GEEPermissionError, match="registered for Earth Engine"):
        provider.fetch(req())
    assert len(fake.of("compute")) == 1  # not retried


def test_unknown_collection_is_asset_not_found(fake, provider, req):
    with pytest.raises(GEEAssetNotFoundError, match="NOPE/NOTHING.*data catalog") as info:
        provider.fetch(req(SensorSpec("NOPE/NOTHING", ("b1",), 10)))
    assert isinstance(info.value, DataNotFoundError)


def test_one_project_per_process(fake, provider, req):
    provider.fetch(req())
    other = fake.provider(project="another-project")
    with pytest.raises(GEEAuthError, match="one project"):
        other.fetch(req())


def test_an_existing_ee_initialize_is_reused(fake, req):
    stub_data_catalog()
    ee.Initialize(credentials=fake.credentials(), url=fake.url, project=fake.project)
    provider = GEEProvider()  # no project, no credentials: the user's initialisation serves
    provider.check(S2_RGB)
    r = provider.fetch(req())
    assert r.meta["project"] == fake.project
    with pytest.raises(GEEAuthError, match="one project"):
        GEEProvider(project="another-project").fetch(req())


def test_credentials_never_reach_logs_or_errors(fake, req, caplog):
    caplog.set_level(logging.DEBUG)
    provider = fake.provider(retry=quick_retry())
    fake.fail_next("computePixels", 500, n=1)
    provider.fetch(req())
    fake.fail_next("computePixels", 400, message="Image.select: Pattern 'B99' did not match any bands.")
    with pytest.raises(Exception) as info:
        provider.fetch(req(SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B8",), 10)))
    assert TOKEN not in caplog.text and TOKEN not in str(info.value) and TOKEN not in repr(provider)
    assert all(r.authorized for r in fake.requests)  # the token did travel, in the header only


def test_client_errors_without_an_http_status_are_classified_by_their_text():
    from rs_embed_core.errors import TransientProviderError
    from rs_embed_gee.errors import GEEComputationTooHeavyError, GEEError, classify

    def kind(exc):
        return type(classify(exc, "testing", "p"))

    assert kind(ee.EEException("Please authorize access to your Earth Engine account")) is GEEAuthError
    assert kind(ee.EEException("ee.Initialize: no project found. Call with project=")) is GEEAuthError
    assert kind(ee.EEException("Image asset 'projects/p/assets/x' not found.")) is GEEAssetNotFoundError
    assert kind(ee.EEException("Project 'p' is not registered to use Earth Engine.")) is GEEPermissionError
    assert kind(ee.EEException("User memory limit exceeded.")) is GEEComputationTooHeavyError
    assert kind(ee.EEException("Computation timed out.")) is GEEComputationTooHeavyError
    assert kind(ee.EEException("Image.select: Pattern 'B99' did not match any bands.")) is GEEError
    assert kind(TimeoutError("read timed out")) is TransientProviderError
    assert classify(KeyError("a bug of ours"), "testing") is None  # not the client's: propagates as is
