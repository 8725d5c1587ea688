"""Lookup tables built from the plugin hooks: providers, preprocessors, embedders.

Rebuilt whenever the set of registered plugins changes, so a test (or a notebook) can
`pm.register(obj)` and use the new model at once. Ids and aliases are case-insensitive; a
duplicate id or alias is a PluginError naming both plugins.
"""

from __future__ import annotations

import difflib
import threading
from typing import Any, Callable

from attrs import frozen

from .errors import PluginError, UnknownModelError, UnknownProviderError
from .plugins import load_failures, load_plugins, pm


# The plugins of this repository, so "unknown" errors can say what to install (one place for this fact).
_REPO = "plugins/"
KNOWN_MODELS: dict[str, str] = {
    "mosaiks": "rs-embed-baseline", "spectral_stats": "rs-embed-baseline", "remoteclip": "rs-embed-remoteclip",
    "prithvi": "rs-embed-prithvi", "terramind": "rs-embed-terramind", "satmae": "rs-embed-satmae",
    "satmaepp": "rs-embed-satmae", "scalemae": "rs-embed-scalemae", "dofa": "rs-embed-dofa",
    "olmoearth": "rs-embed-olmoearth", "croma": "rs-embed-croma", "panopticon": "rs-embed-panopticon",
    "copernicusfm": "rs-embed-copernicusfm", "ssl4eo": "rs-embed-ssl4eo", "galileo": "rs-embed-galileo",
    "clay": "rs-embed-clay", "thor": "rs-embed-thor",
    "gse": "rs-embed-gse", "gse_annual": "rs-embed-gse", "tessera": "rs-embed-tessera",
    "copernicus": "rs-embed-copernicus-embed", "copernicus_embed": "rs-embed-copernicus-embed",
}
KNOWN_PROVIDERS: dict[str, str] = {"gee": "rs-embed-gee", "stac": "rs-embed-stac",
                                   "copernicus_embed": "rs-embed-copernicus-embed", "tessera": "rs-embed-tessera"}


def _install_hint(dist: str) -> str:
    return f"pip install -c constraints.txt -e . -e {_REPO}{dist} (from the rs-embed repository root)"


@frozen
class Registered:
    name: str
    obj: Any
    plugin: str


@frozen
class Tables:
    providers: dict[str, Registered]
    preprocessors: dict[str, Registered]
    embedders: dict[str, Registered]  # keyed by lowercased id AND aliases
    model_ids: tuple[str, ...]  # canonical ids, sorted


_cache: tuple[tuple[int, ...], Tables] | None = None


def _collect(hook_name: str, kind: str, keys: Callable[[tuple], list[str]]) -> dict[str, Registered]:
    table: dict[str, Registered] = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        def register(*args: Any, _plugin: str = impl.plugin_name) -> None:
            name = str(args[0]) if kind != "embedder" else args[0].card.id
            obj = args[1] if kind != "embedder" else args[0]
            if kind == "embedder" and not hasattr(obj, "card"):
                raise PluginError(f"plugin {_plugin!r} registered an embedder without a model card")
            for key in keys(args):
                k = key.lower()
                if k in table and table[k].obj is not obj:
                    raise PluginError(
                        f"duplicate {kind} {key!r}: registered by plugin {table[k].plugin!r} and by plugin {_plugin!r}"
                    )
                table[k] = Registered(name, obj, _plugin)

        impl.function(register=register)
    return table


_lock = threading.Lock()


def tables() -> Tables:
    load_plugins()
    state = tuple(id(p) for p in pm.get_plugins())
    hit = _cache
    if hit is not None and hit[0] == state:
        return hit[1]
    with _lock:
        return _build(state)


def _build(state: tuple[int, ...]) -> Tables:
    global _cache
    if _cache is not None and _cache[0] == state:
        return _cache[1]
    providers = _collect("register_providers", "provider", lambda a: [str(a[0])])
    preprocessors = _collect("register_preprocessors", "preprocessor", lambda a: [str(a[0])])
    embedders = _collect("register_embedders", "embedder", lambda a: [a[0].card.id, *a[0].card.aliases])
    ids = tuple(sorted({r.name for r in embedders.values()}))
    t = Tables(providers, preprocessors, embedders, ids)
    _cache = (state, t)
    return t


def _failures_hint() -> str:
    if not load_failures:
        return ""
    lines = [f"  - plugin {n!r} failed to load: {i['error']}" for n, i in sorted(load_failures.items())]
    return "\nSome plugins failed to load (see `rs-embed plugins`):\n" + "\n".join(lines)


def embedder_class(model: str) -> type:
    t = tables()
    hit = t.embedders.get(str(model).lower())
    if hit is None:
        names = sorted(t.embedders)
        close = difflib.get_close_matches(str(model).lower(), names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(t.model_ids) or "none installed"
        dist = KNOWN_MODELS.get(str(model).lower())
        install = f" {model!r} comes with the plugin {dist}: {_install_hint(dist)}." if dist else ""
        raise UnknownModelError(
            f"unknown model {model!r}.{install}{hint} Known models: {known}." + _failures_hint()
        )
    return hit.obj


def preprocessor(name: str) -> Callable[..., Any]:
    t = tables()
    hit = t.preprocessors.get(name.lower())
    if hit is None:
        from .errors import SpecError

        raise SpecError(f"unknown preprocessing step {name!r}; known: {sorted(t.preprocessors)}")
    return hit.obj


def provider_factory(name: str) -> Callable[..., Any]:
    t = tables()
    hit = t.providers.get(name.lower())
    if hit is None:
        close = difflib.get_close_matches(name.lower(), sorted(t.providers), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        dist = KNOWN_PROVIDERS.get(name.lower())
        install = f" Backend {name!r} comes with the plugin {dist}: {_install_hint(dist)}." if dist else ""
        if name.lower() == "gee":
            install += (" No Earth Engine account? Use backend='stac:earth-search' (open Sentinel-2 / Landsat, "
                        "with rs-embed-stac) or your own files with backend='local:DIR'.")
        raise UnknownProviderError(
            f"unknown backend {name!r}.{install}{hint} Known: {sorted(t.providers)}." + _failures_hint()
        )
    return hit.obj


def embedder_plugin(model: str) -> str:
    return tables().embedders[model.lower()].plugin
