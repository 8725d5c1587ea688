"""docs/search.md's worked example runs as written (its shell lines through `rs-embed`, then its Python block) in a
fresh folder, and finds what the page says: the urban places find each other, the lake finds the river."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("rs_embed_baseline")
pytest.importorskip("zarr")

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "search.md").read_text()
BASH = re.findall(r"```bash\n(.*?)```", PAGE, flags=re.S)
PYTHON = re.findall(r"```python\n(.*?)```", PAGE, flags=re.S)


def _run(line: str, cwd: Path) -> str:
    """One shell line of the page: `printf ... > file`, or an `rs-embed` command run by this interpreter."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if line.startswith("printf "):
        res = subprocess.run(["bash", "-c", line], cwd=cwd, capture_output=True, text=True, env=env)
    else:
        args = shlex.split(line)
        assert args[0] == "rs-embed", line
        res = subprocess.run([sys.executable, "-m", "rs_embed_core.cli", *args[1:]], cwd=cwd, capture_output=True,
                             text=True, env=env)
    assert res.returncode == 0, f"{line}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def worked(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("docs-search")
    outputs = {}
    for block in BASH:
        for line in block.strip().splitlines():
            outputs[line] = _run(line, cwd)
    return cwd, outputs


def _first_hit(out: str) -> str:
    return out.splitlines()[1].split()[1]


def test_the_page_has_the_example():
    assert len(BASH) == 2 and len(PYTHON) == 1


def test_urban_finds_urban_and_the_lake_finds_the_river(worked):
    cwd, outputs = worked
    urban = next(v for k, v in outputs.items() if "--like urban_a" in k)
    lake = next(v for k, v in outputs.items() if "--like lake" in k)
    assert _first_hit(urban) == "urban_b" and _first_hit(lake) == "river"
    shown = re.search(r"```\n(rank .*?)```", PAGE, flags=re.S).group(1)
    assert urban.strip() == shown.strip()  # the table on the page is the command's output
    doc = json.loads((cwd / "sample" / "hits.geojson").read_text())
    assert doc["features"][0]["properties"]["name"] == "river"
    assert (cwd / "sample" / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cell_search_returns_cells(worked):
    cwd, outputs = worked
    cells = next(v for k, v in outputs.items() if "sample/cells --like" in k)
    head = cells.splitlines()[0].split()
    assert head[:4] == ["rank", "name", "row", "col"] and len(cells.splitlines()) == 6
    assert (cwd / "sample" / "cells.png").is_file()


def test_the_python_block_runs(worked, monkeypatch):
    cwd, _ = worked
    monkeypatch.chdir(cwd)
    ns: dict = {}
    exec(compile(PYTHON[0], "docs/search.md python block", "exec"), ns)  # noqa: S102
    assert ns["hits"].column("name")[0].as_py() == "river"
