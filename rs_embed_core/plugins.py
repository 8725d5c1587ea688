"""The plugin manager: built-ins by module path, then the "rs_embed" entry-point group.

RS_EMBED_PLUGINS, if set, is a comma-separated allow-list of entry-point names to load
("" loads none); built-ins always load. An entry point that fails to import is recorded in
`load_failures` so `rs-embed plugins` and "unknown model" errors can say why.
"""

from __future__ import annotations

import importlib
import os
import traceback
from importlib import metadata

import pluggy

from . import hookspecs

GROUP = "rs_embed"
ALLOW_ENV = "RS_EMBED_PLUGINS"
BUILTINS = ("rs_embed_core.providers.local", "rs_embed_core.preprocess")

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)

# entry-point name -> {"module", "distribution", "version", "error"}
load_failures: dict[str, dict[str, str | None]] = {}
_distributions: dict[str, tuple[str, str]] = {}  # entry-point name -> (distribution, version)
_loaded = False


def _allowed() -> set[str] | None:
    raw = os.environ.get(ALLOW_ENV)
    if raw is None:
        return None
    return {n.strip() for n in raw.split(",") if n.strip()}


def load_plugins() -> None:
    """Register built-ins and installed plugins once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for modname in BUILTINS:
        mod = importlib.import_module(modname)
        if not pm.is_registered(mod):
            pm.register(mod, name=modname)
    allowed = _allowed()
    for ep in metadata.entry_points(group=GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        dist = getattr(ep, "dist", None)
        try:
            plugin = ep.load()
        except Exception as exc:  # record, never crash the host on a broken plugin
            load_failures[ep.name] = {
                "module": ep.value,
                "distribution": dist.name if dist else None,
                "version": dist.version if dist else None,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=3),
            }
            continue
        pm.register(plugin, name=ep.name)
        if dist is not None:
            _distributions[ep.name] = (dist.name, dist.version)
    pm.check_pending()


def plugin_info() -> list[dict[str, object]]:
    """Loaded plugins with their hooks, and failed ones with their errors (for `rs-embed plugins`)."""
    load_plugins()
    out: list[dict[str, object]] = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda np_: np_[0]):
        if plugin is None:
            continue
        entry: dict[str, object] = {
            "name": name,
            "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or ()),
            "builtin": name in BUILTINS,
            "status": "loaded",
        }
        if name in _distributions:
            entry["distribution"], entry["version"] = _distributions[name]
        out.append(entry)
    for name, info in sorted(load_failures.items()):
        out.append({"name": name, "status": "failed", **{k: v for k, v in info.items() if k != "traceback"}})
    return out
