"""What is scored: the completion of prompt/completion records, the assistant turns of chat records,
or named character spans of any record (``-p minkpp.span=pii``).

Supervised fine-tunes train on the completion (or the assistant turns) only; scoring the prompt too
dilutes the membership signal with tokens the model never learned. The model pass still scores the
whole text once (the same cache entries whatever is scored, the prompt serving as context); here an
attack's input is cut down to the tokens whose character span overlaps the chosen spans, so changing
what is scored re-runs no model.

Record shapes (:mod:`memlens.data` reads them): ``text``; ``prompt`` + ``completion`` (the text is
their concatenation, as TRL's prompt-completion datasets train on); ``messages`` (a chat, rendered
with the target tokenizer's chat template in :func:`render_chats`). Their spans live in
``Sample.meta["score_spans"]`` as ``{name: [[start, end], ...]}``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from memlens.errors import DataError
from memlens.stats import AttackInput, ReferenceView, TokenComparison, TokenStats

SPANS_KEY = "score_spans"
CHAT_KEY = "messages"
SCORE_MODES = ("auto", "completion", "assistant", "all")
# the record shape -> what its fine-tune trained on
_IMPLIED = {"prompt_completion": "completion", "chat": "assistant", "text": "all"}
_SHAPE_NAMES = {"prompt_completion": "prompt/completion", "chat": "chat", "text": "plain text"}


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------
def record_text(rec: dict[str, Any], text_field: str, where: str) -> tuple[str, dict[str, Any], tuple[str, ...]] | None:
    """``(text, meta to add, record keys consumed)`` of a prompt/completion or chat record without a
    text field, or None for any other record. A chat's text is "" until :func:`render_chats`."""
    if text_field in rec:
        return None
    if CHAT_KEY in rec:
        msgs = rec[CHAT_KEY]
        if isinstance(msgs, str):  # CSV / Parquet columns hold it as JSON
            try:
                msgs = json.loads(msgs)
            except ValueError:
                raise DataError(f"{where}: 'messages' is not a list of {{role, content}} (nor JSON of one)") from None
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in msgs):
            raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}} with string values")
        return "", {CHAT_KEY: msgs}, (CHAT_KEY,)
    if "prompt" in rec and "completion" in rec:
        p, c = rec["prompt"], rec["completion"]
        if not isinstance(p, str) or not isinstance(c, str):
            raise DataError(f"{where}: 'prompt' and 'completion' must be strings (conversational prompt/completion: "
                            "give the whole chat as 'messages')")
        if not c.strip():
            raise DataError(f"{where}: empty completion")
        spans = {"prompt": [[0, len(p)]], "completion": [[len(p), len(p) + len(c)]]}
        return p + c, {SPANS_KEY: spans}, ("prompt", "completion")
    return None


def is_chat(meta: dict[str, Any]) -> bool:
    return CHAT_KEY in meta and SPANS_KEY not in meta


def shape(meta: dict[str, Any]) -> str:
    spans = meta.get(SPANS_KEY) or {}
    if CHAT_KEY in meta:
        return "chat"
    return "prompt_completion" if "completion" in spans else "text"


# --------------------------------------------------------------------------------------------
# Chats
# --------------------------------------------------------------------------------------------
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def render_chats(samples: Sequence[Any], tokenizer: Any) -> None:
    """Render every chat sample in place with the tokenizer's chat template and record the character
    spans of its assistant turns (``score_spans["assistant"]``; empty when it has none)."""
    for s in samples:
        if not is_chat(s.meta):
            continue
        where = f"text {s.id!r}"
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            raise DataError(f"{where} is a chat ('messages'), but the target's tokenizer has no chat template to render it with")
        msgs = s.meta[CHAT_KEY]
        try:
            text = tokenizer.apply_chat_template(msgs, tokenize=False)
        except Exception as e:  # noqa: BLE001 - a template raises what its author wrote (e.g. role order): one line
            raise DataError(f"{where}: the chat template cannot render it ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        spans = None
        if isinstance(template, str) and _GENERATION_TAG.search(template):
            spans = _spans_from_assistant_mask(msgs, tokenizer, text)
        if spans is None:
            spans = _spans_by_prefix(msgs, tokenizer, text)
        s.text = text
        s.meta[SPANS_KEY] = {"assistant": spans}


def _spans_from_assistant_mask(msgs: list[dict], tokenizer: Any, text: str) -> list[list[int]] | None:
    """Assistant spans from ``return_assistant_tokens_mask`` (templates with ``{% generation %}``), as
    character spans through the tokens' offsets; None when the tokens do not match the text's."""
    try:
        out = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except Exception:  # noqa: BLE001 - a slow tokenizer has no offsets: the prefix method needs none
        return None
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    if list(enc["input_ids"]) != ids or len(mask) != len(ids):
        return None
    spans: list[list[int]] = []
    for (a, b), m in zip(enc["offset_mapping"], mask):
        if not m:
            continue
        if spans and a <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], int(b))
        else:
            spans.append([int(a), int(b)])
    return spans


