"""A deliberately shifted member / non-member pair built from the testbed's generators: the input on
which :mod:`memlens.blind`'s model-free check must trip (members and non-members from different
document kinds, as when non-members are scraped from another source than the training data)."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

from memlens.errors import BlindError
from memlens.testbed.documents import make_document
from memlens.testbed.profiles import ProfileGenerator

SHIFTS = ("kind",)
_KINDS_A = ("wiki_bio", "forum_post", "review")
_KINDS_B = ("listing", "email", "chat")


def shifted_pair(n: int = 48, shift: str = "kind", *, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Members and non-members that differ in distribution, from the testbed's generators.

    ``shift="kind"``: members are wiki biographies, forum posts and reviews; non-members are
    listings, e-mails and chat logs about other people (as when non-members are scraped from
    another source than the training data). Each side has ``n`` records shaped like the
    testbed's (id, text, label, kind, pii). (A date shift is not offered: only about a third of
    the testbed's documents mention a year, so moving years shifts too few texts to trip reliably.)
    """
    if shift not in SHIFTS:
        raise BlindError(f"unknown shift {shift!r}; choose from {', '.join(SHIFTS)}")
    if n < 2:
        raise BlindError(f"a shifted pair needs at least 2 texts per side (got {n})")
    rng = random.Random(f"{seed}/shifted/{shift}")
    profiles = ProfileGenerator(seed, id_prefix="shift").generate_many(2 * n)

    def side(ps, kinds, label, prefix):
        out = []
        for i, p in enumerate(ps):
            d = make_document(p, kinds[i % len(kinds)], rng)
            out.append({"id": f"{prefix}-{i:04d}", "text": d.text, "label": label, "kind": d.kind, "pii": d.pii})
        return out

    return side(profiles[:n], _KINDS_A, 1, "mem"), side(profiles[n:], _KINDS_B, 0, "non")


def write_shifted_pair(out_dir: str | os.PathLike, n: int = 48, shift: str = "kind", **kwargs) -> tuple[Path, Path]:
    """:func:`shifted_pair` written as ``members.jsonl`` and ``nonmembers.jsonl`` under ``out_dir``
    (audit them with ``--members``/``--nonmembers`` to see the warning)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "members.jsonl", out / "nonmembers.jsonl"
    for path, records in zip(paths, shifted_pair(n, shift, **kwargs)):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return paths
