"""Installing the core and one plugin, as the plugin READMEs say, and living beside the unrelated `rs-embed`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())


def _project(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())["project"]


def test_core_distribution_is_not_the_index_rs_embed():
    assert _project(ROOT)["name"] == "rs-embed-core"


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_plugin_depends_on_the_core_and_its_readme_line_installs_it(plugin):
    deps = [re.split(r"[\s<>=!~\[;]", d, maxsplit=1)[0] for d in _project(plugin)["dependencies"]]
    assert "rs-embed-core" in deps and "rs-embed" not in deps
    lines = [ln for ln in (plugin / "README.md").read_text().splitlines() if "pip install" in ln]
    own = [ln for ln in lines if f"plugins/{plugin.name}" in ln]
    assert own, f"{plugin.name}/README.md has no install line"
    for ln in own:  # the core is not on any index: every line installs it from the repository too
        assert "-c constraints.txt -e . -e " in ln, ln


def test_foreign_rs_embed_is_refused_at_import(tmp_path):
    site = tmp_path / "site"
    dist = site / "rs_embed-0.3.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rs-embed\nVersion: 0.3.1\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", "import rs_embed"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode != 0
    assert "ImportError" in out.stderr and "'rs-embed' 0.3.1" in out.stderr and "pip uninstall rs-embed" in out.stderr
    env["PYTHONPATH"] = str(tmp_path)  # without it, the same interpreter imports fine
    assert subprocess.run([sys.executable, "-c", "import rs_embed"], env=env, timeout=120).returncode == 0


def test_fresh_venv_core_and_one_plugin_from_its_readme_line(tmp_path):
    """The baseline README's install line, run as written in a new virtual environment: no torch comes along,
    `import rs_embed` works, and one embedding is computed on the sample scene."""
    line = next(ln.strip() for ln in (ROOT / "plugins/rs-embed-baseline/README.md").read_text().splitlines()
                if ln.strip().startswith("pip install"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bindir = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    out = subprocess.run(["bash", "-c", line + " -q --disable-pip-version-check"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    code = (
        "import importlib.util, rs_embed\n"
        "assert importlib.util.find_spec('torch') is None, 'torch was installed'\n"
        "from rs_embed import PointBuffer, TemporalSpec, get_embedding\n"
        "from rs_embed_core.sample import make_sample_scene\n"
        f"make_sample_scene({str(tmp_path / 'sample')!r})\n"
        "e = get_embedding('mosaiks', PointBuffer(121.5, 31.2, 500), TemporalSpec.range('2022-06-01', '2022-09-01'),"
        f" backend='local:{tmp_path / 'sample'}')\n"
        "print(e.data.shape)\n"
    )
    run = subprocess.run([str(bindir / "python"), "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().startswith("(") and run.stdout.strip() != "()"


def test_the_version_pin_accepts_the_cpu_build_the_readme_installs_first():
    """README: install torch from PyTorch's CPU index first, then `-c constraints.txt` keeps it; that holds only
    while the pin names a version without a local label (2.13.0 matches 2.13.0+cpu)."""
    from packaging.requirements import Requirement

    pins = {Requirement(ln).name: Requirement(ln).specifier for ln in (ROOT / "constraints.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")}
    readme = (ROOT / "README.md").read_text()
    line = re.search(r"pip install (torch==\S+) (torchvision==\S+) --index-url https://download.pytorch.org/whl/cpu",
                     readme)
    assert line, "README lost its CPU-only torch line"
    for req in line.groups():
        name, version = req.split("==")
        assert str(pins[name]) == f"=={version}", f"README installs {req}, constraints.txt pins {pins[name]}"
        assert pins[name].contains(f"{version}+cpu")