def _spans_by_prefix(msgs: list[dict], tokenizer: Any, text: str) -> list[list[int]]:
    """Assistant turn i spans from the end of the conversation before it, with the generation prompt,
    to the end of the conversation through it (so the end-of-turn marker the model learns to emit
    is scored too). A template that rewrites earlier turns (so a rendered prefix is not a prefix of
    the whole) falls back to the turn's content, found in order in the text."""
    spans: list[list[int]] = []
    pos = 0
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        try:
            before = tokenizer.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True) if i else ""
            through = tokenizer.apply_chat_template(msgs[:i + 1], tokenize=False)
        except Exception:  # noqa: BLE001 - e.g. a template that refuses a conversation ending on a user turn
            before = through = None
        if through is not None and text.startswith(through) and through.startswith(before) and len(through) > len(before) >= pos:
            a, b = len(before), len(through)
        else:
            a = text.find(m["content"], pos)
            if a < 0:
                raise DataError(f"cannot locate assistant turn {i} in the rendered chat; the chat template changes its content")
            b = a + len(m["content"])
        spans.append([a, b])
        pos = b
    return spans


# --------------------------------------------------------------------------------------------
# What is scored
# --------------------------------------------------------------------------------------------
@dataclass
class Scope:
    """The audit's choice: a span name per text (None = every token) and how it was decided."""

    mode: str  # completion, assistant or all
    implied: bool  # True: from the record shape (--score auto)
    shapes: dict[str, int]

    def describe(self) -> str:
        what = {"all": "every token", "completion": "completion tokens only (the prompt is context)",
                "assistant": "assistant-turn tokens only (the rest of the chat is context)"}[self.mode]
        how = "implied by the records (" + ", ".join(f"{n} {_SHAPE_NAMES[k]}" for k, n in self.shapes.items() if n) + \
            "); --score changes it" if self.implied else "--score " + self.mode
        return f"scored: {what}; {how}"

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "implied_by_records": self.implied, "record_shapes": self.shapes}


def resolve_scope(samples: Sequence[Any], score: str = "auto") -> Scope:
    """The span every attack aggregates over by default, checked against the records."""
    if score not in SCORE_MODES:
        raise DataError(f"--score must be one of {', '.join(SCORE_MODES)}, got {score!r}")
    shapes = {k: 0 for k in _IMPLIED}
    for s in samples:
        shapes[shape(s.meta)] += 1
    if score == "auto":
        present = [k for k, n in shapes.items() if n]
        if len(present) > 1:
            # members in one shape and non-members in another would be told apart by their format alone
            raise DataError("the texts mix record shapes (" + ", ".join(f"{shapes[k]} {_SHAPE_NAMES[k]}" for k in present) +
                            "): give one shape, or choose with --score all|completion|assistant")
        return Scope(_IMPLIED[present[0]] if present else "all", True, shapes)
    if score != "all":
        for s in samples:
            spans = (s.meta.get(SPANS_KEY) or {}).get(score)
            if spans is None:
                have = "a chat" if shape(s.meta) == "chat" else "a plain text" if shape(s.meta) == "text" else "prompt/completion"
                raise DataError(f"text {s.id!r} has no {score} to score (it is {have}); use --score all or give "
                                f"{'prompt/completion' if score == 'completion' else 'messages'} records")
    return Scope(score, False, shapes)


def check_assistant_turns(samples: Sequence[Any], scope: Scope) -> None:
    if scope.mode != "assistant":
        return
    for s in samples:
        if not (s.meta.get(SPANS_KEY) or {}).get("assistant"):
            raise DataError(f"chat {s.id!r} has no assistant turn, so there is nothing to score; "
                            "drop it, or use --score all to score the whole conversation")


