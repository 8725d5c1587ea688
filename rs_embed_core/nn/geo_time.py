"""Encoders of time and place side inputs that several remote-sensing models share.

- `month_table(dim)`: a fixed (12, dim) table for months 0..11 (January = 0): month m sits at the
  angle 2 pi m / 12 on the yearly circle; the first half of the channels hold sin(angle), the
  second half cos(angle), every channel of a half the same value (Presto and Galileo use this
  table as a frozen `nn.Embedding`, so December and January are neighbours).
- `lonlat_to_xyz(lon, lat)`: degrees -> unit vector on the sphere (x, y, z), the location input of
  Presto and Galileo (continuous across the antimeridian and the poles).
- `months_of(times)` / `days_of_year(times)`: frame datetimes -> month indices 0..11 / days of year from 0,
  refusing frames without a date (`frame_dates`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import SpecError


def month_table(dim: int) -> torch.Tensor:
    """(12, dim) float32: row m = [sin(2 pi m / 12)] * dim/2 + [cos(2 pi m / 12)] * dim/2."""
    if dim <= 0 or dim % 2:
        raise SpecError(f"month table dim must be a positive even number, got {dim}")
    angles = torch.arange(12) / (12 / (2 * math.pi))  # float32, the expression the reference tables use
    half = dim // 2
    return torch.cat([angles.sin()[:, None].expand(12, half), angles.cos()[:, None].expand(12, half)], dim=1)


def lonlat_to_xyz(lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
    """Degrees -> (..., 3) unit vectors (cos lat cos lon, cos lat sin lon, sin lat); refuses values off the globe."""
    if bool(((lat < -90) | (lat > 90)).any()) or bool(((lon < -180) | (lon > 180)).any()):
        raise SpecError(f"location must be lon -180..180, lat -90..90 degrees; got lon {lon.tolist()}, "
                        f"lat {lat.tolist()}")
    lat_r, lon_r = torch.deg2rad(lat), torch.deg2rad(lon)
    return torch.stack([lat_r.cos() * lon_r.cos(), lat_r.cos() * lon_r.sin(), lat_r.sin()], dim=-1)


def frame_dates(times: Sequence[Sequence[Any]], model: str, use: str = "its month") -> list[list[dt.date]]:
    """Per item, per frame datetimes, checked: every frame needs a date (`use` says what the model reads from it)."""
    out = []
    for i, frames in enumerate(times):
        row = []
        for t, when in enumerate(frames):
            if not isinstance(when, (dt.date, dt.datetime)):
                raise SpecError(f"{model} needs the date of every frame ({use} is a model input); item {i} "
                                f"frame {t} has {when!r}. Use a provider that stamps frames (composites are "
                                "stamped at their bin centre).")
            row.append(when)
        out.append(row)
    return out


def months_of(times: Sequence[Sequence[Any]], model: str) -> list[list[int]]:
    """Per item, per frame datetimes -> month indices 0..11 (January = 0); every frame needs a date."""
    return [[when.month - 1 for when in row] for row in frame_dates(times, model)]


def days_of_year(times: Sequence[Sequence[Any]], model: str) -> list[list[int]]:
    """Per item, per frame datetimes -> day of year counted from 0 (1 January = 0, 31 December = 364 or 365)."""
    return [[when.timetuple().tm_yday - 1 for when in row] for row in frame_dates(times, model, "its day of year")]
