"""Progress: fetch and tile counts while a run works, one summary line when it is done, silence when asked
(progress=False), off a terminal, or for quick work."""

from __future__ import annotations

import io
import sys

import pytest

from rs_embed import OutputSpec, get_embedding, get_embeddings_batch
from rs_embed_core import progress as progress_mod

from test_tiling import Blocks, aligned_point
from world_plugin import WINDOW


pytestmark = pytest.mark.usefixtures("world")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def terminal(monkeypatch) -> Terminal:
    """stderr as a terminal; set inside the test (pytest's capture resets sys.stderr after fixtures)."""
    out = Terminal()
    monkeypatch.setattr(sys, "stderr", out)
    return out


def lines(text: str) -> list[str]:
    """What a terminal would keep: the last state of each line (a bar redraws itself after a carriage return)."""
    return [ln.rsplit("\r", 1)[-1].rstrip() for ln in text.split("\n") if ln.rsplit("\r", 1)[-1].strip()]


def test_a_batch_leaves_one_summary_line(capsys, monkeypatch):
    monkeypatch.setattr(progress_mod, "REDRAW_S", 0.0)  # every state is drawn
    rois = [aligned_point(32), aligned_point(64)]
    get_embeddings_batch("tiny_test_model", rois, WINDOW, backend=Blocks(), progress=True)
    err = capsys.readouterr()
    assert err.out == ""  # never on stdout
    kept = lines(err.err)
    assert len(kept) == 1 and kept[0].startswith("embed tiny_test_model: 2 of 2 embeddings, 2 fetches in ")
    assert "fetched 1/2" in err.err and "fetched 2/2" in err.err  # the bar showed fetches on its way


def test_a_single_tiled_roi_shows_its_tiles(monkeypatch):
    term = terminal(monkeypatch)
    monkeypatch.setattr(progress_mod, "AUTO_DELAY_S", 0.0)  # as if the call had lasted long enough
    monkeypatch.setattr(progress_mod, "REDRAW_S", 0.0)
    e = get_embedding("tiny_test_model", aligned_point(96), WINDOW, OutputSpec.grid(), backend=Blocks(),
                      input_prep="tile")
    assert e.meta["tiling"]["tiles"] == 9
    text = term.getvalue()
    assert all(f"tiles {k}/9" in text for k in range(10))  # tile progress while it ran
    assert lines(text)[-1].startswith("embed tiny_test_model: 1 of 1 embedding, 9 tiles, 1 fetch in ")


def test_failures_are_counted_in_the_summary(capsys):
    class Broken(Blocks):
        def fetch(self, req):
            if req.grid.width == 64:
                from rs_embed import ProviderError

                raise ProviderError("no scene")
            return super().fetch(req)

    out = get_embeddings_batch("tiny_test_model", [aligned_point(32), aligned_point(64)], WINDOW, backend=Broken(),
                               progress=True, continue_on_error=True, max_retries=0)
    assert out[1].__class__.__name__ == "ItemError"
    last = lines(capsys.readouterr().err)[-1]
    assert last.startswith("embed tiny_test_model: 1 of 2 embeddings, 1 failed, 2 fetches")


def test_quiet_when_asked_off_a_terminal_or_quick(capsys, monkeypatch):
    term = terminal(monkeypatch)
    p = aligned_point(96)
    get_embedding("tiny_test_model", p, WINDOW, OutputSpec.grid(), backend=Blocks(), input_prep="tile")
    assert term.getvalue() == ""  # a terminal, but quicker than AUTO_DELAY_S
    monkeypatch.setattr(progress_mod, "AUTO_DELAY_S", 0.0)
    get_embedding("tiny_test_model", p, WINDOW, OutputSpec.grid(), backend=Blocks(), input_prep="tile", progress=False)
    get_embeddings_batch("tiny_test_model", [p], WINDOW, backend=Blocks(), progress=False)
    assert term.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: progress=None stays silent
    get_embeddings_batch("tiny_test_model", [p], WINDOW, backend=Blocks())
    assert sys.stderr.getvalue() == "" and capsys.readouterr().err == ""
