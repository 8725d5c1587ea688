"""Earth Engine failures as typed rs-embed errors, each saying what to do next.

`classify` maps what the earthengine-api client raises (an EEException whose context is the
googleapiclient HttpError, or a ConnectionError / TimeoutError from its HTTP transport) onto:
GEEAuthError (not signed in, no project, credentials rejected), GEEPermissionError (403),
GEEAssetNotFoundError (a collection or image that does not exist), GEEQuotaError (429: retried
with its own longer policy), GEEComputationTooHeavyError ("User memory limit exceeded",
"Computation timed out": the provider splits the request), TransientProviderError (5xx, 408,
timeouts, dropped connections: retried) and GEEError (the rest). The HTTP status decides first:
a 401/403 is never read as a quota error because its text mentions a quota (Google's "requires
a quota project" for application-default credentials is a 403 that retrying cannot fix).
Messages carry the server's reason, never a token.
"""

from __future__ import annotations

import re

from rs_embed_core.errors import DataNotFoundError, ProviderError, TransientProviderError

NO_ACCOUNT = "No Earth Engine account? backend='stac:earth-search' (rs-embed-stac) or backend='local:DIR' need none."
NOT_SIGNED_IN = (
    "Earth Engine: no credentials on this machine. Run `earthengine authenticate` (or ee.Authenticate() in "
    "Python) once, or point GOOGLE_APPLICATION_CREDENTIALS or GEEProvider(key_file=...) at a service-account "
    "key file. " + NO_ACCOUNT
)
NO_PROJECT = (
    "Earth Engine needs a Google Cloud project registered for Earth Engine: pass backend='gee:PROJECT' or "
    "GEEProvider(project='PROJECT'), or set EE_PROJECT (or GOOGLE_CLOUD_PROJECT). Register a project at "
    "https://code.earthengine.google.com/register. " + NO_ACCOUNT
)


class GEEError(ProviderError):
    """Earth Engine refused or failed a request for a reason retrying will not fix."""


class GEEAuthError(GEEError):
    """Not signed in, no project, or the credentials were rejected (HTTP 401)."""


class GEEPermissionError(GEEError):
    """The account or project may not use Earth Engine or read an asset (HTTP 403)."""


class GEEAssetNotFoundError(GEEError, DataNotFoundError):
    """A collection or image id that does not exist (or that the project cannot see)."""


class GEERequestTooLargeError(GEEError):
    """A computePixels request over the server's per-request limits (HTTP 400); the provider splits it."""


class GEEComputationTooHeavyError(GEEError):
    """A computation over Earth Engine's per-request memory or time limit (HTTP 400); the provider splits it,
    by frames first, then by window."""


class GEEQuotaError(TransientProviderError):
    """A quota or rate limit (HTTP 429); retried with backoff, raised once the retries are spent."""


_TOO_LARGE = re.compile(r"request size|must be less than or equal to \d+ bytes|request exceeds|too many bands|"
                        r"pixels? per side|dimensions? .*(?:exceed|too large)", re.I)
_TOO_HEAVY = re.compile(r"memory limit exceeded|computation timed out", re.I)
_QUOTA_PROJECT = re.compile(r"quota project", re.I)
_NOT_FOUND = re.compile(r"not found|does not exist", re.I)
_PROJECT = re.compile(r"not (?:been )?registered|has not been used in project", re.I)


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it (the client raises EEException inside `except HttpError`)."""
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(out) < 6:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _http_error(exc: BaseException) -> tuple[int | None, str, float | None]:
    """(status, reason, Retry-After seconds) of the HttpError behind `exc`, if there is one."""
    for e in _chain(exc):
        resp = getattr(e, "resp", None)
        status = getattr(resp, "status", None)
        if status is None:
            continue
        try:
            reason = e._get_reason()  # type: ignore[attr-defined]  # googleapiclient's own parse of the body
        except Exception:
            reason = str(e)
        try:
            retry_after = float(resp.get("retry-after"))  # type: ignore[union-attr]
        except (TypeError, ValueError):
            retry_after = None
        return int(status), str(reason), retry_after
    return None, str(exc), None


_NETWORK_ERRORS = ("Timeout", "ReadTimeout", "ConnectTimeout", "ConnectionError", "ChunkedEncodingError", "timeout",
                   "RemoteDisconnected", "IncompleteRead")


def _network(exc: BaseException) -> bool:
    return any(isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _NETWORK_ERRORS
               for e in _chain(exc))


def classify(exc: BaseException, what: str, project: str | None = None) -> Exception | None:
    """The typed error for a failure of the client while doing `what`; None if `exc` did not come from
    Earth Engine or its transport (a bug to propagate as is)."""
    module = type(exc).__module__ or ""
    status, reason, retry_after = _http_error(exc)
    if status is None and _network(exc):
        return TransientProviderError(f"Earth Engine, {what}: {type(exc).__name__}: {str(exc)[:300]}")
    if status is None and not module.startswith(("ee", "googleapiclient", "google")):
        return None
    reason = reason.strip()[:500]
    where = f" (project {project})" if project else ""
    refresh = any(type(e).__name__ == "RefreshError" for e in _chain(exc))  # google-auth could not renew a token
    if status == 401 or refresh or "authorize access" in reason.lower():
        return GEEAuthError(f"Earth Engine rejected the credentials{where} while {what}: {reason}. " + NOT_SIGNED_IN)
    if status == 403 or (status is None and _PROJECT.search(reason)):
        fix = ("Set the project the credentials bill: `gcloud auth application-default set-quota-project PROJECT`, "
               "or pass backend='gee:PROJECT' / set EE_PROJECT." if _QUOTA_PROJECT.search(reason) else
               "Check that the project is registered for Earth Engine (https://code.earthengine.google.com/register) "
               "and that this account has the roles Earth Engine Resource Viewer and Service Usage Consumer on it.")
        return GEEPermissionError(f"Earth Engine denied access{where} while {what}: {reason}. {fix}")
    if status == 429 or (status is None and ("quota" in reason.lower() or "too many concurrent" in reason.lower())):
        return GEEQuotaError(
            f"Earth Engine quota or rate limit{where} while {what}: {reason}. Retried with backoff; lower "
            "GEEProvider(max_concurrency=..., max_inflight=..., requests_per_s=...) or try again later.",
            retry_after_s=retry_after,
        )
    if _TOO_HEAVY.search(reason):
        return GEEComputationTooHeavyError(f"Earth Engine, {what}: {reason}")
    if status is not None and (status == 408 or 500 <= status <= 599):
        return TransientProviderError(f"Earth Engine, {what}: HTTP {status}: {reason}", retry_after_s=retry_after)
    if "no project" in reason.lower():
        return GEEAuthError(NO_PROJECT)
    if status == 400 and _TOO_LARGE.search(reason):
        return GEERequestTooLargeError(f"Earth Engine, {what}: {reason}")
    if status == 404 or _NOT_FOUND.search(reason):
        return GEEAssetNotFoundError(
            f"Earth Engine, {what}: {reason}. Check the id (SensorSpec.collection) in the Earth Engine data "
            "catalog (https://developers.google.com/earth-engine/datasets) and that the project can read it."
        )
    return GEEError(f"Earth Engine, {what}: " + (f"HTTP {status}: " if status else "") + reason)
