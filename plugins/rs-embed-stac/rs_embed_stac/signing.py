"""Planetary Computer asset signing: SAS tokens per storage container, cached until expiry.

The facts (from microsoft/planetary-computer-sdk-for-python, planetary_computer/sas.py): blob
hrefs live on `<account>.blob.core.windows.net/<container>/...`; a token for that container
comes from GET `<token_url>/<account>/<container>` as JSON `{"msft:expiry": RFC 3339,
"token": "<query string>"}`; the signed href is `href + "?" + token`; an optional subscription
key goes in the `Ocp-Apim-Subscription-Key` header. Like the SDK, the endpoint and the key come
from $PC_SDK_SAS_URL and $PC_SDK_SUBSCRIPTION_KEY when not given, and an href that already
carries a SAS signature (`se` and `sig` in its query) is read as it is. Tokens are reused until
`refresh_margin_s` before their expiry, so long runs sign every read with a live token and the
endpoint is asked once per container and token lifetime. Some collections (sentinel-1-rtc) need
the subscription key in practice: a 401/403 from the endpoint names the variable.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from rs_embed_core.errors import ProviderError
from rs_embed_core.retry import DEFAULT_RETRY, RetryPolicy, with_retries

from .search import classify_http_error

PC_TOKEN_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
PC_BLOB_SUFFIX = ".blob.core.windows.net"
SUBSCRIPTION_KEY_ENV = "PC_SDK_SUBSCRIPTION_KEY"
SAS_URL_ENV = "PC_SDK_SAS_URL"


def already_signed(href: str) -> bool:
    """Whether an href carries a SAS token already (its expiry `se` and signature `sig`)."""
    query = parse_qs(urlsplit(href).query)
    return "se" in query and "sig" in query


class PlanetaryComputerSigner:
    """sign(href) -> href with a SAS token (blob hrefs only; others pass unchanged).

    blob_suffix: which hosts are signed (tests point it at a loopback host); clock: seconds
    since the epoch (tests move time forward to expire tokens).
    """

    def __init__(self, token_url: str | None = None, *, blob_suffix: str = PC_BLOB_SUFFIX,
                 timeout_s: float = 30.0, refresh_margin_s: float = 60.0, retry: RetryPolicy = DEFAULT_RETRY,
                 subscription_key: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.token_url = (token_url or os.environ.get(SAS_URL_ENV) or PC_TOKEN_URL).rstrip("/")
        self.blob_suffix = blob_suffix
        self.timeout_s = timeout_s
        self.refresh_margin_s = refresh_margin_s
        self.retry = retry
        self.subscription_key = subscription_key if subscription_key is not None else os.environ.get(
            SUBSCRIPTION_KEY_ENV) or None
        self.clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}  # token request url -> (token, expiry epoch s)
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.requests = 0  # token endpoint calls (provenance and tests)

    def _container_url(self, href: str) -> str | None:
        parts = urlsplit(href)
        if not parts.netloc.endswith(self.blob_suffix):
            return None
        account = parts.netloc.split(".")[0].split(":")[0]
        container = parts.path.lstrip("/").split("/")[0]
        if not container:
            return None
        return f"{self.token_url}/{account}/{container}"

    def sign(self, href: str) -> str:
        url = self._container_url(href)
        if url is None or already_signed(href):
            return href
        token = self._token(url)
        return f"{href}{'&' if '?' in href else '?'}{token}"

    def _token(self, url: str) -> str:
        with self._lock:
            hit = self._tokens.get(url)
            if hit is not None and hit[1] - self.clock() > self.refresh_margin_s:
                return hit[0]
            lock = self._locks.setdefault(url, threading.Lock())
        with lock:  # one request per container at a time; others wait and reuse it
            with self._lock:
                hit = self._tokens.get(url)
            if hit is not None and hit[1] - self.clock() > self.refresh_margin_s:
                return hit[0]
            token, expiry = with_retries(lambda: self._request(url), self.retry)[0]
            with self._lock:
                self._tokens[url] = (token, expiry)
            return token

    def _request(self, url: str) -> tuple[str, float]:
        import requests

        headers = {"Ocp-Apim-Subscription-Key": self.subscription_key} if self.subscription_key else {}
        with self._lock:
            self.requests += 1
        try:
            resp = requests.get(url, headers=headers, timeout=self.timeout_s)
            resp.raise_for_status()
            body = resp.json()
        except Exception as exc:
            error = classify_http_error(exc, "Planetary Computer SAS token request")
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                fix = ("the subscription key was refused: check $" + SUBSCRIPTION_KEY_ENV) if self.subscription_key \
                    else (f"this container needs a subscription key (sentinel-1-rtc does): set ${SUBSCRIPTION_KEY_ENV} "
                          "or PlanetaryComputerSigner(subscription_key=...)")
                raise ProviderError(f"{error}; {fix}") from exc
            raise error from exc
        token, raw = body.get("token"), body.get("msft:expiry")
        if not isinstance(token, str) or not token or not isinstance(raw, str):
            raise ProviderError(f"Planetary Computer SAS token endpoint answered without token/msft:expiry: {body!r}")
        try:
            expiry = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ProviderError(f"Planetary Computer SAS token has an unreadable msft:expiry {raw!r}") from None
        if expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=dt.timezone.utc)
        return token, expiry.timestamp()
