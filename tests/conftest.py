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
