"""Cyclic codes of acquisition time and location, as Clay's data pipeline feeds them to the model.

Each periodic quantity becomes (sin, cos) of its angle, so the model sees no jump at the period's
end (week 52 -> 1, 23 h -> 0 h, longitude 180 -> -180):

- time: ISO week x 2 pi / 52 and hour (UTC) x 2 pi / 24 -> [sin w, cos w, sin h, cos h];
- location: latitude and longitude in radians -> [sin lat, cos lat, sin lon, cos lon].

Plain Python floats (no torch), computed per item by the plugin from the request.
"""

from __future__ import annotations

import datetime as dt
import math

from ..errors import SpecError


def week_hour_code(t: dt.datetime | dt.date) -> tuple[float, float, float, float]:
    """[sin, cos] of the ISO week (2 pi / 52 per week), then of the hour (2 pi / 24 per hour).

    A date without a time of day counts as hour 0; an aware datetime is read in UTC.
    """
    if isinstance(t, dt.datetime):
        if t.tzinfo is not None:
            t = t.astimezone(dt.timezone.utc)
        hour = t.hour
    elif isinstance(t, dt.date):
        hour = 0
    else:
        raise SpecError(f"a time code needs a date or datetime, got {t!r}")
    week = t.isocalendar().week * 2 * math.pi / 52
    h = hour * 2 * math.pi / 24
    return math.sin(week), math.cos(week), math.sin(h), math.cos(h)


def latlon_code(lat: float, lon: float) -> tuple[float, float, float, float]:
    """[sin lat, cos lat, sin lon, cos lon] of a position in degrees (lat -90..90, lon -180..180)."""
    if not (math.isfinite(lat) and math.isfinite(lon) and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise SpecError(f"a location code needs lat -90..90 and lon -180..180 degrees, got lat {lat!r}, lon {lon!r}")
    la, lo = lat * math.pi / 180, lon * math.pi / 180
    return math.sin(la), math.cos(la), math.sin(lo), math.cos(lo)
