import sys
from pathlib import Path

import pytest

# tests import their shared in-process plugin (world_plugin.py) by module name
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def sample_scene(tmp_path_factory):
    """The synthetic sample scene (rs-embed sample-data), built once per test session; read-only."""
    from rs_embed_core.sample import make_sample_scene

    root = tmp_path_factory.mktemp("sample_scene") / "sample"
    make_sample_scene(root)
    return root


@pytest.fixture
def world():
    """The in-process test plugin (world provider, tiny numpy model) registered, with empty raster and model
    caches; unregistered after. Test modules that need it for every test set
    `pytestmark = pytest.mark.usefixtures("world")`."""
    from world_plugin import _Plugin

    from rs_embed_core.plugins import pm
    from rs_embed_core.runner import clear_model_cache, raster_cache

    p = _Plugin()
    pm.register(p, name="test-world-plugin")
    raster_cache.clear()
    clear_model_cache()
    yield
    pm.unregister(p)
