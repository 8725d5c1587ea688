"""Make the test-only references (torchvision, open_clip) importable beside the CPU torch.

The pinned torchvision wheel is a CUDA build whose compiled operators do not load here; its
Python side then registers fake kernels for `torchvision::nms` / `qnms` and fails with
"operator torchvision::nms does not exist". When (and only when) that happens, the half-imported
modules are dropped, the two operator schemas are defined with torch.library (no kernels: nothing
here calls them) and torchvision is imported again. A torchvision whose operators load is left alone.
"""

from __future__ import annotations

import sys

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_lib: torch.library.Library | None = None  # kept alive: a collected Library removes its definitions


def _import_torchvision() -> None:
    global _lib
    try:
        import torchvision  # noqa: F401

        return
    except ImportError:
        return  # not installed: tests that need open_clip skip themselves
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _lib.define(schema)
    import torchvision  # noqa: F401,F811


_import_torchvision()
