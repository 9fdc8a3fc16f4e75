"""Where the commands write: the checks before the pass, and ``memlens attack``'s own output directory."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Optional

from memlens.errors import DataError


def _text_chars(path: Path) -> int:
    """Bytes of a text file (or of the files of a directory): an upper bound on its characters."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0  # a missing file gets its own one-line error when it is read


def preflight_cli(out: Optional[Path], cache_dir: Optional[Path | str], inputs: Iterable[Optional[Path]], n_models: int) -> None:
    """--out and the cache directory can take this run's files (memlens.outputs.preflight), before any
    model loads. ``out``: None when the command writes no outputs; ``cache_dir``: None for --no-cache,
    "default" for the default cache directory."""
    from memlens.cache import default_cache_dir
    from memlens.outputs import preflight

    # inputs are paths, or (from --benchmark) lists of records already read: those count by their texts
    n_chars = sum(_text_chars(Path(p)) if isinstance(p, (str, os.PathLike)) else sum(len(str(r)) for r in p)
                  for p in inputs if p is not None)
    root = None if cache_dir is None else (default_cache_dir() if cache_dir == "default" else Path(cache_dir))
    preflight(out, root, n_chars, n_models)


def attack_out_dir(out: Optional[Path], attacks: str, force: bool) -> Path:
    """``memlens attack``'s output directory: by default ``out/attack-NAMES``, so it never replaces an
    audit's files in ``out/``; an --out holding another run's outputs (another command or other
    attacks) is refused without --force."""
    from memlens.outputs import read_manifest

    names = [n.strip() for n in attacks.split(",") if n.strip()]
    if out is None:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(names) or "none")[:80]
        out = Path("out") / f"attack-{slug}"
    if force or not out.is_dir():
        return out
    try:
        m = read_manifest(out)
    except DataError:
        m = None
    if m is not None and m.get("command") == "attack" and m.get("attacks") == attacks:
        return out  # the same attacks again: a rerun of this run
    if m is not None or (out / "results.json").is_file() or (out / "scores.csv").is_file():
        what = f"memlens {m.get('command', '?')} with --attacks {m.get('attacks', '?')}" if m else "another run"
        raise DataError(f"{out}{os.sep} holds the outputs of {what}; give another --out, or --force to replace them")
    return out
