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


def _hf_style_merges(path: Path, lines: list[str] | None = None) -> Path:
    """merges.txt as the Hub's CLIP repos hold it: a "#version" header, then one rule a line."""
    rules = lines or gzip.decompress(BPE.read_bytes()).decode("utf-8").split("\n")[1 : 48894 + 1]
    path.write_text("#version: 0.2\n" + "\n".join(rules) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cached_tokenizer(tmp_path_factory):
    """Our tokenizer from the real pinned spec (BPE_SPEC), served from an offline Hub cache that
    holds a plain-text merges.txt: the content pin accepts it although its bytes differ from the gzip."""
    root = tmp_path_factory.mktemp("bpe")
    merges = _hf_style_merges(root / "merges.txt")
    build_hf_cache(root / "hub", rc.BPE_SPEC.repo_id, rc.BPE_SPEC.revision, {rc.BPE_SPEC.filename: merges})
    with offline_hub(root / "hub"):
        return rc.tokenizer(rc.BPE_SPEC)


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


def test_tampered_merges_are_refused(tmp_path):
    rules = gzip.decompress(BPE.read_bytes()).decode("utf-8").split("\n")[1 : 48894 + 1]
    rules[10], rules[11] = rules[11], rules[10]  # same rules, other ranks: a different tokenizer
    merges = _hf_style_merges(tmp_path / "merges.txt", rules)
    build_hf_cache(tmp_path / "hub", rc.BPE_SPEC.repo_id, rc.BPE_SPEC.revision, {rc.BPE_SPEC.filename: merges})
    with offline_hub(tmp_path / "hub"), pytest.raises(WeightsError, match="content sha256 mismatch"):
        rc.tokenizer(rc.BPE_SPEC)


def test_env_override_is_content_checked(tmp_path, monkeypatch):
    monkeypatch.setenv(rc.BPE_ENV, str(_hf_style_merges(tmp_path / "merges.txt")))
    assert rc._local_bpe() == tmp_path / "merges.txt"
    bad = tmp_path / "bad.txt"
    _hf_style_merges(bad, ["a b"] * 48894)
    monkeypatch.setenv(rc.BPE_ENV, str(bad))
    with pytest.raises(WeightsError, match="does not hold CLIP's BPE merges"):
        rc._local_bpe()


def test_default_tokenizer_uses_the_installed_open_clip_file(monkeypatch):
    monkeypatch.delenv(rc.BPE_ENV, raising=False)
    assert rc._local_bpe() == BPE  # content-checked against the pinned hash
    assert rc.tokenizer()(TEXTS[:3]).tolist() == open_clip.get_tokenizer("ViT-B-32")(TEXTS[:3]).tolist()
