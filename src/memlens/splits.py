"""Reference models with known splits: which reference was trained on which text.

A splits file (JSON, written by ``memlens testbed references``) says, for each reference model,
which texts it was trained on::

    {
      "format": "memlens-reference-splits/1",
      "key": "sha256",                       # entries are sha256(text, utf-8) hex digests; or "id": the texts' ids
      "references": ["models/split_ref0", "models/split_ref1"],   # names or paths (relative to the file's folder)
      "members": {"models/split_ref0": ["<key>", ...], "models/split_ref1": [...]},
      "pool": ["<key>", ...],                # optional: every text the splits were drawn from
      ...                                    # anything else (seed, tiers, recipe) is kept but not read
    }

The audit matches each ``--reference`` to an entry (same string, same resolved path, or same last path
component when that is unique), and fills ``AttackInput.reference_membership[r, i]`` = reference r
trained on text i, in the order of the references (the population's matrix the same way). When the
file has a ``pool``, an audited or population text outside it is an error: its membership is unknown.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from memlens.cache import text_hash
from memlens.errors import MemlensError

SPLITS_FORMAT = "memlens-reference-splits/1"
KEYS = ("sha256", "id")


class SplitsError(MemlensError):
    """A reference-splits file that is malformed or does not match the references or texts given."""


@dataclass
class ReferenceSplits:
    key: str
    members: dict[str, set[str]]  # reference entry -> keys of the texts it trained on
    pool: set[str] | None = None
    path: Path | None = None
    sha256: str = ""
    meta: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReferenceSplits":
        p = Path(path)
        if not p.is_file():
            raise SplitsError(f"reference splits file {p} does not exist")
        raw = p.read_bytes()
        try:
            d = json.loads(raw)
        except json.JSONDecodeError as e:
            raise SplitsError(f"reference splits file {p} is not JSON: {e}") from None
        splits = cls.from_dict(d, where=str(p))
        splits.path, splits.sha256 = p, hashlib.sha256(raw).hexdigest()
        return splits

    @classmethod
    def from_dict(cls, d: dict, where: str = "reference splits") -> "ReferenceSplits":
        if not isinstance(d, dict) or not isinstance(d.get("members"), dict):
            raise SplitsError(f"{where}: expected a JSON object with a 'members' object (reference -> list of text keys)")
        key = d.get("key", "sha256")
        if key not in KEYS:
            raise SplitsError(f"{where}: key must be one of {', '.join(KEYS)}, got {key!r}")
        members = {}
        for name, keys in d["members"].items():
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise SplitsError(f"{where}: members[{name!r}] must be a list of strings")
            members[str(name)] = set(keys)
        pool = d.get("pool")
        if pool is not None and not (isinstance(pool, list) and all(isinstance(k, str) for k in pool)):
            raise SplitsError(f"{where}: pool must be a list of strings")
        meta = {k: v for k, v in d.items() if k not in ("members", "pool")}
        digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
        return cls(key, members, set(pool) if pool is not None else None, None, digest, meta)

    def describe(self) -> dict:
        return {"file": str(self.path) if self.path else None, "sha256": self.sha256, "key": self.key,
                "references": sorted(self.members)}

    def entry_for(self, reference: str) -> str:
        """The file's entry naming ``reference`` (a name or path as given to the audit)."""
        if reference in self.members:
            return reference
        base = self.path.parent if self.path else Path.cwd()
        try:
            want = Path(reference).resolve()
        except (OSError, ValueError):
            want = None
        same = [e for e in self.members if want is not None and (base / e).resolve() == want]
        if len(same) == 1:
            return same[0]
        tail = Path(str(reference).rstrip("/")).name
        by_name = [e for e in self.members if Path(e.rstrip("/")).name == tail]
        if len(by_name) == 1:
            return by_name[0]
        known = ", ".join(sorted(self.members))
        raise SplitsError(f"reference {reference!r} is not in the splits file (it lists {known})")

    def membership(self, references: Sequence[str], texts: Sequence[str], ids: Sequence[str] | None, what: str) -> np.ndarray:
        """bool [R, n]: reference r trained on text i."""
        if self.key == "id":
            if ids is None or any(i is None for i in ids):
                raise SplitsError(f"the splits file keys texts by id, but the {what} have no ids")
            keys = [str(i) for i in ids]
        else:
            keys = [text_hash(t) for t in texts]
        if self.pool is not None:
            missing = [n for n, k in enumerate(keys) if k not in self.pool]
            if missing:
                raise SplitsError(f"{len(missing)} of the {len(keys)} {what} are not in the splits file's pool (first: #{missing[0]}): "
                                  "which references trained on them is unknown")
        entries = [self.entry_for(r) for r in references]
        dup = {e for e in entries if entries.count(e) > 1}
        if dup:
            raise SplitsError(f"two references match the same splits entry {sorted(dup)[0]!r}")
        return np.array([[k in self.members[e] for k in keys] for e in entries], dtype=bool).reshape(len(entries), len(keys))


def as_splits(splits) -> ReferenceSplits | None:
    """A ReferenceSplits from a path, a dict in the file's format, or one already loaded (None stays None)."""
    if splits is None or isinstance(splits, ReferenceSplits):
        return splits
    if isinstance(splits, dict):
        return ReferenceSplits.from_dict(splits)
    return ReferenceSplits.load(splits)


def out_groups(membership: np.ndarray) -> dict[tuple[int, ...], list[int]]:
    """Texts grouped by the references that are OUT for them (the indices of those references).

    A text with no OUT reference gets all references (the online mean: the attacks say so in a note)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    n_refs = membership.shape[0]
    for i in range(membership.shape[1]):
        out = tuple(int(r) for r in np.flatnonzero(~membership[:, i])) or tuple(range(n_refs))
        groups.setdefault(out, []).append(i)
    return groups


def write_splits(path: str | os.PathLike, references: Sequence[str], members: dict[str, Sequence[str]], pool: Sequence[str],
                 key: str = "sha256", **meta) -> Path:
    """Write a splits file (members and pool are keys: sha256 hex digests of the texts, or ids)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    d = {"format": SPLITS_FORMAT, "key": key, "references": list(references), **meta,
         "members": {r: sorted(members[r]) for r in references}, "pool": sorted(set(pool))}
    p.write_text(json.dumps(d, indent=1) + "\n")
    return p
