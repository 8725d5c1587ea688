"""CONTRIBUTING.md's example plugin is a real one: its files are written from the page's text, built and installed
with pip into a folder of its own (the plugin alone, --no-deps; this environment supplies the core and torch),
found from there through its entry point, and its own tests (the contract checks) pass there."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def page_files() -> dict[str, str]:
    """{relative path: content} of every code block whose first line is a comment naming a file of the example."""
    out = {}
    for lang, body in re.findall(r"```(toml|python)\n(.*?)```", (ROOT / "CONTRIBUTING.md").read_text(), flags=re.S):
        first, _, rest = body.partition("\n")
        m = re.fullmatch(r"# (rs-embed-mymodel/\S+)", first.strip())
        if m:
            out[m.group(1)] = rest
    return out


def test_the_page_holds_the_whole_plugin():
    assert set(page_files()) == {"rs-embed-mymodel/pyproject.toml", "rs-embed-mymodel/rs_embed_mymodel.py",
                                 "rs-embed-mymodel/tests/test_mymodel.py"}
    text = (ROOT / "CONTRIBUTING.md").read_text()
    for gone in ("to_grid(tokens)", "build_network", "pm.register(module)`)"):  # the old example's slips
        assert gone not in text


def test_example_plugin_installs_and_passes_its_contract_tests(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    for rel, content in page_files().items():
        dest = tmp_path / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(content)
    src = tmp_path / "rs-embed-mymodel"
    site = tmp_path / "site"  # what `pip install` put there is all the new environment adds to this one
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", *isolation,
           "--target", str(site), str(src)]
    env = {k: v for k, v in os.environ.items() if k not in ("RS_EMBED_PLUGINS",)}
    out = subprocess.run(pip, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert {p.name for p in site.glob("rs_embed_mymodel-*.dist-info")}, sorted(p.name for p in site.iterdir())
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    py = sys.executable

    info = subprocess.run([py, "-c", "import json; from rs_embed_core.plugins import plugin_info; "
                                          "print(json.dumps(plugin_info()))"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert info.returncode == 0, info.stderr[-3000:]
    mine = [p for p in json.loads(info.stdout) if p["name"] == "mymodel"]
    assert mine and mine[0]["status"] == "loaded" and mine[0]["distribution"] == "rs-embed-mymodel"
    assert not (ROOT / "rs_embed_mymodel.py").exists() and "rs_embed_mymodel" not in sys.modules  # only there

    run = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(src / "pyproject.toml"),
                          "--rootdir", str(src), "--basetemp", str(tmp_path / "plugin-tests"), str(src / "tests")],
                         capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "2 passed" in run.stdout
