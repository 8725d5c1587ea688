"""Built-in preprocessing steps (placeholder: being written)."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def register_preprocessors(register):
    pass
