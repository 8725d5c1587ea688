"""docs/quicklook.md's worked example runs as written (its shell lines through `rs-embed`, then its Python blocks)
in a fresh folder, writes valid PNGs, and shows what the page says: the lake's colour comes back in the river's
cells and not in urban_a's or crops'; the committed picture is what the command draws."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("rs_embed_baseline")
pytest.importorskip("zarr")
Image = pytest.importorskip("PIL.Image")

from test_search_docs import _run  # noqa: E402 - the search page's runner: printf, or rs-embed in this Python

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "quicklook.md").read_text()
BASH = re.findall(r"```bash\n(.*?)```", PAGE, flags=re.S)
PYTHON = re.findall(r"```python\n(.*?)```", PAGE, flags=re.S)


@pytest.fixture(scope="module")
def worked(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("docs-quicklook")
    for line in BASH[0].strip().splitlines():
        _run(line, cwd)
    return cwd


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_the_page_has_the_example_and_is_linked():
    assert len(BASH) == 1 and len(PYTHON) == 2
    assert "quicklook.md" in (ROOT / "docs" / "search.md").read_text()
    assert "quicklook.md" in (ROOT / "mkdocs.yml").read_text()


def test_the_maps_are_written_and_the_lake_finds_the_river(worked):
    from rs_embed_core.quicklook import export_colours

    for name in ("places.png", "cells.png"):
        assert _png(worked / "sample" / name).shape[1] > 700
    ec = export_colours(worked / "sample" / "cells")
    names, rgb = ec.src.names, ec.rgb.astype(int)
    lake = rgb[ec.items == names.index("lake")]
    assert (lake == lake[0]).all()  # one colour

    def near_lake(name: str) -> int:
        return int((np.abs(rgb[ec.items == names.index(name)] - lake[0]).max(axis=1) < 30).sum())

    assert near_lake("river") >= 16 and near_lake("urban_a") == 0 and near_lake("crops") == 0
    committed = _png(ROOT / "docs" / "img" / "quicklook-cells.png").astype(int)  # regenerate it when this fails
    drawn = _png(worked / "sample" / "cells.png").astype(int)
    assert committed.shape == drawn.shape and np.abs(committed - drawn).max() <= 2  # BLAS may round differently


def test_the_python_blocks_run(worked, monkeypatch):
    monkeypatch.chdir(worked)
    ns: dict = {}
    exec(compile(PYTHON[0], "docs/quicklook.md python block", "exec"), ns)  # noqa: S102
    pca = _png(worked / "sample" / "pca.png")
    assert pca.shape[0] > 512 and pca.shape[1] > 512
    assert _png(worked / "sample" / "means.png").shape[1] > 700
    pytest.importorskip("folium")
    exec(compile(PYTHON[1], "docs/quicklook.md map block", "exec"), ns)  # noqa: S102
    assert (worked / "sample" / "cells.html").read_text().count('"type": "Feature"') == 384
