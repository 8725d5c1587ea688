"""Band tables of well-known collections: the one place these facts live.

Collection ids follow Google Earth Engine's catalogue names, which users already know; the
`local` and `stac` providers map their own files and assets onto these names. A collection
not listed here is allowed (your own data); its bands are then checked by the provider.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class Band:
    name: str
    gsd_m: float
    center_nm: float | None = None  # centre wavelength; None for non-optical bands
    description: str = ""


@frozen
class Collection:
    id: str
    bands: tuple[Band, ...]
    # physical reflectance = DN * scale + offset (surface or TOA reflectance, 0..1)
    reflectance_scale: float = 1.0
    reflectance_offset: float = 0.0
    description: str = ""

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    def band(self, name: str) -> Band:
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(name)


_S2_BANDS = (
    Band("B1", 60, 443, "coastal aerosol"),
    Band("B2", 10, 490, "blue"),
    Band("B3", 10, 560, "green"),
    Band("B4", 10, 665, "red"),
    Band("B5", 20, 705, "red edge 1"),
    Band("B6", 20, 740, "red edge 2"),
    Band("B7", 20, 783, "red edge 3"),
    Band("B8", 10, 842, "near infrared"),
    Band("B8A", 20, 865, "narrow near infrared"),
    Band("B9", 60, 945, "water vapour"),
    Band("B11", 20, 1610, "short-wave infrared 1"),
    Band("B12", 20, 2190, "short-wave infrared 2"),
)
_S2_L1C_EXTRA = (Band("B10", 60, 1375, "cirrus"),)
_S2_SR_EXTRA = (Band("SCL", 20, None, "scene classification"),)

_LANDSAT_OLI_L2 = (
    Band("SR_B1", 30, 443, "coastal aerosol"),
    Band("SR_B2", 30, 482, "blue"),
    Band("SR_B3", 30, 561, "green"),
    Band("SR_B4", 30, 655, "red"),
    Band("SR_B5", 30, 865, "near infrared"),
    Band("SR_B6", 30, 1609, "short-wave infrared 1"),
    Band("SR_B7", 30, 2201, "short-wave infrared 2"),
    Band("QA_PIXEL", 30, None, "pixel quality bits"),
)

COLLECTIONS: dict[str, Collection] = {
    c.id: c
    for c in (
        Collection(
            "COPERNICUS/S2_SR_HARMONIZED",
            _S2_BANDS + _S2_SR_EXTRA,
            reflectance_scale=1e-4,
            description="Sentinel-2 MSI level-2A surface reflectance (DN = reflectance x 10000)",
        ),
        Collection(
            "COPERNICUS/S2_HARMONIZED",
            _S2_BANDS + _S2_L1C_EXTRA,
            reflectance_scale=1e-4,
            description="Sentinel-2 MSI level-1C top-of-atmosphere reflectance (DN = reflectance x 10000)",
        ),
        Collection(
            "LANDSAT/LC08/C02/T1_L2",
            _LANDSAT_OLI_L2,
            reflectance_scale=2.75e-5,
            reflectance_offset=-0.2,
            description="Landsat 8 OLI collection 2 level-2 surface reflectance",
        ),
        Collection(
            "LANDSAT/LC09/C02/T1_L2",
            _LANDSAT_OLI_L2,
            reflectance_scale=2.75e-5,
            reflectance_offset=-0.2,
            description="Landsat 9 OLI-2 collection 2 level-2 surface reflectance",
        ),
    )
}


def known_collection(collection_id: str) -> Collection | None:
    return COLLECTIONS.get(collection_id)
