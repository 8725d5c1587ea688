"""Lookup tables built from the plugin hooks: providers, preprocessors, embedders.

Rebuilt whenever the set of registered plugins changes, so a test (or a notebook) can
`pm.register(obj)` and use the new model at once. Ids and aliases are case-insensitive. A name
(model id, alias, backend, step) that two plugins register is a *conflict*: only that name is
refused (using it raises a PluginError naming both plugins and how to choose), everything else
both plugins register keeps working, and `rs-embed plugins` lists it. One badly named
third-party plugin must not take down the models that were installed before it.
"""

from __future__ import annotations

import difflib
import threading
from typing import Any, Callable

from attrs import field, frozen

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
    "clay": "rs-embed-clay", "thor": "rs-embed-thor", "terrafm": "rs-embed-terrafm", "anysat": "rs-embed-anysat",
    "wildsat": "rs-embed-wildsat", "fomo": "rs-embed-fomo", "fomonet": "rs-embed-fomo", "agrifm": "rs-embed-agrifm",
    "satvision": "rs-embed-satvision", "satvision_toa": "rs-embed-satvision",
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
class Conflict:
    """A name two (or more) plugins register: refused, the plugins' other names still work."""

    kind: str  # "embedder", "provider" or "preprocessor"
    name: str  # lowercased id, alias, backend or step name
    plugins: tuple[str, ...]  # plugin (entry-point) names, in registration order


@frozen
class Tables:
    providers: dict[str, Registered]
    preprocessors: dict[str, Registered]
    embedders: dict[str, Registered]  # keyed by lowercased id AND aliases
    model_ids: tuple[str, ...]  # canonical ids, sorted
    refused: dict[str, Conflict] = field(factory=dict)  # "kind:name" -> the conflict that refuses it
    broken: tuple[tuple[str, str], ...] = ()  # (plugin, error) for each hook that raised while registering

    @property
    def conflicts(self) -> tuple[Conflict, ...]:
        return tuple(dict.fromkeys(self.refused.values()))


_cache: tuple[frozenset[Any], Tables] | None = None


def _collect(hook_name: str, kind: str, keys: Callable[[tuple], list[str]]
             ) -> tuple[dict[str, Registered], dict[str, Conflict], list[tuple[str, str]]]:
    """The name -> object table of one hook, the refused names with their conflict, and the plugins whose
    hook raised ((plugin, error): nothing of theirs is registered for this hook, everyone else's is)."""
    table: dict[str, Registered] = {}
    contested: dict[str, list[str]] = {}  # key -> plugins registering it, when more than one object claims it
    broken: list[tuple[str, str]] = []
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):  # pluggy lists the newest first
        calls: list[tuple[str, Any, list[str]]] = []

        def register(*args: Any, _calls: list = calls, _plugin: str = impl.plugin_name) -> None:
            if kind == "embedder":
                if not hasattr(args[0], "card"):
                    raise PluginError(f"plugin {_plugin!r} registered an embedder without a model card")
                name, obj = args[0].card.id, args[0]
            else:
                name, obj = str(args[0]), args[1]
            _calls.append((name, obj, keys(args)))

        try:
            impl.function(register=register)
        except Exception as exc:  # a broken plugin must not take the others down
            broken.append((impl.plugin_name, f"{hook_name}: {type(exc).__name__}: {exc}"))
            continue
        for name, obj, ks in calls:
            for key in ks:
                k = key.lower()
                if k in table and table[k].obj is not obj:
                    owners = contested.setdefault(k, [table[k].plugin])
                    if impl.plugin_name not in owners:
                        owners.append(impl.plugin_name)
                    continue
                table.setdefault(k, Registered(name, obj, impl.plugin_name))
    refused = {k: Conflict(kind, k, tuple(p)) for k, p in sorted(contested.items())}
    # A model whose own id is contested is refused under its aliases too: an Embedding's meta names the
    # model by its id, which would no longer say which model made it.
    refused |= {k: refused[r.name.lower()] for k, r in table.items() if r.name.lower() in refused and k not in refused}
    return {k: r for k, r in table.items() if k not in refused}, refused, broken


_lock = threading.Lock()


def tables() -> Tables:
    load_plugins()
    # The plugin objects themselves, not their ids: a plugin unregistered and freed can leave its id to a new
    # one, and a cache keyed by ids then served the old plugin's tables (a test saw exactly that).
    state = frozenset(pm.get_plugins())
    hit = _cache
    if hit is not None and hit[0] == state:
        return hit[1]
    with _lock:
        return _build(state)


