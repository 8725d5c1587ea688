"""The export executor hook: a plugin registers an executor by name; export_batch(executor=NAME) runs its stream
and still writes the files itself; unknown names and misuse are typed errors before any work."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("rs_embed_baseline")

from rs_embed import PointBuffer, SpecError, TemporalSpec, export_batch, load_export  # noqa: E402
from rs_embed_core import runner  # noqa: E402
from rs_embed_core.errors import UnknownExecutorError  # noqa: E402
from rs_embed_core.hookspecs import hookimpl  # noqa: E402
from rs_embed_core.plugins import load_plugins, pm, resolve_executor  # noqa: E402
from rs_embed_core.testing import FakeProvider  # noqa: E402

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")


class Recording:
    """An executor that runs the core runner in this process and records what it was asked."""

    def __init__(self, **options):
        self.options, self.calls, self.started, self.closed = options, [], None, False

    def start(self, out):
        self.started = out

    def run(self, jobs, spatials, temporal, provider, **kw):
        self.calls.append(len(spatials))
        yield from runner.run(jobs, spatials, temporal, provider, **kw)

    def close(self):
        self.closed = True


@pytest.fixture
def inline_executor():
    made = []

    class Plugin:
        @hookimpl
        def register_executors(self, register):
            register("inline-test", lambda **o: made.append(Recording(**o)) or made[-1])

    load_plugins()
    plugin = Plugin()
    pm.register(plugin, name="executor-test")
    yield made
    pm.unregister(plugin)


def test_a_registered_executor_runs_the_stream_and_the_export_is_the_local_one(inline_executor, tmp_path):
    rois = [PointBuffer(121.5 + 0.013 * i, 31.2, 320) for i in range(4)]
    export_batch(rois, WINDOW, ["mosaiks"], tmp_path / "local", backend=FakeProvider(), batch_size=2)
    export_batch(rois, WINDOW, ["mosaiks"], tmp_path / "other", backend=FakeProvider(), batch_size=2,
                 executor="inline-test")
    (ex,) = inline_executor
    assert ex.calls == [4] and ex.started == tmp_path / "other" and ex.closed
    np.testing.assert_array_equal(load_export(tmp_path / "local").embeddings["mosaiks"],
                                  load_export(tmp_path / "other").embeddings["mosaiks"])
    obj = Recording()  # an executor object is used as given
    export_batch(rois, WINDOW, ["mosaiks"], tmp_path / "obj", backend=FakeProvider(), executor=obj)
    assert obj.calls == [4] and obj.closed


def test_unknown_executors_and_misuse_are_typed_errors_before_any_work(tmp_path):
    provider = FakeProvider()
    with pytest.raises(UnknownExecutorError, match="no export executor 'nope'.*installed executors"):
        export_batch([PointBuffer(121.5, 31.2, 320)], WINDOW, ["mosaiks"], tmp_path / "a", backend=provider,
                     executor="nope")
    with pytest.raises(SpecError, match="executor must be"):
        export_batch([PointBuffer(121.5, 31.2, 320)], WINDOW, ["mosaiks"], tmp_path / "b", backend=provider,
                     executor=42)
    with pytest.raises(SpecError, match="only apply to a distributed executor"):
        resolve_executor("local", address="h:1")
    assert provider.calls == 0 and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert resolve_executor("local") is None and resolve_executor(None) is None
