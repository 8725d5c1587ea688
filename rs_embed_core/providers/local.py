"""The `local` provider (placeholder: being written)."""

from __future__ import annotations

from ..hookspecs import hookimpl


@hookimpl
def register_providers(register):
    pass
