"""The token-level privacy report: one self-contained HTML file, and a terminal view.

``write_report(result, out_dir)`` after an audit writes ``out_dir/report.html``;
``write_report_from_dir(results_dir)`` rebuilds it from the saved files (``memlens report DIR``);
``show_text(results_dir, text_id, threshold)`` prints one text with its tokens coloured by
leakage (``memlens show ID``).

All audited text is untrusted: the page embeds the data as JSON with ``<``, ``>`` and ``&``
escaped, its script inserts text with ``textContent`` only, never as HTML, and a
Content-Security-Policy allows no network and no script but its own. The terminal view never
lets text reach rich's markup parser and shows control characters as escapes.
"""
from __future__ import annotations

from memlens.report.html import (
    SavedAudit,
    build_payload,
    load_saved,
    safe_json,
    write_report,
    write_report_from_dir,
)
from memlens.report.terminal import safe_terminal_text, show_text


def _register() -> None:
    from memlens.audit import register_report_writer

    register_report_writer(write_report)  # AuditResult.save() writes the page as `memlens audit` does


_register()

__all__ = [
    "SavedAudit",
    "build_payload",
    "load_saved",
    "safe_json",
    "safe_terminal_text",
    "show_text",
    "write_report",
    "write_report_from_dir",
]
