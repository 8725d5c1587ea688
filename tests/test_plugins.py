"""Plugin system: in-process registration, duplicates, case-insensitive ids, load failures."""

import json
import re
import os
import subprocess
import sys
import textwrap

import pytest

from rs_embed_core.card import InputSpec, ModelCard, Variant
from rs_embed_core.embedder import Embedder
from rs_embed_core.errors import PluginError, UnknownModelError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.plugins import pm
from rs_embed_core.registry import embedder_class, tables


def _card(model_id, aliases=()):
    return ModelCard(
        id=model_id, description="test model", aliases=aliases,
        input=InputSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4",), 10.0),
        variants=(Variant("base", 2, 2),), preprocessing=(),
    )


def _plugin(*classes):
    class P:
        @hookimpl
        def register_embedders(self, register):
            for c in classes:
                register(c)
    return P()


@pytest.fixture
def registered():
    objs = []

    def add(obj, name=None):
        pm.register(obj, name=name)
        objs.append(obj)
        return obj

    tables()  # built-ins loaded first
    yield add
    for o in objs:
        pm.unregister(o)


def test_in_process_plugin_is_found_case_insensitively(registered):
    class Thing(Embedder):
        card = _card("ThingNet", aliases=("thing_s2",))

    registered(_plugin(Thing), name="thing-plugin")
    assert "ThingNet" in tables().model_ids
    assert embedder_class("thingnet") is Thing
    assert embedder_class("THING_S2") is Thing


def test_unregister_removes_model(registered):
    class Gone(Embedder):
        card = _card("gone_model")

    p = _plugin(Gone)
    pm.register(p, name="gone")
    assert embedder_class("gone_model") is Gone
    pm.unregister(p)
    with pytest.raises(UnknownModelError):
        embedder_class("gone_model")


def test_a_new_plugin_at_a_freed_plugins_address_gets_its_own_tables():
    """Plugins registered and dropped one after another: CPython soon gives a new object the address (id) of a
    freed one. The tables must follow the plugins themselves, not their ids, or they serve the old plugin's."""
    import gc

    reused = False
    seen: set[int] = set()
    for k in range(40):
        class M(Embedder):
            card = _card(f"addr_model_{k}")

        p = _plugin(M)
        reused |= id(p) in seen
        seen.add(id(p))
        pm.register(p, name=f"addr-{k}")
        try:
            assert embedder_class(f"addr_model_{k}") is M
            assert f"addr_model_{k - 1}" not in tables().model_ids
        finally:
            pm.unregister(p)
        del p, M
        gc.collect()
    if not reused:  # CPython reuses freed addresses at once; an allocator that never did leaves this unexercised
        pytest.skip("no plugin got a freed one's address here")


def test_duplicate_id_is_refused_alone_and_names_both_plugins(registered):
    class A(Embedder):
        card = _card("dupe", aliases=("a_alias",))

    class B(Embedder):
        card = _card("other", aliases=("DUPE",))

    registered(_plugin(A), name="plugin-a")
    registered(_plugin(B), name="plugin-b")
    t = tables()  # the tables still build: a conflict is contained
    assert "dupe" not in t.model_ids and "other" in t.model_ids
    assert embedder_class("other") is B  # the rest of both plugins works
    assert embedder_class("mosaiks").card.id == "mosaiks"  # and so do the plugins that were there
    with pytest.raises(PluginError) as e:
        embedder_class("dupe")
    assert "plugin-a" in str(e.value) and "plugin-b" in str(e.value)
    with pytest.raises(PluginError, match="alias of 'dupe'"):  # A's id is refused, so are its aliases
        embedder_class("a_alias")
    assert [(c.kind, c.name, set(c.plugins)) for c in t.conflicts] == [("embedder", "dupe", {"plugin-a", "plugin-b"})]


def test_unknown_model_suggests_near_matches(registered):
    class Near(Embedder):
        card = _card("remoteclap_test")

    registered(_plugin(Near), name="near")
    with pytest.raises(UnknownModelError) as e:
        embedder_class("remoteclap_tst")
    assert "Did you mean" in str(e.value) and "remoteclap_test" in str(e.value)


