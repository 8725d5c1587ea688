"""Stage 1, plan: ROIs x model requests -> the distinct fetches, and what each (item, job) takes from them.

Requests for the same grid, window and sensor settings that differ only in bands are merged into one
fetch of the union of bands (in order of first use) and sliced per job afterwards, so export fetches
each input once for all its models.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Sequence

import attrs
from attrs import frozen

from .convert import converter
from .grid import grid_for
from .providers import FetchRequest
from .specs import BBox, PointBuffer, TemporalSpec

if TYPE_CHECKING:
    from .runner import Job


def merge_key(req: FetchRequest) -> str:
    """What two requests must share to be served by one fetch: everything but the bands."""
    d = converter.unstructure(req)
    d["sensor"].pop("bands")
    return json.dumps(d, sort_keys=True, default=str)


@frozen
class Need:
    """One input a (item, job) waits for: fetch `request` (position in the plan), slice `bands`."""

    request: int
    bands: tuple[str, ...]


def plan_fetches(
    jobs: Sequence[Job], spatials: Sequence[PointBuffer | BBox], temporal: TemporalSpec
) -> tuple[list[FetchRequest], list[list[list[Need]]]]:
    """The distinct fetches in item order, and `needs[item][job]`: the inputs each (item, job) takes."""
    requests: list[FetchRequest] = []
    needs: list[list[list[Need]]] = []
    for s in spatials:
        per_item: dict[str, tuple[int, list[str]]] = {}  # merge key -> (index in `requests`, union bands)
        item_needs: list[list[tuple[str, tuple[str, ...]]]] = []
        for job in jobs:
            grid = grid_for(s, job.sensors[0].scale_m)
            job_needs = []
            for sensor in job.sensors:
                req = FetchRequest(grid, temporal, sensor)
                key = merge_key(req)
                if key not in per_item:
                    per_item[key] = (len(requests), [])
                    requests.append(req)
                union = per_item[key][1]
                union.extend(b for b in sensor.bands if b not in union)
                job_needs.append((key, sensor.bands))
            item_needs.append(job_needs)
        for key, (idx, union) in per_item.items():
            req = requests[idx]
            if tuple(union) != req.sensor.bands:
                requests[idx] = attrs.evolve(req, sensor=attrs.evolve(req.sensor, bands=tuple(union)))
        needs.append([[Need(per_item[k][0], bands) for k, bands in jn] for jn in item_needs])
    return requests, needs


def users_of(needs: Sequence[Sequence[Sequence[Need]]]) -> dict[int, list[tuple[int, int]]]:
    """request -> the (item, job) pairs that wait for it."""
    users: dict[int, list[tuple[int, int]]] = {}
    for i, per_item in enumerate(needs):
        for j, job_needs in enumerate(per_item):
            for need in job_needs:
                users.setdefault(need.request, []).append((i, j))
    return users
