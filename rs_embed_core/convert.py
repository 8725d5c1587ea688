"""JSON round trips of specs (for manifests and the CLI) through one cattrs converter."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import cattrs

from .specs import BBox, PointBuffer, Spatial

converter = cattrs.Converter()
converter.register_unstructure_hook(dt.date, lambda d: d.isoformat())
converter.register_structure_hook(dt.date, lambda v, _: dt.date.fromisoformat(v) if isinstance(v, str) else v)

_SPATIAL_TAGS: dict[str, type] = {"point_buffer": PointBuffer, "bbox": BBox}
_TAG_OF = {cls: tag for tag, cls in _SPATIAL_TAGS.items()}


_plain = cattrs.Converter()  # the attrs fields as they are, for the tagged spatial hooks


def _unstructure_spatial(obj: Any) -> dict[str, Any]:
    return {"type": _TAG_OF[type(obj)], **_plain.unstructure(obj)}


def _structure_spatial(value: Any, _: Any) -> Spatial:
    if isinstance(value, (PointBuffer, BBox)):
        return value
    data = dict(value)
    tag = data.pop("type", None)
    if tag not in _SPATIAL_TAGS:
        from .errors import SpecError

        raise SpecError(f"spatial spec needs 'type' in {sorted(_SPATIAL_TAGS)}, got {tag!r}")
    return _SPATIAL_TAGS[tag](**data)


for _cls in (PointBuffer, BBox):
    converter.register_unstructure_hook(_cls, _unstructure_spatial)
converter.register_structure_hook(Spatial, _structure_spatial)  # type: ignore[arg-type]
converter.register_structure_hook(PointBuffer, _structure_spatial)
converter.register_structure_hook(BBox, _structure_spatial)


def to_json(obj: Any) -> str:
    return json.dumps(converter.unstructure(obj), sort_keys=True)


def from_json(text: str | bytes, cls: Any) -> Any:
    return converter.structure(json.loads(text), cls)
converter.register_structure_hook(bool | str, lambda v, _: v if isinstance(v, (bool, str)) else bool(v))
