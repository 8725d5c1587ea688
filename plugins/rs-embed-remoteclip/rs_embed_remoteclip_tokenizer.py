"""The CLIP byte-level BPE tokenizer, written here so text embedding needs no open_clip at run time.

What it must reproduce (facts of OpenAI's CLIP tokenizer, which open_clip and RemoteCLIP use):
text is cleaned (ftfy, HTML entities unescaped twice, whitespace collapsed, lower-cased), split by
a regex into words / single digits / punctuation runs, each word's UTF-8 bytes are mapped to
printable characters and merged pair by pair in merge-rank order, the last symbol carrying a
'</w>' end-of-word mark. Ids: 256 byte symbols, their 256 '</w>' forms, one per merge (48 894),
then <start_of_text> (49406) and <end_of_text> (49407); sequences are [sot] + ids + [eot],
truncated to the context length with eot kept last, and zero-padded.

The merges come from a pinned asset (the OpenAI BPE file, gzip or plain text), never bundled here.
"""

from __future__ import annotations

import gzip
import hashlib
import html
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

N_MERGES = 49152 - 256 - 2  # the BPE file has more lines; CLIP uses the first 48 894 merges
SOT, EOT = "<start_of_text>", "<end_of_text>"
CONTEXT_LENGTH = 77


@lru_cache(maxsize=1)
def byte_symbols() -> tuple[str, ...]:
    """Printable stand-in for each byte value 0..255.

    Bytes that are visible Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves;
    the others (controls, space, soft hyphen...) take code points 256, 257, ... in byte order.
    """
    visible = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out: list[str] = []
    extra = 0
    for b in range(256):
        if b in visible:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return tuple(out)


def read_merges(path: str | Path) -> list[tuple[str, str]]:
    """The first N_MERGES merge rules of a CLIP BPE file (gzip or plain; its first line is a header)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    lines = raw.decode("utf-8").split("\n")[1 : N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{path} is not a CLIP BPE merges file ({len(merges)} usable merge lines)")
    return merges  # type: ignore[return-value]


def merges_digest(path: str | Path) -> str:
    """sha256 of the merge rules a file holds ("a b" lines joined by newlines), whatever its
    container: the gzip copy open_clip ships and the Hub's plain merges.txt pin to the same value."""
    text = "\n".join(f"{a} {b}" for a, b in read_merges(path))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def clean(text: str) -> str:
    """ftfy repair, HTML unescape (twice, as CLIP does), collapse whitespace, lower-case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """Text -> CLIP token ids, shape (N, context_length) int64, matching open_clip's tokenizer."""

    def __init__(self, merges: Sequence[tuple[str, str]], context_length: int = CONTEXT_LENGTH) -> None:
        import regex

        # ids 0..255 list the byte symbols by code point: visible Latin-1 first, stand-ins after
        symbols = sorted(byte_symbols())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
        self.context_length = int(context_length)
        self._byte_sym = byte_symbols()
        self._cache: dict[str, list[str]] = {}
        # special tokens, English contractions, letter runs, single digits, other non-space runs
        self._split = regex.compile(
            r"<start_of_text>|<end_of_text>|'(?:s|t|re|ve|m|ll|d)|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE,
        )

    @classmethod
    def from_file(cls, path: str | Path, context_length: int = CONTEXT_LENGTH) -> ClipTokenizer:
        return cls(read_merges(path), context_length)

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def _bpe(self, word: str) -> list[str]:
        """Merge the symbols of one pre-split word, lowest-ranked adjacent pair first."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            ranked = [(self.ranks.get(pair, N_MERGES), i) for i, pair in enumerate(zip(parts, parts[1:]))]
            best, at = min(ranked)
            if best == N_MERGES:
                break
            first, second = parts[at], parts[at + 1]
            merged: list[str] = []
            i = 0
            while i < len(parts):  # merge every occurrence, left to right, without overlaps
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without start/end tokens."""
        ids: list[int] = []
        for word in self._split.findall(clean(text)):
            if word in (SOT, EOT):
                ids.append(self.encoder[word])
                continue
            symbols = "".join(self._byte_sym[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self._bpe(symbols))
        return ids

    def __call__(self, texts: str | Iterable[str], context_length: int | None = None) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        n = int(context_length or self.context_length)
        rows = []
        for text in texts:
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > n:
                ids = ids[:n]
                ids[-1] = self.eot_id
            rows.append(ids + [0] * (n - len(ids)))
        return np.asarray(rows, dtype=np.int64).reshape(len(rows), n)