def _fake_site(tmp_path, good=True, bad=True):
    site = tmp_path / "site"
    site.mkdir()
    eps = ["[rs_embed]"]
    if good:
        (site / "good_plug.py").write_text(textwrap.dedent('''
            from rs_embed_core.card import InputSpec, ModelCard, Variant
            from rs_embed_core.embedder import Embedder
            from rs_embed_core.hookspecs import hookimpl

            class Good(Embedder):
                card = ModelCard(id="good_model", description="d", input=InputSpec("x", ("a",), 1.0),
                                 variants=(Variant("v", 1, 1),), preprocessing=())

            @hookimpl
            def register_embedders(register):
                register(Good)
        '''))
        eps.append("good = good_plug")
    if bad:
        (site / "bad_plug.py").write_text("raise ImportError('needs the [gpu] extra: pip install bad-plug[gpu]')\n")
        eps.append("bad = bad_plug")
    dist = site / "fake_plugs-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugs\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("\n".join(eps) + "\n")
    return site


def _run(code, site, **env):
    e = {**os.environ, "PYTHONPATH": str(site), **env}
    e.pop("RS_EMBED_PLUGINS", None) if "RS_EMBED_PLUGINS" not in env else None
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_entry_points_loaded_and_failures_recorded(tmp_path):
    site = _fake_site(tmp_path)
    code = textwrap.dedent('''
        import json
        from rs_embed_core.plugins import plugin_info
        from rs_embed_core.registry import embedder_class
        from rs_embed_core.errors import UnknownModelError
        info = {p["name"]: p for p in plugin_info()}
        try:
            embedder_class("nope")
        except UnknownModelError as e:
            msg = str(e)
        print(json.dumps({"info": info, "msg": msg, "good": embedder_class("good_model").card.id}))
    ''')
    res = json.loads(_run(code, site))
    assert res["info"]["good"]["status"] == "loaded"
    assert res["info"]["good"]["distribution"] == "fake-plugs"
    assert res["info"]["bad"]["status"] == "failed"
    assert "needs the [gpu] extra" in res["info"]["bad"]["error"]
    assert "bad" in res["msg"] and "needs the [gpu] extra" in res["msg"]
    assert res["good"] == "good_model"


def test_allow_list_env(tmp_path):
    site = _fake_site(tmp_path)
    code = "import json; from rs_embed_core.plugins import plugin_info; print(json.dumps(plugin_info()))"
    only_bad = {p["name"]: p["status"] for p in json.loads(_run(code, site, RS_EMBED_PLUGINS="fake-plugs:bad"))}
    assert only_bad.get("bad") == "failed" and "good" not in only_bad
    none = {p["name"] for p in json.loads(_run(code, site, RS_EMBED_PLUGINS=""))}
    assert none == {"rs_embed_core.providers.local", "rs_embed_core.preprocess"}


def test_import_rs_embed_pulls_no_torch():
    code = "import sys, rs_embed; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_unknown_backend_and_model_name_the_plugin_to_install(monkeypatch):
    from rs_embed_core import registry
    from rs_embed_core.errors import UnknownModelError, UnknownProviderError

    monkeypatch.setitem(registry.KNOWN_MODELS, "not_installed_model", "rs-embed-example")
    with pytest.raises(UnknownModelError, match="rs-embed-example"):
        registry.embedder_class("not_installed_model")
    if "gee" not in registry.tables().providers:
        with pytest.raises(UnknownProviderError, match="rs-embed-gee.*stac:earth-search.*local:DIR"):
            registry.provider_factory("gee")


