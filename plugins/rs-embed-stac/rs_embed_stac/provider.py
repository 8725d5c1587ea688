"""The `stac` provider: search an open STAC API, read each asset's window onto the request grid.

One fetch = one search (footprint + window, paged, at most `max_items`, cloud filter per item)
+ one warped read per (scene, band) through the core's shared reading code (HTTP range reads
of COGs over /vsicurl/, GDAL settings passed per read) + the core's compositing. A scene whose
first read (its cloud mask, else its first band) has no valid pixel over the ROI is not read
further. Reads run in parallel, at most `read_workers` at once across every fetch of this
provider (optionally at most `requests_per_s`); each search and each read is retried on 429 /
5xx / timeouts with `rs_embed_core.retry`, and GDAL's own HTTP retries and its cache of failed
URLs are turned off for it, so a failed attempt cannot poison the next one.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from rs_embed_core.collections import known_collection
from rs_embed_core.errors import DataNotFoundError, ProviderError, SpecError, TransientProviderError, UnknownBandError
from rs_embed_core.grid import GridSpec
from rs_embed_core.providers import FetchRequest
from rs_embed_core.raster import Raster
from rs_embed_core.retry import DEFAULT_RETRY, RetryPolicy, TokenBucket, with_retries
from rs_embed_core.specs import SensorSpec

from .catalogs import MASK_BANDS, PRESETS, Catalog, CollectionMap
from .pixels import OFFSET_CHECK_MAX_NEGATIVE, clear_mask, dn_shift, offset_check, to_db
from .search import AssetRef, Scene, open_client, search
from .signing import PlanetaryComputerSigner

RESAMPLING = ("nearest", "bilinear", "cubic", "average")
_HTTP_STATUS = re.compile(r"HTTP (?:response )?code:? ?(\d{3})", re.I)
_NETWORK = re.compile(r"timed out|timeout|could not resolve|couldn't connect|could not connect|connection|"
                      r"recv failure|send failure|ssl|empty reply", re.I)


def _unsigned(href: str) -> str:
    """An href without its query string (never put a SAS token into an error or provenance)."""
    return href.split("?", 1)[0]


def classify_read_error(exc: BaseException, href: str, needs: str | None = None) -> ProviderError:
    """A GDAL/rasterio read failure as TransientProviderError (429, 408, 5xx, network) or ProviderError."""
    texts = []
    e: BaseException | None = exc
    while e is not None and len(texts) < 5:
        texts.append(str(e))
        e = e.__cause__ or e.__context__
    text = " | ".join(t for t in texts if t)
    text = re.sub(r"\?[^\s'\"|]*", "?...", text)[:400]
    where = _unsigned(href)
    m = _HTTP_STATUS.search(text)
    if m:
        status = int(m.group(1))
        if status in (408, 429) or 500 <= status <= 599:
            return TransientProviderError(f"reading {where}: HTTP {status}")
        hint = (f" (this collection needs {needs})" if needs else
                " (a missing or expired signature, or a requester-pays bucket without AWS credentials)") \
            if status in (401, 403) else ""
        return ProviderError(f"reading {where}: HTTP {status}{hint}")
    if _NETWORK.search(text):
        return TransientProviderError(f"reading {where}: {text}")
    return ProviderError(f"reading {where}: {text}")


class StacProvider:
    """Pixels from a STAC API of COGs.

    catalog: a preset name ("earth-search", "planetary-computer") or a Catalog; or give `url`
    and `collections` ({core collection id: (stac collection, {band name: asset key})} or
    CollectionMap) for any other STAC API. signer: an object with `sign(href) -> href`; the
    Planetary Computer preset gets a PlanetaryComputerSigner. max_items bounds the items one
    search returns (paged `page_size` at a time). max_concurrency: ROIs fetched at once by the
    runner; read_workers: asset reads in flight at once (all fetches together);
    requests_per_s: optional sustained rate of reads. retry: backoff for searches and reads.
    gdal_options: extra GDAL config options for every read (e.g. AWS credentials settings).
    """

    name = "stac"

    def __init__(
        self,
        catalog: str | Catalog | None = None,
        *,
        url: str | None = None,
        collections: Mapping[str, Any] | None = None,
        signer: Any = None,
        max_items: int = 100,
        page_size: int = 100,
        max_concurrency: int = 4,
        read_workers: int = 8,
        requests_per_s: float | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        resampling: str = "bilinear",
        http_timeout_s: float = 30.0,
        gdal_options: Mapping[str, str] | None = None,
    ) -> None:
        self.catalog = self._resolve(catalog, url, collections)
        for n, v in (("max_items", max_items), ("page_size", page_size), ("max_concurrency", max_concurrency),
                     ("read_workers", read_workers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SpecError(f"{n} must be an int >= 1, got {v!r}")
        if resampling not in RESAMPLING:
            raise SpecError(f"resampling must be one of {RESAMPLING}, got {resampling!r}")
        if not http_timeout_s > 0:
            raise SpecError(f"http_timeout_s must be > 0, got {http_timeout_s!r}")
        self.max_items, self.page_size = max_items, page_size
        self.max_concurrency, self.read_workers = max_concurrency, read_workers
        self.retry, self.resampling, self.http_timeout_s = retry, resampling, float(http_timeout_s)
        self.gdal_options = {str(k): str(v) for k, v in (gdal_options or {}).items()}
        if signer is None and self.catalog.signer == "planetary-computer":
            signer = PlanetaryComputerSigner(timeout_s=self.http_timeout_s, retry=retry)
        if signer is not None and not callable(getattr(signer, "sign", None)):
            raise SpecError(f"signer must have a sign(href) -> href method, got {signer!r}")
        self.signer = signer
        self._reads = threading.BoundedSemaphore(read_workers)
        self._bucket = TokenBucket(requests_per_s, burst=read_workers)
        self._warned: set[str] = set()
        self._client: Any = None
        self._client_lock = threading.Lock()

    @staticmethod
    def _resolve(catalog: str | Catalog | None, url: str | None, collections: Mapping[str, Any] | None) -> Catalog:
        if isinstance(catalog, Catalog):
            if url is not None or collections is not None:
                raise SpecError("give either a Catalog or url= and collections=, not both")
            return catalog
        if isinstance(catalog, str) and "://" in catalog and url is None:
            catalog, url = None, catalog
        if url is not None:
            if catalog is not None:
                raise SpecError(f"give either a preset ({catalog!r}) or url=, not both")
            if not collections:
                raise SpecError(
                    f"a STAC API other than the presets ({', '.join(PRESETS)}) needs a collection mapping: "
                    f"StacProvider(url={url!r}, collections={{'COPERNICUS/S2_SR_HARMONIZED': "
                    "('sentinel-2-l2a', {'B4': 'red', 'B3': 'green', 'B2': 'blue'})}})"
                )
            return Catalog("custom", url, dict(collections))
        name = (catalog or "earth-search").strip().lower()
        if name not in PRESETS:
            raise SpecError(f"unknown STAC preset {catalog!r}; presets: {sorted(PRESETS)} (or give url= and collections=)")
        base = PRESETS[name]
        if collections:
            return Catalog(base.name, base.url, {**base.collections, **dict(collections)}, base.signer,
                           base.cloud_query, base.unavailable)
        return base

    def __repr__(self) -> str:
        return f"StacProvider({self.catalog.name!r}, url={self.catalog.url!r})"

    # ------------------------------------------------------------ check (no network)

    def _plan(self, sensor: SensorSpec) -> tuple[CollectionMap, str | None]:
        cmap = self.catalog.collections.get(sensor.collection)
        if cmap is None:
            why = self.catalog.unavailable.get(sensor.collection)
            served = sorted(self.catalog.collections)
            raise SpecError(
                f"the stac provider ({self.catalog.name}) does not serve {sensor.collection!r}"
                + (f": {why}" if why else "") + f". It serves {served}; pass collections={{...}} to map others."
            )
        missing = [b for b in sensor.bands if b not in cmap.assets]
        if missing:
            raise UnknownBandError(
                f"{self.catalog.name} serves {sensor.collection} bands {list(cmap.assets)}, not {missing}"
            )
        methods = cmap.mask_methods()
        if sensor.cloud_mask is False:
            mask = None
        elif sensor.cloud_mask is True:
            mask = methods[0] if methods else None
        elif sensor.cloud_mask in methods:
            mask = str(sensor.cloud_mask)
        else:
            raise SpecError(
                f"cloud_mask={sensor.cloud_mask!r} is not available from the stac provider for {sensor.collection}; "
                f"available: {list(methods) or 'none'} (True picks the default, False turns masking off)"
            )
        if sensor.cloud_threshold is not None:
            raise SpecError(
                "cloud_threshold has no meaning for the stac provider's masks (SCL classes, QA_PIXEL bits); "
                "leave it None"
            )
        return cmap, mask

    def check(self, sensor: SensorSpec) -> None:
        """Fail before any network call if this catalog cannot serve `sensor`; warn once when the collection
        needs something this provider lacks (a Planetary Computer subscription key for sentinel-1-rtc)."""
        cmap, _ = self._plan(sensor)
        signer_key = getattr(self.signer, "subscription_key", "") if self.signer is not None else ""
        if cmap.needs and signer_key is None and cmap.stac_collection not in self._warned:
            self._warned.add(cmap.stac_collection)
            warnings.warn(f"{self.catalog.name} {cmap.stac_collection} needs {cmap.needs}; none is set, so reads may "
                          "be refused with HTTP 403", UserWarning, stacklevel=2)

    # ------------------------------------------------------------ network

    def _open(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = open_client(self.catalog.url, self.http_timeout_s)
            return self._client

    def _gdal_path(self, href: str, cmap: CollectionMap) -> tuple[str, dict[str, str]]:
        """The GDAL path of an href and the per-read config options it needs."""
        extra: dict[str, str] = {}
        if href.startswith(("http://", "https://")):
            path = "/vsicurl/" + (self.signer.sign(href) if self.signer is not None else href)
        elif href.startswith("s3://"):
            path = "/vsis3/" + href[5:]
            if cmap.requester_pays:
                extra["AWS_REQUEST_PAYER"] = "requester"
        else:
            path = href[7:] if href.startswith("file://") else href
        if path.startswith("/vsi"):
            extra.update({"GDAL_HTTP_TIMEOUT": str(max(1, round(self.http_timeout_s))), "GDAL_HTTP_MAX_RETRY": "0",
                          "CPL_VSIL_CURL_NON_CACHED": path})
        return path, extra

    def _read_asset(self, ref: AssetRef, grid: GridSpec, resampling: str, cmap: CollectionMap,
                    retries: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(data (H, W) float32, valid (H, W)) of band 1 of one asset, warped onto `grid`."""
        from rs_embed_core.providers.reading import read_warped, remote_gdal_env

        def attempt() -> tuple[np.ndarray, np.ndarray]:
            path, extra = self._gdal_path(ref.href, cmap)  # signed per attempt: a fresh token after a wait
            env = remote_gdal_env(**{**extra, **self.gdal_options}) if path.startswith("/vsi") else None
            self._bucket.acquire()
            with self._reads:
                try:
                    data, valid = read_warped(path, grid, [1], resampling=resampling, nodata=ref.nodata, gdal_env=env)
                except Exception as exc:
                    raise classify_read_error(exc, ref.href, cmap.needs) from exc
            return data[0], valid[0]

        def count(*_: Any) -> None:
            retries[0] += 1

        return with_retries(attempt, self.retry, on_retry=count)[0]

    def _read_scene(self, scene: Scene, grid: GridSpec, bands: tuple[str, ...], mask: str | None,
                    cmap: CollectionMap, collection: str, retries: list[int]) -> dict[str, Any]:
        """One scene on the grid: data (C, H, W), valid (H, W) and what provenance needs."""
        coll = known_collection(collection)

        def resampling_for(band: str) -> str:
            if band in MASK_BANDS.values():
                return "nearest"
            if coll is not None and band in coll.band_names and coll.band(band).center_nm is None:
                return "nearest"
            return self.resampling

        h, w = grid.height, grid.width
        out: dict[str, Any] = {"scene": scene, "data": None, "valid": np.zeros((h, w), bool), "shifts": {}}
        clear = None
        if mask is not None:
            qa_band = MASK_BANDS[mask]
            qa, qv = self._read_asset(scene.assets[qa_band], grid, "nearest", cmap, retries)
            clear = clear_mask(mask, qa) & qv
            out["clear_fraction"] = float(clear.mean())
            if not clear.any():
                return out
        data = np.empty((len(bands), h, w), np.float32)
        valid = np.ones((h, w), bool) if clear is None else clear.copy()
        shifts: dict[str, tuple[float, str]] = {}
        for i, band in enumerate(bands):
            d, v = self._read_asset(scene.assets[band], grid, resampling_for(band), cmap, retries)
            shifts[band] = dn_shift(scene, band, scene.assets[band], collection)
            if cmap.transform == "db":
                d, v = to_db(d, v)
            data[i] = d
            valid &= v
            if i == 0 and clear is None and not valid.any():
                return out  # outside the footprint or all nodata: the other bands add nothing
        if cmap.verify_offset and any(shift < 0 for shift, _ in shifts.values()):
            check = offset_check([(data[i], valid, shifts[b][0]) for i, b in enumerate(bands) if shifts[b][0] < 0])
            out["offset_check"] = check
            if check["refused"]:
                shifts = {b: (0.0, f"refused: the shift would send {check['negative_fraction']:.0%} of the valid "
                                   f"pixels below zero (> {OFFSET_CHECK_MAX_NEGATIVE:.0%}): the catalog had removed "
                                   "the offset already") if shift < 0 else (shift, why)
                          for b, (shift, why) in shifts.items()}
        for i, band in enumerate(bands):
            shift, why = shifts[band]
            if shift:
                data[i] += np.float32(round(shift, 6))
                out["shifts"][band] = {"dn": round(shift, 6), "why": why}
            elif why.startswith("refused"):
                out["shifts"][band] = {"dn": 0.0, "why": why}
        out["data"], out["valid"] = data, valid
        return out

    # ------------------------------------------------------------ fetch

    def fetch(self, request: FetchRequest) -> Raster:
        grid, sensor, window = request.grid, request.sensor, request.temporal
        cmap, mask = self._plan(sensor)
        bands = tuple(sensor.bands)
        need = bands + ((MASK_BANDS[mask],) if mask and MASK_BANDS[mask] not in bands else ())
        lonlat = grid.footprint_lonlat()
        found, search_attempts = with_retries(
            lambda: search(self._open, cmap, lonlat, window, need, max_items=self.max_items,
                           page_size=self.page_size, max_cloud_fraction=sensor.max_cloud_fraction,
                           cloud_query=self.catalog.cloud_query),
            self.retry,
        )
        if not found.scenes:
            dropped = ", ".join(f"{n} {why}" for why, n in sorted(found.dropped.items())) or "none"
            raise DataNotFoundError(
                f"{self.catalog.name}: no {cmap.stac_collection} item over lon/lat "
                f"({', '.join(f'{v:.5f}' for v in lonlat)}) in [{window.start}, {window.end}) (half-open); "
                f"the search returned {found.returned} item(s), dropped: {dropped}"
            )
        retries = [0]
        workers = max(1, min(len(found.scenes), self.read_workers))
        with ThreadPoolExecutor(workers, thread_name_prefix="rs-embed-stac") as pool:
            reads = list(pool.map(
                lambda s: self._read_scene(s, grid, bands, mask, cmap, sensor.collection, retries), found.scenes))
        return self._assemble(reads, request, cmap, mask, found, search_attempts - 1 + retries[0])

    def _assemble(self, reads: list[dict[str, Any]], request: FetchRequest, cmap: CollectionMap, mask: str | None,
                  found: Any, retries: int) -> Raster:
        from . import compositing

        grid, sensor = request.grid, request.sensor
        h, w = grid.height, grid.width
        n, c = len(reads), len(sensor.bands)
        stack = np.zeros((n, c, h, w), np.float32)
        valid = np.zeros((n, h, w), bool)
        for k, r in enumerate(reads):
            if r["data"] is not None:
                stack[k], valid[k] = r["data"], r["valid"]
        dates = [r["scene"].datetime for r in reads]
        data, ok, times, comp_meta = compositing.composite(stack, valid, dates, sensor, request.temporal)
        data[~np.broadcast_to(ok[:, None], data.shape)] = sensor.fill_value
        scenes = []
        for k, r in enumerate(reads):
            s = r["scene"].provenance()
            s["valid_fraction"] = float(valid[k].mean())
            if "clear_fraction" in r:
                s["clear_fraction"] = r["clear_fraction"]
            if r["shifts"]:
                s["dn_offset"] = r["shifts"]
            if "offset_check" in r:
                s["offset_check"] = r["offset_check"]
            scenes.append(s)
        meta = {
            "provider": self.name,
            "catalog": self.catalog.name,
            "stac_api": self.catalog.url,
            "stac_collection": cmap.stac_collection,
            "composite": sensor.composite,
            "cloud_mask": mask,
            "resampling": self.resampling,
            "search": {"returned": found.returned, "truncated": found.truncated, "max_items": self.max_items,
                       "dropped": dict(found.dropped)},
            "scenes": scenes,
            "item_ids": [r["scene"].id for r in reads],
            "retries": retries,
            "valid_fraction": float(ok.mean()) if ok.size else 0.0,
            **comp_meta,
        }
        if cmap.transform == "db":
            meta["units"] = "dB (10*log10 of the catalog's linear backscatter)"
        refused = [s["id"] for s in scenes if s.get("offset_check", {}).get("refused")]
        if refused:
            meta["offset_refused"] = refused
        return Raster(data, tuple(sensor.bands), grid, times, ok, meta)
