"""The repository's root conftest.py keeps one test run within its disk budget: fixture folders go when their
fixture does, passing tests' tmp_path when they end, and a run that held more than the budget fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent('''
    import os
    from pathlib import Path

    import pytest

    LOG = Path(os.environ["PROBE_LOG"])

    def _write(path, mb):
        with open(path, "wb") as f:
            f.write(os.urandom(mb * 1024 * 1024))

    @pytest.fixture(scope="module")
    def module_dir(tmp_path_factory):
        d = tmp_path_factory.mktemp("module-weights")
        _write(d / "w.bin", 3)
        return d

    def test_uses_module_dir(module_dir, tmp_path):
        _write(tmp_path / "big.bin", int(os.environ.get("PROBE_MB", "1")))
        LOG.write_text(f"{module_dir}\\n{tmp_path}\\n")

    def test_random_weights_cache_is_one_folder_for_the_session(random_weights_cache):
        assert random_weights_cache.name == "random-weights-cache"
        _write(random_weights_cache / "ckpt.bin", 2)
        (LOG.parent / "cache.txt").write_text(str(random_weights_cache))
''')

FOLLOWER = textwrap.dedent('''
    import os
    from pathlib import Path

    def test_after_the_module(tmp_path):
        module_dir, first_tmp = Path(os.environ["PROBE_LOG"]).read_text().split()
        assert not Path(module_dir).exists(), "a module fixture's folder outlived its module"
        assert not Path(first_tmp).exists(), "a passing test's tmp_path outlived the test"
        cache = Path(os.environ["PROBE_LOG"]).parent / "cache.txt"
        assert not any(Path(cache.read_text()).iterdir()), "the cache outlived its last user"
''')


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    proj = tmp_path / "proj"
    if not proj.exists():
        proj.mkdir()
        shutil.copy(ROOT / "conftest.py", proj / "conftest.py")
        (proj / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
        (proj / "tests").mkdir()
        (proj / "tests" / "test_a_probe.py").write_text(PROBE)
        (proj / "tests" / "test_b_follower.py").write_text(FOLLOWER)
    e = {**os.environ, "PROBE_LOG": str(tmp_path / "log.txt"), **env}
    e.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests",
                           "--basetemp", str(tmp_path / "base")], cwd=proj, env=e, capture_output=True,
                          text=True, timeout=300)


def test_fixture_folders_and_passing_tmp_paths_go_early_and_the_peak_is_reported(tmp_path):
    out = _run(tmp_path, RS_EMBED_TEST_DISK_BUDGET_GB="1")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 passed" in out.stdout
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("temporary folder: at most"))
    assert "budget 1,024 MB" in line
    peak = int(line.split("at most ")[1].split(" MB")[0].replace(",", ""))
    assert 3 <= peak < 4, line  # measured after the test: its own 1 MB is gone, the module's 3 MB not yet


def test_a_run_over_its_budget_fails(tmp_path):
    out = _run(tmp_path, RS_EMBED_TEST_DISK_BUDGET_GB="0.002", PROBE_MB="1")  # 3 MB module folder > 2 MB
    assert "3 passed" in out.stdout  # every test passed ...
    assert out.returncode == 1 and "held more than its disk budget" in out.stdout  # ... and the run failed


def test_hard_links_count_once(tmp_path):
    sys.path.insert(0, str(ROOT))
    try:
        from conftest import folder_bytes  # the root conftest.py, as a module
    finally:
        sys.path.remove(str(ROOT))
    (tmp_path / "a.bin").write_bytes(os.urandom(1 << 20))
    one = folder_bytes(tmp_path)
    os.link(tmp_path / "a.bin", tmp_path / "b.bin")
    assert folder_bytes(tmp_path) == one >= 1 << 20


def test_every_test_starts_with_full_precision_fp32_matmuls(tmp_path):
    """A reference package that lowers torch's matmul precision at import (terratorch does) must not leak it."""
    proj = tmp_path / "proj"
    (proj / "tests").mkdir(parents=True)
    shutil.copy(ROOT / "conftest.py", proj / "conftest.py")
    (proj / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (proj / "tests" / "test_p.py").write_text(textwrap.dedent('''
        import pytest
        torch = pytest.importorskip("torch")
        torch.set_float32_matmul_precision("medium")  # what importing terratorch does

        def test_precision():
            assert torch.get_float32_matmul_precision() == "highest"
    '''))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", "--basetemp",
                          str(tmp_path / "base")], cwd=proj, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and ("1 passed" in out.stdout or "1 skipped" in out.stdout), out.stdout[-2000:]
