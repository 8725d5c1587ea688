"""Make test-only reference packages importable beside the CPU torch build (tests only).

The pinned torchvision wheel is a CUDA build whose compiled operators do not load here; its
Python side then registers fake kernels for `torchvision::nms` / `qnms` and fails with
"operator torchvision::nms does not exist". `import_torchvision()` drops the half-imported
modules, defines the two operator schemas with torch.library (no kernels: nothing in the tests
calls them) and imports torchvision again. A torchvision whose operators load is left alone.
Call it in a plugin's tests/conftest.py before importing open_clip, timm, torchgeo or terratorch.
"""

from __future__ import annotations

import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_lib = None  # kept alive: a collected Library removes its definitions


def import_torchvision() -> bool:
    """Import torchvision, patching the missing operator schemas if needed. False if not installed."""
    global _lib
    import torch

    try:
        import torchvision  # noqa: F401

        return True
    except ImportError:
        return False
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if _lib is None:
        _lib = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            _lib.define(schema)
    import torchvision  # noqa: F401,F811

    return True
