"""Progress bars: tqdm, redrawn at most every 10 s when stderr is not a terminal.

tqdm's default (ten redraws a second) fills a log file or a CI log with hundreds of kilobytes of bars
when the output is redirected; in a terminal the bar redraws in place and the default stays.
"""
from __future__ import annotations

import sys
from typing import Any

LOG_MININTERVAL_S = 10.0


def progress_bar(iterable: Any = None, **kwargs: Any):
    from tqdm.auto import tqdm

    stream = kwargs.get("file") or sys.stderr
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        interactive = False
    if not interactive:
        kwargs.setdefault("mininterval", LOG_MININTERVAL_S)
    return tqdm(iterable, **kwargs)
