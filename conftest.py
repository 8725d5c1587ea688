"""What every test of this repository (core and plugins) shares: the disk budget of one test run, and fp32 matmuls.

Full-size random checkpoints are GBs. Without care one run left 18 GB in pytest's temporary folder and a few
runs filled the disk. Here:

- a passing test's `tmp_path` is removed when the test ends (`tmp_path_retention_policy = "failed"` in
  pyproject.toml); a failing test's is kept to look at (pytest keeps the last three runs);
- a folder a fixture makes with `tmp_path_factory.mktemp` (module- or session-scoped caches of random weights)
  is removed when that fixture is torn down, not at the end of the session;
- `random_weights_cache` is one session-wide folder for `rs_embed_core.testing.random_weights`: its files are
  content-addressed (model, variant, seed, shapes), so each full-size random checkpoint is built once a session,
  and it is emptied as soon as the last test that uses it has ended;
- after every test the run's temporary folder is measured (hard links counted once) and the run fails when it
  ever held more than the budget, `RS_EMBED_TEST_DISK_BUDGET_GB` (default 2, see CONTRIBUTING.md). What a test
  writes and deletes again within its own body is not seen by this check.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

BUDGET_ENV = "RS_EMBED_TEST_DISK_BUDGET_GB"
DEFAULT_BUDGET_GB = 2.0
_GB = 1024**3


def folder_bytes(root: Path) -> int:
    """Bytes of the files under `root`, each inode once (hard-linked snapshots are not counted twice)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:  # removed while walking
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


class _DiskWatch:
    """Which fixture made which temporary folder, and the largest the run's temporary folder has been."""

    def __init__(self, budget_gb: float) -> None:
        self.budget = int(budget_gb * _GB)
        self.peak = 0
        self.peak_after = ""
        self.fixture: list[Any] = []  # fixture definitions being set up, innermost last
        self.made: dict[int, list[Path]] = {}  # id(fixturedef) -> folders it made
        self.last_cache_user: str | None = None  # the last test of the run that uses random_weights_cache


def _watch(config: pytest.Config) -> _DiskWatch:
    return config.stash[_KEY]


_KEY = pytest.StashKey[_DiskWatch]()


def pytest_configure(config: pytest.Config) -> None:
    watch = _DiskWatch(float(os.environ.get(BUDGET_ENV, DEFAULT_BUDGET_GB)))
    config.stash[_KEY] = watch
    original = pytest.TempPathFactory.mktemp
    if getattr(original, "_rs_embed_wrapped", False):
        return

    def mktemp(self: pytest.TempPathFactory, basename: str, numbered: bool = True) -> Path:
        path = original(self, basename, numbered)
        if watch.fixture:  # made while a fixture is set up: it goes when that fixture is torn down
            watch.made.setdefault(id(watch.fixture[-1]), []).append(path)
        return path

    mktemp._rs_embed_wrapped = True  # type: ignore[attr-defined]
    pytest.TempPathFactory.mktemp = mktemp  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Any:
    watch = _watch(request.config)
    watch.fixture.append(fixturedef)
    try:
        return (yield)
    finally:
        watch.fixture.pop()


def pytest_fixture_post_finalizer(fixturedef: Any, request: pytest.FixtureRequest) -> None:
    for path in _watch(request.config).made.pop(id(fixturedef), []):
        shutil.rmtree(path, ignore_errors=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Every test starts with full-precision float32 matmuls. Importing terratorch (a test-only reference, imported
    when the prithvi and terramind tests are collected) sets `torch.set_float32_matmul_precision("medium")`, which
    makes CPU matmuls bf16 for the whole process: every later equality test then differs by ~1e-2."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_float32_matmul_precision() != "highest":
        torch.set_float32_matmul_precision("highest")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    users = [i.nodeid for i in items if CACHE_FIXTURE in getattr(i, "fixturenames", ())]
    _watch(config).last_cache_user = users[-1] if users else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    try:
        return (yield)
    finally:  # the test's fixtures (and, at a module's end, the module's) are gone: what is left counts
        watch = _watch(item.config)
        base = item.config._tmp_path_factory._basetemp  # None until a test asked for a temporary folder
        if item.nodeid == watch.last_cache_user and base is not None:  # no later test needs those checkpoints
            cache = Path(base) / CACHE_FOLDER
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir(exist_ok=True)
        if base is not None and Path(base).is_dir():
            size = folder_bytes(Path(base))
            if size > watch.peak:
                watch.peak, watch.peak_after = size, item.nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    watch = _watch(session.config)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = (f"temporary folder: at most {watch.peak / 2**20:,.0f} MB (after {watch.peak_after or 'no test'}); "
            f"budget {watch.budget / 2**20:,.0f} MB ({BUDGET_ENV}={watch.budget / _GB:g})")
    if reporter is not None:
        reporter.write_sep("-", "disk budget")
        reporter.write_line(line)
    if watch.peak > watch.budget:
        if reporter is not None:
            reporter.write_line(f"FAILED: the test run held more than its disk budget: {line}. Remove large "
                                "temporaries when a test ends, and build full-size checkpoints once "
                                "(random_weights_cache); see CONTRIBUTING.md", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


CACHE_FIXTURE = "random_weights_cache"
CACHE_FOLDER = "random-weights-cache"


@pytest.fixture(scope="session")
def random_weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for `random_weights(..., cache_dir=random_weights_cache)` for the whole session: each
    full-size random checkpoint is built once. It is emptied after the last test that uses it."""
    return tmp_path_factory.mktemp(CACHE_FOLDER, numbered=False)
