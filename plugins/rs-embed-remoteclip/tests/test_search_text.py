"""Text search over a RemoteCLIP export (rs_embed.search): the text tower of exactly the export's weights, scored
against the exported image vectors. A tiny RemoteCLIP (same code, small widths) on random weights from an offline
Hub cache, exported over the synthetic sample scene."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from rs_embed import (  # noqa: E402
    DimensionMismatchError, OutputSpec, PointBuffer, TemporalSpec, TextQuery, UnknownItemError, export_batch, search,
)
from rs_embed_core.sample import SAMPLE_POINTS, make_sample_scene  # noqa: E402
from rs_embed_core.testing import random_weights, registered  # noqa: E402

import rs_embed_remoteclip as rc  # noqa: E402
import rs_embed_remoteclip_model as rcm  # noqa: E402

TINY = attrs.evolve(
    rc.VIT_B_32, name="tiny", pooled_dim=16, grid_dim=32,
    params={**rc.VIT_B_32.params, "embed_dim": 16, "width": 32, "layers": 1, "heads": 2,
            "text_width": 16, "text_layers": 1, "text_heads": 2},
)


class TinyRemoteCLIP(rc.RemoteCLIP):
    card = attrs.evolve(rc.RemoteCLIP.card, id="remoteclip_search_test", aliases=(), variants=(TINY,),
                        default_variant="tiny")


PROMPTS = ["a satellite image of a lake", "dense urban blocks", "rice paddies"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("open_clip")  # the tokenizer's BPE merges come from open_clip's bundled copy here
    root = tmp_path_factory.mktemp("text-search")
    make_sample_scene(root / "scene")
    full = rcm.CLIP(TINY.params).state_dict()  # both towers: the text tower is loaded from the same file
    with registered(TinyRemoteCLIP), random_weights(TinyRemoteCLIP, "tiny", root / "weights", state_dict=full) as spec:
        spatials = [PointBuffer(lon, lat, 1120) for _, lon, lat in SAMPLE_POINTS]
        names = [n for n, _, _ in SAMPLE_POINTS]
        window = TemporalSpec.range("2022-06-01", "2022-09-01")
        backend = f"local:{root / 'scene'}"
        export_batch(spatials, window, ["remoteclip_search_test"], root / "pooled", names=names, backend=backend,
                     progress=False)
        export_batch(spatials, window, ["remoteclip_search_test"], root / "grid", names=names, backend=backend,
                     output=OutputSpec.grid(), layout="combined", progress=False)
        yield root, spec, full


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_text_scores_are_cosines_with_the_exports_text_tower(exported):
    """The text tower comes from the weights the export recorded, even when the card now names other weights."""
    from rs_embed import load_export

    root, spec, full = exported
    with random_weights(TinyRemoteCLIP, "tiny", root / "weights", state_dict=full, seed=1) as other:
        assert other.sha256 != spec.sha256 and TinyRemoteCLIP.card.variant().weights == other
        hits = search(root / "pooled", TextQuery(PROMPTS[0]), k=4)
        text = TinyRemoteCLIP(attrs.evolve(TINY, weights=spec)).embed_text([PROMPTS[0]])[0]
        wrong = TinyRemoteCLIP(attrs.evolve(TINY, weights=other)).embed_text([PROMPTS[0]])[0]
    assert not np.allclose(text, wrong, atol=1e-3)
    images = load_export(root / "pooled").embeddings["remoteclip_search_test"]
    want = _unit(images) @ _unit(text)
    assert hits.column("id").to_pylist() == list(np.argsort(-want, kind="stable"))
    np.testing.assert_allclose(hits.column("score").to_numpy(), np.sort(want)[::-1], atol=1e-5)


def test_a_string_that_names_no_item_is_text_and_lists_mix(exported):
    exported = exported[0]
    as_str = search(exported / "pooled", PROMPTS[1], k=4)
    as_text = search(exported / "pooled", TextQuery(PROMPTS[1]), k=4)
    assert as_str.to_pylist() == as_text.to_pylist()
    assert search(exported / "pooled", "hangzhou_lake", k=3).num_rows == 3  # a name stays an item query
    mixed = search(exported / "pooled", ["hangzhou_lake", TextQuery(PROMPTS[0])], k=3)
    assert "hangzhou_lake" not in mixed.column("name").to_pylist()


def test_text_on_grid_tokens_is_a_dimension_mismatch(exported, monkeypatch):
    exported = exported[0]
    monkeypatch.setattr(TinyRemoteCLIP, "embed_text", lambda *a, **k: pytest.fail("text tower ran"))
    with pytest.raises(DimensionMismatchError, match="pooled space"):
        search(exported / "grid", TextQuery(PROMPTS[0]))
    with pytest.raises(UnknownItemError):
        search(exported / "grid", 17)