def _third_party_site(tmp_path):
    """An installed third-party distribution, rs-embed-tinyconv, whose names repeat installed ones: model id
    'mosaiks' (rs-embed-baseline's), alias 'rcf' (mosaiks's alias) and backend 'local' (built into the core)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tinyconv_plug.py").write_text(textwrap.dedent('''
        from rs_embed_core.card import InputSpec, ModelCard, Variant
        from rs_embed_core.embedder import Embedder
        from rs_embed_core.hookspecs import hookimpl

        def _card(i, aliases=()):
            return ModelCard(id=i, aliases=aliases, description="d", input=InputSpec("x", ("a",), 1.0),
                             variants=(Variant("v", 1, 1),), preprocessing=())

        class Mine(Embedder):
            card = _card("mosaiks")

        class Tiny(Embedder):
            card = _card("tinyconv", aliases=("rcf", "tiny"))

        @hookimpl
        def register_embedders(register):
            register(Mine)
            register(Tiny)

        @hookimpl
        def register_providers(register):
            register("local", lambda arg=None: None)
    '''))
    dist = site / "rs_embed_tinyconv-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rs-embed-tinyconv\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rs_embed]\ntinyconv = tinyconv_plug\n")
    return site


def _cli(site, *args, **env):
    e = {**os.environ, "PYTHONPATH": str(site), **env}
    if "RS_EMBED_PLUGINS" not in env:
        e.pop("RS_EMBED_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "rs_embed_core.cli", *args], capture_output=True, text=True,
                          env=e, timeout=120)


def test_third_party_plugin_repeating_installed_names_is_contained(tmp_path):
    site = _third_party_site(tmp_path)
    models = _cli(site, "models")
    assert models.returncode == 0, models.stderr
    listed = {ln.split()[0] for ln in models.stdout.splitlines() if ln and not ln.startswith(" ")}
    assert {"spectral_stats", "tinyconv"} <= listed and "mosaiks" not in listed
    assert "3 names refused because two plugins register them (local, mosaiks, rcf): see `rs-embed plugins`" \
        in models.stderr

    plugins = _cli(site, "plugins")
    info = {p["name"]: p for p in json.loads(plugins.stdout)}
    assert info["tinyconv"]["status"] == "conflict" and info["baseline"]["status"] == "conflict"
    contested = {(c["kind"], c["name"]): c for c in info["tinyconv"]["conflicts"]}
    assert set(contested) == {("embedder", "mosaiks"), ("embedder", "rcf"), ("provider", "local")}
    assert contested["embedder", "mosaiks"]["with"] == [{"plugin": "baseline", "distribution": "rs-embed-baseline"}]
    assert contested["provider", "local"]["with"][0]["plugin"] == "rs_embed_core.providers.local"

    refused = _cli(site, "describe", "mosaiks")
    assert refused.returncode == 2
    assert "rs-embed-baseline" in refused.stderr and "rs-embed-tinyconv" in refused.stderr
    keep = re.search(r"keep rs-embed-baseline's: RS_EMBED_PLUGINS=(\S+)", refused.stderr)
    assert keep and "rs-embed-tinyconv" not in keep.group(1), refused.stderr
    assert "pip uninstall rs-embed-tinyconv" in refused.stderr
    for name in ("tiny", "spectral_stats", "stats"):  # uncontested names of both plugins
        assert _cli(site, "describe", name).returncode == 0, name
    alias = _cli(site, "describe", "random_conv_features")  # the alias of a refused id is refused with it
    assert alias.returncode == 2 and "alias of 'mosaiks'" in alias.stderr
    backend = _cli(site, "embed", "spectral_stats", "--point", "121.5,31.2", "--year", "2022", "--backend", "local")
    assert backend.returncode == 2 and "provider 'local'" in backend.stderr and "rename" in backend.stderr

    chosen = _cli(site, "describe", "mosaiks", RS_EMBED_PLUGINS=keep.group(1))  # the hint, followed, works
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["plugin"] == "baseline"


def test_models_points_at_plugins_when_one_failed(tmp_path):
    site = _fake_site(tmp_path)
    out = _cli(site, "models")
    assert out.returncode == 0 and "good_model" in out.stdout and "@ 1 m," in out.stdout  # 1 m, not 1.0 m
    assert out.stderr.strip() == "note: 1 plugin failed to load: see `rs-embed plugins`"
    assert _cli(site, "models", RS_EMBED_PLUGINS="fake-plugs:good").stderr == ""  # nothing failed: no note


def test_every_known_model_has_a_row_in_docs_models():
    from pathlib import Path

    from rs_embed_core.registry import KNOWN_MODELS

    docs = Path(__file__).resolve().parents[1] / "docs"
    table = (docs / "models.md").read_text()
    for model, dist in KNOWN_MODELS.items():
        assert f"| `{model}`" in table or f"(`{model}`)" in table, f"docs/models.md has no row for {model}"  # or alias
        assert f"`plugins/{dist}`" in table


def test_a_plugin_whose_hook_raises_is_contained(registered):
    from rs_embed_core.plugins import plugin_info

    class Fine(Embedder):
        card = _card("fine_before_the_crash")

    class Crashing:
        @hookimpl
        def register_embedders(self, register):
            register(Fine)  # registered, then the hook raises: nothing of this hook counts
            raise RuntimeError("needs a GPU driver")

    class NoCard:
        @hookimpl
        def register_embedders(self, register):
            register(object)

    registered(Crashing(), name="crashing")
    registered(NoCard(), name="no-card")
    assert embedder_class("mosaiks").card.id == "mosaiks"  # the installed models still work
    with pytest.raises(UnknownModelError, match="'crashing' failed to register: register_embedders: RuntimeError"):
        embedder_class("fine_before_the_crash")
    info = {p["name"]: p for p in plugin_info()}
    assert info["crashing"]["status"] == "failed" and "needs a GPU driver" in info["crashing"]["error"]
    assert info["no-card"]["status"] == "failed" and "without a model card" in info["no-card"]["error"]
