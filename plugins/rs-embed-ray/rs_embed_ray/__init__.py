"""rs-embed-ray: run `export_batch` on a Ray cluster (`executor="ray"`); the driver writes the same files.

Importing this module does not import Ray (the core loads every plugin at start-up); the executor
imports it when an export asks for it.
"""

from __future__ import annotations

from typing import Any

from rs_embed_core.hookspecs import hookimpl

__all__ = ["RayExecutor"]


def __getattr__(name: str) -> Any:
    if name == "RayExecutor":
        from .executor import RayExecutor

        return RayExecutor
    raise AttributeError(name)


@hookimpl
def register_executors(register: Any) -> None:
    def factory(**options: Any) -> Any:
        from .executor import RayExecutor

        return RayExecutor(**options)

    register("ray", factory)