def sample_spans(meta: dict[str, Any], name: str) -> list[tuple[int, int]] | None:
    """Character spans named ``name`` of one record: its completion/assistant/prompt spans, or a
    field holding a list of ``{start, end}`` (e.g. the testbed's ``pii``) or of ``[start, end]``
    pairs (also as JSON); None when the record has no such spans."""
    own = (meta.get(SPANS_KEY) or {}).get(name)
    value = own if own is not None else meta.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise DataError(f"field {name!r} is not a list of spans ({{start, end}} or [start, end])") from None
    out = []
    for sp in value if isinstance(value, (list, tuple, np.ndarray)) else [None]:
        if isinstance(sp, dict) and "start" in sp and "end" in sp:
            a, b = sp["start"], sp["end"]
        elif isinstance(sp, (list, tuple, np.ndarray)) and len(sp) == 2:
            a, b = sp
        else:
            raise DataError(f"field {name!r} is not a list of spans ({{start, end}} or [start, end])")
        out.append((int(a), int(b)))
    return out


def token_mask(stats: TokenStats, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Tokens whose character span overlaps any of ``spans`` (a zero-width token: lies inside one).
    A token across a span's edge is kept: it predicts characters of the span."""
    s, e = stats.span_start, stats.span_end
    m = np.zeros(len(stats), dtype=bool)
    for a, b in spans:
        m |= ((s < b) & (e > a)) | ((s == e) & (s >= a) & (s < b))
    return m


# --------------------------------------------------------------------------------------------
# Restricted attack inputs
# --------------------------------------------------------------------------------------------
def _cut(st: TokenStats, m: np.ndarray) -> TokenStats:
    return TokenStats(**{k: getattr(st, k)[m] for k in TokenStats.__dataclass_fields__})


def _span_text(text: str, spans: Sequence[tuple[int, int]]) -> str:
    return "".join(text[a:b] for a, b in sorted(spans))


@dataclass
class Restricted:
    """An AttackInput cut down to the tokens of one span name, with the target masks to put token
    scores back in place."""

    inp: AttackInput
    masks: list[np.ndarray]
    missing: int  # audited texts without such spans (they get no score)


def restrict(inp: AttackInput, spans: list[list[tuple[int, int]] | None],
             population_spans: list[list[tuple[int, int]] | None] | None = None) -> Restricted:
    """``inp`` with every per-token array cut to the tokens overlapping each text's spans (None: the
    text has none, so no token). Reference statistics in their own tokenization are cut by their own
    spans; the paired pass's per-token records (first axis = the target's tokens) by the target's mask.
    Population texts are cut by ``population_spans`` (None for all: used whole)."""
    def side(texts, target, refs, comp, sp):
        masks = [token_mask(st, s) if s is not None else np.zeros(len(st), dtype=bool) for st, s in zip(target, sp)]
        new_t = [_cut(st, m) for st, m in zip(target, masks)]
        new_r = [ReferenceView(r.name, [_cut(st, token_mask(st, s) if s is not None else np.zeros(len(st), dtype=bool))
                                        for st, s in zip(r.stats, sp)]) for r in refs]
        new_c = None
        if comp is not None:
            new_c = TokenComparison([lr[m] for lr, m in zip(comp.log_ratio, masks)],
                                    None if comp.kl is None else [k[m] for k, m in zip(comp.kl, masks)], comp.note)
        new_x = [_span_text(t, s) if s is not None else "" for t, s in zip(texts, sp)]
        return new_x, new_t, new_r, new_c, masks

    x, t, r, c, masks = side(inp.texts, inp.target, inp.references, inp.comparison, spans)
    extras = dict(inp.extras)
    if extras.get("pair") is not None:
        extras["pair"] = [{k: (v[m] if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == len(m) else v) for k, v in rec.items()}
                          for rec, m in zip(extras["pair"], masks)]
    px, pt, pr, pc = inp.population_texts, inp.population_target, inp.population_references, inp.population_comparison
    if population_spans is not None and inp.population_target:
        px, pt, pr, pc, _ = side(px, pt, pr, pc, population_spans)
    out = AttackInput(texts=x, target=t, references=r, comparison=c, population_texts=px, population_target=pt,
                      population_references=pr, population_comparison=pc, extras=extras,
                      reference_membership=inp.reference_membership,
                      population_reference_membership=inp.population_reference_membership)
    return Restricted(out, masks, sum(s is None for s in spans))


def scatter(token_scores: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Token scores of a restricted input back at their tokens of the whole text (NaN: not scored)."""
    out = []
    for ts, m in zip(token_scores, masks):
        full = np.full(len(m), np.nan)
        ts = np.asarray(ts, dtype=np.float64)
        if ts.shape == (int(m.sum()),):
            full[m] = ts
        out.append(full)
    return out
