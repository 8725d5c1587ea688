"""The plugin manager: built-ins by module path, then the "rs_embed" entry-point group.

RS_EMBED_PLUGINS, if set, is a comma-separated allow-list of the *distributions* whose plugins
may load ("rs-embed-remoteclip"), or of "distribution:entry-point" pairs
("rs-embed-remoteclip:remoteclip"); "" loads none; built-ins always load. It is keyed by
distribution because entry-point names are not unique: any installed package can declare one
called "remoteclip". An entry point that fails to import is recorded in `load_failures` so
`rs-embed plugins` and "unknown model" errors can say why.

Loading is thread-safe and happens once: concurrent first calls wait until every plugin is
registered (the "done" flag is set only after registration).
"""

from __future__ import annotations

import importlib
import os
import re
import threading
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
_lock = threading.RLock()


def _norm(dist: str) -> str:
    """PEP 503 normalised distribution name: "RS_Embed.GEE" == "rs-embed-gee"."""
    return re.sub(r"[-_.]+", "-", dist).lower()


def _allowed() -> set[str] | None:
    raw = os.environ.get(ALLOW_ENV)
    if raw is None:
        return None
    out = set()
    for entry in (n.strip() for n in raw.split(",")):
        if entry:
            dist, sep, name = entry.partition(":")
            out.add(f"{_norm(dist)}:{name.strip()}" if sep else _norm(dist))
    return out


def _is_allowed(allowed: set[str] | None, dist: str | None, name: str) -> bool:
    if allowed is None:
        return True
    if dist is None:  # an entry point without a distribution cannot be trusted by name
        return False
    return _norm(dist) in allowed or f"{_norm(dist)}:{name}" in allowed


def load_plugins() -> None:
    """Register built-ins and installed plugins once per process (thread-safe)."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        _load()
        _loaded = True


def _load() -> None:
    for modname in BUILTINS:
        mod = importlib.import_module(modname)
        if not pm.is_registered(mod):
            pm.register(mod, name=modname)
    allowed = _allowed()
    for ep in metadata.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        if not _is_allowed(allowed, dist.name if dist else None, ep.name):
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
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


def plugin_distribution(name: str) -> str | None:
    """The distribution that installed the plugin registered as `name` (None: built-in or in-process)."""
    hit = _distributions.get(name)
    return hit[0] if hit else None


def describe_plugin(name: str) -> str:
    """"plugin 'tinyconv' (distribution rs-embed-tinyconv 0.1)", for messages naming who registered what."""
    if name in _distributions:
        dist, version = _distributions[name]
        return f"plugin {name!r} (distribution {dist} {version})"
    return f"plugin {name!r} ({'built into rs-embed-core' if name in BUILTINS else 'registered in-process'})"


def plugin_info() -> list[dict[str, object]]:
    """Loaded plugins with their hooks, failed ones with their errors, and names two plugins both
    register ("conflict": the name is refused, the rest of each plugin works) (for `rs-embed plugins`)."""
    from .registry import conflict_message, tables

    load_plugins()
    t = tables()
    conflicts = t.conflicts
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
        errors = [e for p, e in t.broken if p == name]
        if errors:  # loaded, but a hook raised while registering: nothing of that hook counts
            entry["status"], entry["error"] = "failed", "; ".join(errors)
        mine = [c for c in conflicts if name in c.plugins]
        if mine:
            entry["status"] = "conflict" if entry["status"] == "loaded" else entry["status"]
            entry["conflicts"] = [
                {"kind": c.kind, "name": c.name,
                 "with": [{"plugin": p, "distribution": plugin_distribution(p)} for p in c.plugins if p != name],
                 "how_to_choose": conflict_message(c)}
                for c in mine]
        out.append(entry)
    for name, info in sorted(load_failures.items()):
        out.append({"name": name, "status": "failed", **{k: v for k, v in info.items() if k != "traceback"}})
    return out


# ---------------------------------------------------------------- export executors

# executor name -> the distribution that registers it, for the "not installed" message
KNOWN_EXECUTORS = {"ray": "rs-embed-ray"}


def executor_factories() -> dict[str, object]:
    """Executor name -> factory(**options), from every plugin's `register_executors` (first one wins)."""
    load_plugins()
    found: dict[str, object] = {}

    def register(name: str, factory: object) -> None:
        found.setdefault(name, factory)

    pm.hook.register_executors(register=register)
    return found


def resolve_executor(executor: object, **options: object) -> object | None:
    """None for the in-process runner ("local"); else the executor a plugin registered under that name, built
    with `options` (e.g. address=), or an executor object as given (it has `start`, `run` and `close`).

    An executor runs export's stream: `run` takes and yields what `runner.run` does; `start(out)` checks,
    before any fetch, that it can work (cluster reachable, `out` writable); `close()` releases what it took.
    """
    from .errors import SpecError, UnknownExecutorError

    if executor is None or executor == "local":
        if options:
            raise SpecError(f"{sorted(options)} only apply to a distributed executor, not executor='local'")
        return None
    if isinstance(executor, str):
        factory = executor_factories().get(executor)
        if factory is None:
            dist = KNOWN_EXECUTORS.get(executor)
            hint = (f"install its plugin package {dist} (from the repository: pip install -c constraints.txt -e "
                    f"plugins/{dist})" if dist else "install the plugin that provides it")
            failed = [f"{n} ({i['error']})" for n, i in load_failures.items() if i.get("distribution") == dist]
            raise UnknownExecutorError(
                f"no export executor {executor!r} is installed; {hint}"
                + (f" (it is installed but failed to load: {'; '.join(failed)})" if failed else "")
                + f"; installed executors: {sorted(['local', *executor_factories()])}")
        return factory(**options)  # type: ignore[operator]
    if all(callable(getattr(executor, m, None)) for m in ("start", "run", "close")):
        if options:
            raise SpecError(f"{sorted(options)} go to the executor object itself, not to export_batch")
        return executor
    raise SpecError(f"executor must be 'local', an installed executor's name (e.g. 'ray') or an executor object, "
                    f"got {executor!r}")
