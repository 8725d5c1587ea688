"""Signing in to Earth Engine: once per process, from files and environment, no network to decide.

Where things come from, first hit wins:
- project: the argument (backend="gee:PROJECT", GEEProvider(project=...)), $EE_PROJECT,
  $GOOGLE_CLOUD_PROJECT, the service-account key's project_id, the project stored by
  `earthengine set_project` / `earthengine authenticate` (~/.config/earthengine/credentials),
  the quota project of gcloud's application-default credentials.
- credentials: an object passed as GEEProvider(credentials=...), a service-account key file
  (key_file= or $GOOGLE_APPLICATION_CREDENTIALS when it holds a service-account key), else the
  client's persistent credentials (`earthengine authenticate`, or gcloud application-default).
- an `ee.Initialize(...)` the user already ran is reused when its project matches.

The earthengine-api client is process-global, so one process talks to one project; asking for
another raises GEEAuthError instead of silently switching. The client's own HTTP retries are
turned off (ee.data.setMaxRetries(0)): rs-embed retries with its one bounded, jittered policy
(rs_embed_core.retry), and two nested retry loops would multiply the attempts. Credentials and
tokens are never logged or put in an error.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from .errors import NO_PROJECT, NOT_SIGNED_IN, GEEAuthError, classify

PROJECT_ENV = ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT")

_lock = threading.Lock()
_initialized: dict[str, Any] | None = None  # {"project", "url"} of the initialisation this process uses


def _read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def ee_credentials_file() -> Path:
    """Where `earthengine authenticate` stores its refresh token (the client's own location)."""
    return Path("~/.config/earthengine/credentials").expanduser()


def adc_file() -> Path:
    """gcloud's application-default credentials file."""
    root = os.environ.get("CLOUDSDK_CONFIG") or os.path.join(
        os.environ.get("APPDATA", "") if os.name == "nt" else os.path.expanduser("~/.config"), "gcloud")
    return Path(root) / "application_default_credentials.json"


def service_account_key(key_file: str | os.PathLike | None) -> tuple[str, dict[str, Any]] | None:
    """(path, parsed key) of a service-account key: `key_file`, else $GOOGLE_APPLICATION_CREDENTIALS when
    that file is one. An explicit `key_file` that is missing or not a key is an error."""
    if key_file is not None:
        info = _read_json(key_file)
        if info is None or info.get("type") != "service_account" or "client_email" not in info:
            raise GEEAuthError(f"key_file={str(key_file)!r} is not a readable service-account key (JSON with "
                               "type 'service_account'); download one from the Cloud console (IAM > Service "
                               "accounts > Keys)")
        return str(key_file), info
    env = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if env:
        info = _read_json(env)
        if info is not None and info.get("type") == "service_account" and "client_email" in info:
            return env, info
    return None


def resolve_project(project: str | None, key: tuple[str, dict[str, Any]] | None) -> str | None:
    """The project to bill, from the first source that names one (see the module docstring)."""
    if project:
        return str(project)
    for name in PROJECT_ENV:
        if os.environ.get(name):
            return os.environ[name]
    if key is not None and key[1].get("project_id"):
        return str(key[1]["project_id"])
    stored = _read_json(ee_credentials_file()) or {}
    if stored.get("project"):
        return str(stored["project"])
    adc = _read_json(adc_file()) or {}
    return str(adc["quota_project_id"]) if adc.get("quota_project_id") else None


def credentials_found(key: tuple[str, dict[str, Any]] | None) -> bool:
    """Whether any credential source exists on this machine (files and environment only)."""
    if key is not None or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return True
    if (_read_json(ee_credentials_file()) or {}).get("refresh_token"):
        return True
    # gcloud ADC, or a Google-hosted runtime whose metadata server serves credentials
    return adc_file().is_file() or bool(os.environ.get("GCE_METADATA_HOST") or os.environ.get("COLAB_RELEASE_TAG"))


def ee_ready() -> bool:
    try:
        import ee
    except ImportError:
        return False
    return bool(ee.data.is_initialized())


def _current_project() -> str | None:
    import ee

    try:
        return ee.data._get_state().cloud_api_user_project  # the client keeps no public getter
    except Exception:
        return None


def preflight(project: str | None, key_file: str | os.PathLike | None, credentials: Any) -> str | None:
    """The project that will be used; GEEAuthError now if there is no way to sign in (no network)."""
    if credentials is None and ee_ready():  # signed in already, by rs-embed or by the user's ee.Initialize
        current = _initialized["project"] if _initialized is not None else _current_project()
        if project is None or project == current:
            return current
    key = service_account_key(key_file) if credentials is None else None
    resolved = resolve_project(project, key)
    if credentials is None and not credentials_found(key):
        raise GEEAuthError(NOT_SIGNED_IN)
    if resolved is None and key is None:
        raise GEEAuthError(NO_PROJECT)
    return resolved


def initialize(project: str | None, *, key_file: str | os.PathLike | None = None, credentials: Any = None,
               url: str | None = None, http_timeout_s: float | None = None) -> str | None:
    """Sign in once per process; later calls with the same project and url return at once."""
    global _initialized
    import ee

    with _lock:
        if _initialized is not None:
            if (project is None or project == _initialized["project"]) and url in (None, _initialized["url"]):
                return _initialized["project"]
            raise GEEAuthError(
                f"Earth Engine is already initialised in this process for project {_initialized['project']!r}"
                + (f" at {_initialized['url']}" if _initialized["url"] else "")
                + f"; the client is process-global, so one process uses one project (asked: {project!r})"
            )
        if credentials is None and url is None and ee.data.is_initialized():
            current = _current_project()
            if project is not None and project != current:
                raise GEEAuthError(f"ee.Initialize() already ran in this process for project {current!r}; "
                                   f"rs-embed was asked for {project!r}. Use one project per process.")
            _initialized = {"project": current, "url": None}
            _configure(ee, http_timeout_s)
            return current
        key = service_account_key(key_file) if credentials is None else None
        resolved = resolve_project(project, key)
        if credentials is None:
            if key is not None:
                credentials = ee.ServiceAccountCredentials(key[1]["client_email"], key_file=key[0])
            else:
                try:
                    credentials = ee.data.get_persistent_credentials()
                except Exception as exc:
                    if "authoriz" in str(exc).lower():
                        raise GEEAuthError(NOT_SIGNED_IN) from None
                    raise
        if resolved is None and key is None:
            raise GEEAuthError(NO_PROJECT)
        try:
            ee.Initialize(credentials=credentials, project=resolved, url=url)
        except Exception as exc:
            if "no project found" in str(exc):
                raise GEEAuthError(NO_PROJECT) from None
            typed = classify(exc, "signing in", resolved)
            if typed is None:
                raise
            raise typed from None
        _initialized = {"project": resolved, "url": url}
        _configure(ee, http_timeout_s)
        return resolved


def _configure(ee: Any, http_timeout_s: float | None) -> None:
    ee.data.setMaxRetries(0)
    if http_timeout_s:
        ee.data.setDeadline(int(http_timeout_s * 1000))


def size_pool(connections: int) -> None:
    """Let the client's HTTP session keep `connections` connections per host (requests' default is 10, so
    more calls in flight than that log "Connection pool is full" and open throwaway connections)."""
    import ee
    import requests.adapters

    session = ee.data._get_state().requests_session  # the client keeps no public handle on it
    if session is None:
        return
    with _lock:
        for prefix in ("https://", "http://"):
            current = session.get_adapter(prefix + "x")
            if getattr(current, "_pool_maxsize", 0) < connections:
                session.mount(prefix, requests.adapters.HTTPAdapter(pool_connections=10, pool_maxsize=connections))


def reset() -> None:
    """Forget the initialisation (and reset the client): for tests that start a new fake server."""
    global _initialized
    with _lock:
        _initialized = None
        try:
            import ee

            ee.Reset()
        except ImportError:
            pass
