"""The README's shell line under "Your own GeoTIFFs" runs as written and gives the embedding of the Python example
above it (same file, band names, date, sensor, ROI and model): the two interfaces are equivalent."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout (a git worktree one level deeper looks one level further up)
SHARED_TIF = next((p for p in (ROOT.parent / "shared/data/landsat7_rgb_byte.tif",
                               ROOT.parent.parent / "shared/data/landsat7_rgb_byte.tif") if p.is_file()), None)


def _section_blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own GeoTIFFs", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def test_the_section_has_one_python_example_and_one_shell_example():
    assert len(_section_blocks("python")) == 1 and len(_section_blocks("bash")) == 1


@pytest.mark.skipif(SHARED_TIF is None, reason="../shared/data is absent")
def test_readme_shell_line_equals_the_python_example(tmp_path, monkeypatch):
    pytest.importorskip("rs_embed_baseline")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "landsat7_rgb_byte.tif").symlink_to(SHARED_TIF)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(["bash", "-euc", _section_blocks("bash")[0]], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    shell = json.loads((tmp_path / "landsat.json").read_text())
    assert len(shell) == 1

    monkeypatch.chdir(tmp_path)  # the Python example's relative path, read from the same folder
    ns: dict = {}
    exec(compile(_section_blocks("python")[0], "README.md Your own GeoTIFFs", "exec"), ns)  # noqa: S102
    emb = ns["emb"]
    assert shell[0]["shape"] == list(emb.shape)
    np.testing.assert_array_equal(np.asarray(shell[0]["embedding"], np.float32), emb.data)
    for key in ("model", "sensor", "temporal", "preprocessing"):
        assert json.loads(json.dumps(emb.meta[key], default=str)) == shell[0]["meta"][key], key
