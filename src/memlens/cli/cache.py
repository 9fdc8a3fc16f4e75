"""``memlens cache info|clear``: what the statistics cache holds, and removing it.

The cache keeps, for every text audited, its token ids and per-token statistics (the text can be
rebuilt from them with the tokenizer); nothing expires on its own."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from memlens.cli._common import console, friendly_errors

cache_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="See and clear the statistics cache (it keeps every audited text's token ids).")

CacheDirOpt = typer.Option(None, "--cache-dir", help="the cache directory (default ~/.cache/memlens or $MEMLENS_CACHE)")


def _say(text: str) -> None:
    """One line as it is: no wrapping, and no rich markup read from paths."""
    console.print(text, soft_wrap=True, highlight=False, markup=False)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


@cache_app.command("info")
@friendly_errors
def info(cache_dir: Optional[Path] = CacheDirOpt):
    """Size, namespaces (model and settings keys), shards, and the oldest and newest write."""
    from memlens.cache import cache_info

    i = cache_info(cache_dir)
    if not i.exists:
        _say(f"{i.root}: no cache (nothing stored)")
        return
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(i.kinds.items())) or "-"
    _say(f"{i.root}: {_size(i.size_bytes)} in {i.shards} shards of {i.namespaces} namespaces ({kinds})")
    _say(f"oldest write {_when(i.oldest)}, newest {_when(i.newest)}"
                  + (f"; {i.corrupt} set aside as corrupt" if i.corrupt else "")
                  + (f"; {i.unfinished} unfinished writes" if i.unfinished else ""))
    _say("it holds the token ids of every text audited; `memlens cache clear [--older-than 30d]` removes them")


@cache_app.command("clear")
@friendly_errors
def clear(
    cache_dir: Optional[Path] = CacheDirOpt,
    older_than: Optional[str] = typer.Option(None, "--older-than", help="only shards last written longer ago than this: 30d, 12h, 2w"),
):
    """Remove cached statistics (all, or those older than --older-than). Safe while audits run."""
    from memlens.cache import clear_cache, default_cache_dir, parse_duration
    from memlens.errors import DataError

    try:
        age = None if older_than is None else parse_duration(older_than)
    except ValueError as e:
        raise DataError(str(e)) from None
    r = clear_cache(cache_dir, older_than=age)
    root = cache_dir or default_cache_dir()
    _say(f"{root}: removed {r.files} files ({_size(r.bytes)}), {r.namespaces} namespaces emptied")
