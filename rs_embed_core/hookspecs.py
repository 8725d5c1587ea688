"""The hooks a plugin can implement. Each receives a `register` callback."""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("rs_embed")
hookimpl = pluggy.HookimplMarker("rs_embed")


@hookspec
def register_providers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """register(name, factory): factory(**options) returns a Provider."""


@hookspec
def register_preprocessors(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """register(name, fn): fn(raster, **params) returns a new Raster."""


@hookspec
def register_embedders(register: Callable[[type], None]) -> None:
    """register(EmbedderSubclass): the class carries its ModelCard as `card`."""


@hookspec
def register_executors(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """register(name, factory): factory(**options) returns an export executor (see `plugins.resolve_executor`)."""
