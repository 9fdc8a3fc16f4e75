"""Public-like English text for "pretraining": real prose that holds none of the audited PII.

The base model should know English and the *shape* of the testbed documents before it sees any
member, so that the target-minus-base difference isolates memorization. Two ingredients:

* Real English prose. The Python standard library ships the language reference's prose
  (``pydoc_data.topics``, PSF licensed, present in every CPython install, so no download and no
  extra dependency); its paragraphs are filtered to plain sentences (no grammar rules, code or
  headings). Users can add plain-text files of their own (``extra_files``).
* Documents of the same six kinds about *background* profiles, which are never audited (this is
  done by :mod:`memlens.testbed.build`).
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def _clean_paragraphs(raw: str) -> list[str]:
    """Plain-prose paragraphs of ``raw``: no indented code, grammar rules or headings."""
    out = []
    for para in re.split(r"\n\s*\n", raw):
        if not para.strip() or para.startswith((" ", "\t")):
            continue  # indented blocks are code samples or grammar productions
        if "::=" in para or ">>>" in para:
            continue
        text = " ".join(para.split())
        if len(text.split()) < 12 or set(text) <= set("*=-~ "):
            continue
        # Mostly letters and spaces: drops tables and symbol-heavy reference lines.
        if sum(c.isalpha() or c == " " for c in text) / len(text) < 0.9:
            continue
        out.append(text)
    return out


def stdlib_prose() -> list[str]:
    """Prose paragraphs from CPython's bundled language reference (``pydoc_data``)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # pragma: no cover - stripped-down Python builds
        warnings.warn("pydoc_data is missing; the base corpus will have no real English prose")
        return []
    return [p for key in sorted(topics) for p in _clean_paragraphs(topics[key])]


def _split_long(paragraph: str, max_words: int) -> list[str]:
    """Split a paragraph at sentence ends into pieces of at most ~``max_words`` words."""
    pieces, cur = [], []
    for sent in _SENTENCE_END.split(paragraph):
        if cur and len(" ".join(cur + [sent]).split()) > max_words:
            pieces.append(" ".join(cur))
            cur = []
        cur.append(sent)
    if cur:
        pieces.append(" ".join(cur))
    return pieces


def public_text_chunks(
    max_chars: int,
    seed: int = 0,
    extra_files: Sequence[str | Path] = (),
    min_words: int = 30,
    max_words: int = 90,
) -> list[str]:
    """Up to ``max_chars`` characters of real prose cut into document-sized chunks.

    Short paragraphs are merged and long ones split at sentence boundaries so that chunks are
    about as long as testbed documents (which keeps batches cheap to pad). The selection is a
    seeded shuffle, so the same seed gives the same chunks.
    """
    paragraphs: list[str] = stdlib_prose()
    for f in extra_files:
        paragraphs.extend(_clean_paragraphs(Path(f).read_text(encoding="utf-8")))
    pieces = [s for p in paragraphs for s in _split_long(p, max_words)]
    random.Random(seed).shuffle(pieces)

    chunks: list[str] = []
    cur: list[str] = []
    total = 0
    for piece in pieces:
        cur.append(piece)
        if len(" ".join(cur).split()) >= min_words:
            chunk = " ".join(cur)
            cur = []
            if total + len(chunk) > max_chars:
                break
            chunks.append(chunk)
            total += len(chunk)
    return chunks
