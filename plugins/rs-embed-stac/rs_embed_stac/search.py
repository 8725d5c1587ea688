"""Item search: footprint + time window -> the scenes worth reading.

The server is asked for items of one collection intersecting the request's lon/lat footprint
in the closed datetime interval covering the half-open window [start, end), a page at a time,
at most `max_items`. Every filter is then applied again on the client (the window's open end,
platform, required properties, cloud cover, the assets a request needs), so a server that
ignores an extension (`query`) or rounds datetimes cannot let a wrong item through. HTTP
failures become TransientProviderError (429, 5xx, timeouts, dropped connections) or
ProviderError (anything else); the caller retries the whole search.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from attrs import field, frozen

from rs_embed_core.errors import ProviderError, TransientProviderError
from rs_embed_core.specs import TemporalSpec

from .catalogs import CollectionMap, norm_platform

_BASELINE = re.compile(r"_N(\d{2})(\d{2})_")
_BASELINE_PROPS = ("s2:processing_baseline", "sentinel:processing_baseline", "processing:version")
_BOA_APPLIED_PROPS = ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")


@frozen
class AssetRef:
    """One asset of one item: where it is, and what its raster:bands metadata says."""

    href: str
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None


@frozen
class Scene:
    """An item that passed every filter: what reading, masking and provenance need."""

    id: str
    collection: str
    datetime: dt.datetime  # naive UTC
    cloud_fraction: float | None  # eo:cloud_cover / 100
    assets: dict[str, AssetRef]  # core band name -> asset
    processing_baseline: str | None = None
    boa_offset_applied: bool | None = None
    platform: str | None = None
    properties: dict[str, Any] = field(factory=dict)  # what provenance records

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "collection": self.collection, "datetime": self.datetime.isoformat(),
                               "cloud_cover": None if self.cloud_fraction is None else self.cloud_fraction * 100}
        if self.platform:
            out["platform"] = self.platform
        if self.processing_baseline is not None:
            out["processing_baseline"] = self.processing_baseline
        if self.boa_offset_applied is not None:
            out["boa_offset_applied"] = self.boa_offset_applied
        return out


@frozen
class SearchResult:
    scenes: tuple[Scene, ...]
    returned: int  # items the server returned (after paging, at most max_items)
    truncated: bool  # max_items was reached: more items may exist
    dropped: dict[str, int]  # reason -> count


def footprint_boxes(lonlat: tuple[float, float, float, float]) -> list[tuple[float, float, float, float]]:
    """A lon/lat box, split in two where it crosses the antimeridian (lons may run past +/-180)."""
    w, s, e, n = lonlat
    if w < -180.0:
        return [(w + 360.0, s, 180.0, n), (-180.0, s, e, n)]
    if e > 180.0:
        return [(w, s, 180.0, n), (-180.0, s, e - 360.0, n)]
    return [(w, s, e, n)]


def datetime_interval(window: TemporalSpec) -> str:
    """The closed RFC 3339 interval holding the half-open [start, end) window."""
    last = dt.datetime.combine(window.end, dt.time()) - dt.timedelta(seconds=1)
    return f"{window.start.isoformat()}T00:00:00Z/{last.isoformat()}Z"


def _parse_datetime(raw: object) -> dt.datetime | None:
    if isinstance(raw, dt.datetime):
        when = raw
    elif isinstance(raw, str):
        try:
            when = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None) if when.tzinfo else when


def _float(v: object) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def processing_baseline(props: Mapping[str, Any], item_id: str, hrefs: Iterable[str]) -> str | None:
    """The Sentinel-2 processing baseline as "NN.NN": a property, else "_Nxxyy_" in the product
    name (s2:product_uri, the id, or an asset href: Planetary Computer's hrefs carry it)."""
    for key in _BASELINE_PROPS:
        v = props.get(key)
        if isinstance(v, str) and re.fullmatch(r"\d{1,2}\.\d{1,2}", v.strip()):
            major, minor = v.strip().split(".")
            return f"{int(major):02d}.{int(minor):02d}"
    for text in (props.get("s2:product_uri"), item_id, *hrefs):
        if isinstance(text, str):
            m = _BASELINE.search(text)
            if m:
                return f"{m.group(1)}.{m.group(2)}"
    return None


def _asset_ref(asset: Mapping[str, Any]) -> AssetRef | None:
    href = asset.get("href")
    if not isinstance(href, str) or not href:
        return None
    rb = asset.get("raster:bands")
    first = rb[0] if isinstance(rb, list) and rb and isinstance(rb[0], Mapping) else {}
    return AssetRef(href, _float(first.get("scale")), _float(first.get("offset")), _float(first.get("nodata")))


def scene_from_item(item: Mapping[str, Any], cmap: CollectionMap, bands: Iterable[str]) -> Scene | str:
    """The Scene of one item dict, or the reason it is dropped (wrong platform, tier, missing asset)."""
    props = item.get("properties") or {}
    item_id = str(item.get("id"))
    when = _parse_datetime(props.get("datetime") or props.get("start_datetime"))
    if when is None:
        return "no datetime"
    platform = props.get("platform")
    if cmap.platforms or cmap.id_prefixes:
        ok = (platform is not None and norm_platform(platform) in cmap.platforms) or any(
            item_id.startswith(p) for p in cmap.id_prefixes
        )
        if not ok:
            return "other platform"
    for key, accepted in cmap.require.items():
        if key in props and str(props[key]) not in accepted:
            return f"{key} not in {list(accepted)}"
    raw_assets = item.get("assets") or {}
    assets: dict[str, AssetRef] = {}
    for band in bands:
        ref = _asset_ref(raw_assets.get(cmap.assets[band]) or {})
        if ref is None:
            return f"no asset {cmap.assets[band]!r}"
        assets[band] = ref
    cloud = _float(props.get("eo:cloud_cover"))
    boa = next((props[k] for k in _BOA_APPLIED_PROPS if isinstance(props.get(k), bool)), None)
    hrefs = [a.get("href") for a in raw_assets.values() if isinstance(a, Mapping)]
    return Scene(
        id=item_id, collection=str(item.get("collection") or cmap.stac_collection), datetime=when,
        cloud_fraction=None if cloud is None else cloud / 100.0, assets=assets,
        processing_baseline=processing_baseline(props, item_id, [h for h in hrefs if isinstance(h, str)]),
        boa_offset_applied=boa, platform=None if platform is None else str(platform),
    )


def classify_http_error(exc: BaseException, what: str) -> ProviderError:
    """429 / 408 / 5xx, timeouts and connection failures -> TransientProviderError; else ProviderError."""
    import requests

    status = getattr(exc, "status_code", None)
    if status is None:
        resp = getattr(exc, "response", None)
        status = getattr(resp, "status_code", None)
    cause: BaseException | None = exc
    network = False
    while cause is not None:
        if isinstance(cause, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            network = True
            break
        cause = cause.__cause__ or cause.__context__
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    if status is not None:
        msg = f"{what}: HTTP {status}: {text}"
        if status in (408, 429) or 500 <= int(status) <= 599:
            retry_after = None
            resp = getattr(exc, "response", None)
            if resp is not None:
                retry_after = _float(resp.headers.get("Retry-After"))
            return TransientProviderError(msg, retry_after_s=retry_after)
        return ProviderError(msg)
    if network:
        return TransientProviderError(f"{what}: {text}")
    return ProviderError(f"{what}: {text}")


def open_client(url: str, timeout_s: float = 30.0) -> Any:
    """A pystac-client Client whose HTTP layer does not retry (`rs_embed_core.retry` does) and whose every
    request (landing page, search pages) times out after `timeout_s`. The timeout goes to Client.open too:
    given only to StacApiIO, Client.open's own `timeout=None` overwrites it (pystac-client 0.9)."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    try:
        return Client.open(url, stac_io=StacApiIO(timeout=timeout_s, max_retries=0), timeout=timeout_s)
    except Exception as exc:
        raise classify_http_error(exc, f"opening the STAC API {url}") from exc


def search(
    client_factory: Callable[[], Any],
    cmap: CollectionMap,
    lonlat: tuple[float, float, float, float],
    window: TemporalSpec,
    bands: Iterable[str],
    *,
    max_items: int,
    page_size: int,
    max_cloud_fraction: float | None,
    cloud_query: bool,
) -> SearchResult:
    """Search one collection over the footprint and window; filter on the client; newest last."""
    bands = tuple(bands)
    kwargs: dict[str, Any] = {"collections": [cmap.stac_collection], "datetime": datetime_interval(window),
                              "limit": page_size, "max_items": max_items}
    if cloud_query and max_cloud_fraction is not None:
        kwargs["query"] = {"eo:cloud_cover": {"lte": max_cloud_fraction * 100.0}}
    items: dict[str, dict[str, Any]] = {}
    truncated = False
    try:
        client = client_factory()
        for box in footprint_boxes(lonlat):
            found = 0
            for page in client.search(bbox=list(box), **kwargs).pages_as_dicts():
                for feat in page.get("features", []):
                    found += 1
                    items.setdefault(str(feat.get("id")), feat)
                if found >= max_items:
                    break
            truncated = truncated or found >= max_items
    except ProviderError:
        raise
    except Exception as exc:  # pystac_client.APIError, requests errors, bad JSON
        raise classify_http_error(exc, f"STAC search of {cmap.stac_collection!r}") from exc

    dropped: dict[str, int] = {}
    scenes: list[Scene] = []
    start = dt.datetime.combine(window.start, dt.time())
    end = dt.datetime.combine(window.end, dt.time())
    for feat in items.values():
        got = scene_from_item(feat, cmap, bands)
        if isinstance(got, str):
            dropped[got] = dropped.get(got, 0) + 1
            continue
        if not start <= got.datetime < end:
            reason = "outside the window"
        elif (max_cloud_fraction is not None and got.cloud_fraction is not None
              and got.cloud_fraction > max_cloud_fraction):
            reason = "cloud cover above max_cloud_fraction"
        else:
            scenes.append(got)
            continue
        dropped[reason] = dropped.get(reason, 0) + 1
    scenes.sort(key=lambda s: (s.datetime, s.id))
    return SearchResult(tuple(scenes), len(items), truncated, dropped)
