"""The token-level privacy report: one self-contained HTML file, and a terminal view.

``write_report(result, out_dir)`` after an audit; ``write_report_from_dir(out_dir)`` rebuilds it
from the saved files (``memlens report DIR``); ``show_text(out_dir, text_id)`` prints one text
with its tokens coloured by leakage (``memlens show ID``).

All audited text is untrusted: the page embeds the data as JSON with ``<``, ``>`` and ``&``
escaped, and its script inserts text with ``textContent`` only, never as HTML.
"""
from __future__ import annotations

from memlens.report.html import build_payload, load_saved, write_report, write_report_from_dir  # noqa: F401
from memlens.report.terminal import show_text  # noqa: F401
