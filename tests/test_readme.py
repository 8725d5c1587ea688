"""Every Python snippet of README.md runs, as written, with only these substitutions: the Earth Engine backend
and "local:sample" become the local sample scene (Earth Engine is not reachable here), output paths go to a
temporary folder, the README's example GeoTIFF is the real scene in ../shared/data (skipped when absent), and
models with weights run on random ones served from an offline Hugging Face cache."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("rs_embed_remoteclip")
pytest.importorskip("rs_embed_prithvi")
pytest.importorskip("xarray")

ROOT = Path(__file__).resolve().parents[1]
SHARED_TIF = ROOT.parent / "shared" / "data" / "landsat7_rgb_byte.tif"
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.fixture(scope="module")
def env(tmp_path_factory, random_weights_cache):
    from rs_embed_core.providers.local import LocalProvider
    from rs_embed_core.sample import make_sample_scene
    from rs_embed_core.testing import random_weights

    root = tmp_path_factory.mktemp("readme")
    make_sample_scene(root / "sample")
    with contextlib.ExitStack() as stack:
        # one offline cache for both, for the whole session: each full-size random checkpoint is built once
        stack.enter_context(random_weights("remoteclip", None, random_weights_cache))
        stack.enter_context(random_weights("prithvi", None, random_weights_cache))
        yield root, LocalProvider(root / "sample"), random_weights_cache


def test_there_are_snippets():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("k", range(len(BLOCKS)))
def test_readme_snippet_runs(env, k):
    root, local, cache = env
    code = BLOCKS[k]
    if "data/landsat7_rgb_byte.tif" in code:
        if not SHARED_TIF.is_file():
            pytest.skip("../shared/data is absent")
        code = code.replace('"data/landsat7_rgb_byte.tif"', repr(str(SHARED_TIF)))
    code = (code.replace('backend="gee"', "backend=LOCAL").replace('backend="local:sample"', "backend=LOCAL")
            .replace('out="exports"', f"out={str(root / f'exports{k}')!r}")
            .replace('quicklook="patch.png"', f"quicklook={str(root / 'patch.png')!r}")
            .replace('"/tmp/rs-embed-random"', repr(str(cache))))
    ns = {"LOCAL": local}
    exec(compile(code, f"README.md python block {k}", "exec"), ns)  # noqa: S102
    if "emb" in ns:
        import numpy as np

        assert np.isfinite(ns["emb"].data).all()
    if "grid" in ns:  # the tiled example lies inside the sample scene: every cell saw valid input only
        assert ns["grid"].meta["tiling"]["tiles"] == 16
        assert (ns["grid"].valid == 1.0).all() and ns["grid"].meta["valid_fraction"] == 1.0
    if "export_batch" in code:
        from rs_embed import load_export

        data = load_export(root / f"exports{k}")
        assert set(data.embeddings) == {"remoteclip", "prithvi"} and all(
            (s == "ok").all() for s in data.status.values())