def _build(state: frozenset[Any]) -> Tables:
    global _cache
    if _cache is not None and _cache[0] == state:
        return _cache[1]
    providers, c1, b1 = _collect("register_providers", "provider", lambda a: [str(a[0])])
    preprocessors, c2, b2 = _collect("register_preprocessors", "preprocessor", lambda a: [str(a[0])])
    embedders, c3, b3 = _collect("register_embedders", "embedder", lambda a: [a[0].card.id, *a[0].card.aliases])
    ids = tuple(sorted({r.name for r in embedders.values()}))
    refused = {f"{kind}:{k}": c for kind, cs in (("provider", c1), ("preprocessor", c2), ("embedder", c3))
               for k, c in cs.items()}
    t = Tables(providers, preprocessors, embedders, ids, refused, tuple(b1 + b2 + b3))
    _cache = (state, t)
    return t


def _failures_hint() -> str:
    lines = [f"  - plugin {n!r} failed to load: {i['error']}" for n, i in sorted(load_failures.items())]
    lines += [f"  - plugin {n!r} failed to register: {e}" for n, e in (_cache[1].broken if _cache else ())]
    if not lines:
        return ""
    return "\nSome plugins failed to load (see `rs-embed plugins`):\n" + "\n".join(lines)


def conflict_message(c: Conflict) -> str:
    """What a contested name means and how to choose: the allow-list that keeps one side, or uninstalling."""
    from .plugins import BUILTINS, describe_plugin, plugin_distribution

    if len(c.plugins) == 1:
        return (f"{c.kind} {c.name!r} is registered twice, for two different objects, by {describe_plugin(c.plugins[0])}:"
                " rs-embed refuses the name; that plugin must register it once")
    owners = " and ".join(describe_plugin(p) for p in c.plugins)
    lines = [f"{c.kind} {c.name!r} is registered by more than one plugin: {owners}; rs-embed refuses the "
             f"contested name (the plugins' other names still work). Choose one:"]
    dists = {p: plugin_distribution(p) for p in c.plugins}
    others = [d for d in loaded_distributions() if d not in dists.values()]  # uninvolved: keep them loading
    for p in c.plugins:
        rivals = [q for q in c.plugins if q != p]
        drop = sorted({d for q in rivals if (d := dists[q]) is not None and d != dists[p]})
        if any(q in BUILTINS for q in rivals) or (dists[p] is None and p not in BUILTINS):
            lines.append(f"  - {describe_plugin(p)}: cannot win over a name built into rs-embed-core; rename it"
                         if dists[p] is not None else
                         f"  - {describe_plugin(p)}: unregister it (rs_embed_core.plugins.pm.unregister)")
            continue
        keep = ([dists[p]] if dists[p] else []) + others
        who = f"{dists[p]}'s" if dists[p] else "the built-in one"
        lines.append(f"  - keep {who}: RS_EMBED_PLUGINS={','.join(keep)}"
                     + (f"  (or pip uninstall {' '.join(drop)})" if drop else ""))
    return "\n".join(lines)


def loaded_distributions() -> list[str]:
    """The distributions whose entry points are registered now."""
    from .plugins import plugin_distribution

    return sorted({d for n, _ in pm.list_name_plugin() if (d := plugin_distribution(n)) is not None})


def _refuse_if_contested(t: Tables, kind: str, name: str) -> None:
    c = t.refused.get(f"{kind}:{name.lower()}")
    if c is not None:
        raise PluginError(conflict_message(c) if c.name == name.lower() else
                          f"{kind} {name!r} is an alias of {c.name!r}, which is refused:\n" + conflict_message(c))


def embedder_class(model: str) -> type:
    t = tables()
    hit = t.embedders.get(str(model).lower())
    if hit is None:
        _refuse_if_contested(t, "embedder", str(model))
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
        _refuse_if_contested(t, "preprocessor", name)
        from .errors import SpecError

        raise SpecError(f"unknown preprocessing step {name!r}; known: {sorted(t.preprocessors)}")
    return hit.obj


def provider_factory(name: str) -> Callable[..., Any]:
    t = tables()
    hit = t.providers.get(name.lower())
    if hit is None:
        _refuse_if_contested(t, "provider", name)
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
