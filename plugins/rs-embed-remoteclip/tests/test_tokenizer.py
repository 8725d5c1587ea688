"""The CLIP tokenizer written here gives open_clip's token ids, from a pinned file in an offline Hub cache."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")

from rs_embed_core.errors import WeightsError  # noqa: E402
from rs_embed_core.testing import build_hf_cache, offline_hub, weights_spec_for  # noqa: E402

import rs_embed_remoteclip as rc  # noqa: E402
from rs_embed_remoteclip_tokenizer import ClipTokenizer, read_merges  # noqa: E402

BPE = Path(os.path.dirname(open_clip.__file__)) / "bpe_simple_vocab_16e6.txt.gz"
REVISION = "1" * 40

TEXTS = [
    "A busy airport with many airplanes.",
    "Satellite view of Hohai University.",
    "",
    "   lots   of\tspace\n",
    "naïve café – “quoted” &amp; &lt;tag&gt; &amp;amp;",
    "数字 123,456.78 km²",
    "emoji 🛰️🌍 test",
    "don't won't I'll we've they're IT'S",
    "<start_of_text> literal specials <end_of_text>",
    "CAPITALS and MiXeD case",
    "ﬁ ligature and ｆｕｌｌｗｉｄｔｈ",
    "résumé São Paulo Zürich Ελληνικά русский",
    "x" * 300,
    "a field of " * 40,
]


@pytest.fixture(scope="module")
def cached_tokenizer(tmp_path_factory):
    """Our tokenizer, its merges served from an offline Hub cache holding open_clip's BPE file."""
    root = tmp_path_factory.mktemp("bpe")
    spec = weights_spec_for("openai/clip-bpe", REVISION, "bpe_simple_vocab_16e6.txt.gz", BPE)
    build_hf_cache(root / "hub", spec.repo_id, REVISION, {spec.filename: BPE})
    with offline_hub(root / "hub"):
        return rc.tokenizer(spec)


def test_token_ids_equal_open_clip(cached_tokenizer):
    ours = cached_tokenizer(TEXTS)
    ref = open_clip.get_tokenizer("ViT-B-32")(TEXTS).numpy()
    assert ours.dtype == np.int64 and ours.shape == (len(TEXTS), 77)
    for text, a, b in zip(TEXTS, ours, ref):
        assert a.tolist() == b.tolist(), text


def test_sequences_are_framed_truncated_and_padded(cached_tokenizer):
    ids = cached_tokenizer(["farmland", "word " * 200])
    short, long = ids
    n = 2 + len(cached_tokenizer.encode("farmland"))
    assert short[0] == cached_tokenizer.sot_id == 49406 and short[n - 1] == cached_tokenizer.eot_id == 49407
    assert (short[n:] == 0).all()
    assert long[0] == 49406 and long[-1] == 49407 and (long[1:-1] != 0).all()
    assert cached_tokenizer.vocab_size == 49408


def test_plain_text_merges_give_the_same_ids(tmp_path, cached_tokenizer):
    plain = tmp_path / "merges.txt"
    plain.write_bytes(gzip.decompress(BPE.read_bytes()))
    other = ClipTokenizer.from_file(plain)
    assert np.array_equal(other(TEXTS), cached_tokenizer(TEXTS))


def test_not_a_bpe_file_is_refused(tmp_path):
    bad = tmp_path / "merges.txt"
    bad.write_text("#version: 0.2\ni n\nt h\n")
    with pytest.raises(ValueError, match="not a CLIP BPE merges file"):
        read_merges(bad)


def test_offline_and_not_cached_names_the_file(tmp_path):
    spec = weights_spec_for("openai/clip-bpe", REVISION, "bpe_simple_vocab_16e6.txt.gz", BPE)
    with offline_hub(tmp_path / "empty-hub"), pytest.raises(WeightsError, match="bpe_simple_vocab_16e6.txt.gz"):
        rc.tokenizer(spec)


def test_default_tokenizer_uses_the_installed_open_clip_file():
    assert rc._open_clip_bpe() == BPE  # sha256-checked against the pinned hash
    assert rc.tokenizer()(TEXTS[:3]).tolist() == open_clip.get_tokenizer("ViT-B-32")(TEXTS[:3]).tolist()
