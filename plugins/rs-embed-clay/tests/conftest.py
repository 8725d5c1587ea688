"""Make torchvision importable beside the CPU torch, and the reference `claymodel` importable at all.

claymodel 1.5.0's wheel installs its modules top-level (backbone.py, factory.py, model.py, ...) but
they import each other as `src.*` (the layout of the authors' repository). The `claymodel` fixture
maps a `src` package onto the wheel's files, imports `src.model`, and undoes the
`torch.set_float32_matmul_precision("medium")` that module sets at import (it would loosen every
later float32 matmul of the test session).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import sys
import types

import pytest

from rs_embed_core.testing.references import import_torchvision

import_torchvision()


@pytest.fixture(scope="session")
def claymodel() -> types.ModuleType:
    """claymodel 1.5.0's `model` module (Encoder, ClayMAE), or skip when it is not installed."""
    try:
        dist = md.distribution("claymodel")
    except md.PackageNotFoundError:
        pytest.skip("claymodel is not installed (pip install --no-deps -r requirements-test-nodeps.txt)")
    import torch

    if "src" not in sys.modules:
        src = types.ModuleType("src")
        src.__path__ = [str(dist.locate_file(""))]
        sys.modules["src"] = src
    precision = torch.get_float32_matmul_precision()
    try:
        return importlib.import_module("src.model")
    finally:
        torch.set_float32_matmul_precision(precision)
