"""Sanity checks that a trained testbed really memorized what it claims.

These are ground-truth measurements, not attacks: the mean per-token NLL of each split under
the base and target models, and greedy extraction of PII from a prefix. They let the tests (and a
user) verify that the 16x tier is memorized, 4x less, 1x weakly, and non-members not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from .build import TestbedPaths, read_jsonl
from .profiles import UNIQUE_PII_TYPES


def load_model(path: str | Path, device: str = "cpu"):
    """Load a testbed model and its tokenizer from a local directory (never the hub)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device).eval()
    return model, tok


@torch.no_grad()
def mean_token_nll(
    model, tokenizer, texts: Sequence[str], device: str = "cpu", batch_size: int = 16
) -> list[float]:
    """Mean negative log-likelihood (nats per token) of each text's tokens given BOS."""
    out: list[float] = []
    for b in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[b : b + batch_size]), return_tensors="pt", padding=True)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        tgt, tmask = ids[:, 1:], mask[:, 1:].float()
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), tgt, reduction="none"
        )  # [batch, length-1]
        out += ((nll * tmask).sum(1) / tmask.sum(1)).tolist()
    return out


def _groups(paths: TestbedPaths) -> dict[str, list[dict]]:
    members = read_jsonl(paths.members)
    groups: dict[str, list[dict]] = {}
    for tier in sorted({r["tier"] for r in members}):
        groups[f"member_{tier}x"] = [r for r in members if r["tier"] == tier]
    groups["nonmember"] = read_jsonl(paths.nonmembers)
    groups["population"] = read_jsonl(paths.population)
    return groups


def nll_by_split(
    paths: TestbedPaths | str | Path,
    models: Iterable[str] = ("base", "target"),
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """``{model: {group: mean per-token NLL}}`` with groups ``member_{k}x``, ``nonmember``,
    ``population``. Memorization shows as a target NLL far below the non-members' and as a
    target-minus-base drop far larger for members than for non-members."""
    paths = paths if isinstance(paths, TestbedPaths) else TestbedPaths(Path(paths))
    groups = _groups(paths)
    result: dict[str, dict[str, float]] = {}
    for name in models:
        model, tok = load_model(paths.models / name, device)
        result[name] = {
            g: sum(v) / len(v)
            for g, recs in groups.items()
            if (v := mean_token_nll(model, tok, [r["text"] for r in recs], device))
        }
    return result


def _extraction_prompts(
    tokenizer, records: Sequence[dict], pii_types: Sequence[str]
) -> list[tuple[str, list[int], str, int]]:
    """``(type, prompt ids, expected continuation, value length in tokens)`` per PII span.

    The prompt ends at the token boundary before the value (byte-level BPE glues the leading
    space to the value's first token, so cutting the text at the value's first character would
    give the model a prompt it never saw in training); the expected continuation runs from that
    boundary through the end of the value. Only the first occurrence of a value in a document
    counts: a repeat could simply be copied from the prompt.
    """
    out = []
    for rec in records:
        text = rec["text"]
        enc = tokenizer(text, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        for span in rec["pii"]:
            if span["type"] not in pii_types or span["value"] in text[: span["start"]]:
                continue
            # First real token that reaches into the value (skip BOS, whose offsets are (0, 0)).
            j = next(i for i, (s, e) in enumerate(offsets) if i > 0 and e > span["start"])
            n_val = sum(1 for s, e in offsets[j:] if s < span["end"])
            out.append((span["type"], ids[:j], text[offsets[j][0] : span["end"]], n_val))
    return out


@torch.no_grad()
def greedy_extraction(
    model,
    tokenizer,
    records: Sequence[dict],
    pii_types: Sequence[str] = UNIQUE_PII_TYPES,
    device: str = "cpu",
    batch_size: int = 32,
) -> dict:
    """Prompt with each document's text up to a PII value and decode greedily.

    A hit is a continuation that reproduces the text exactly through the end of the value
    (see :func:`_extraction_prompts` for where prompts end). Prompts are left-padded and decoded
    in batches; prompts of similar length share a batch.

    Returns ``{"n": spans tried, "hits": exact reproductions, "rate": hits / n,
    "by_type": {type: [hits, n]}}``.
    """
    prompts = sorted(_extraction_prompts(tokenizer, records, pii_types), key=lambda p: len(p[1]))
    pad = tokenizer.pad_token_id
    hits, by_type = 0, {}
    for b in range(0, len(prompts), batch_size):
        chunk = prompts[b : b + batch_size]
        width = max(len(p[1]) for p in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (_, prompt, _, _) in enumerate(chunk):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        out = model.generate(
            ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max(p[3] for p in chunk) + 2,
            do_sample=False,
            pad_token_id=pad,
        )
        for row, (kind, _, want, _) in enumerate(chunk):
            ok = tokenizer.decode(out[row, width:], skip_special_tokens=False).startswith(want)
            hits += ok
            h, c = by_type.get(kind, (0, 0))
            by_type[kind] = (h + ok, c + 1)
    n = len(prompts)
    return {
        "n": n,
        "hits": hits,
        "rate": hits / n if n else 0.0,
        "by_type": {t: list(v) for t, v in sorted(by_type.items())},
    }


def memorization_report(
    paths: TestbedPaths | str | Path, device: str = "cpu", extraction_tier: int | None = None
) -> dict:
    """NLL per split under base and target, plus greedy PII extraction on the most repeated
    tier (target and base) and on non-members (target), as controls."""
    paths = paths if isinstance(paths, TestbedPaths) else TestbedPaths(Path(paths))
    report: dict = {"nll": nll_by_split(paths, device=device)}
    members = read_jsonl(paths.members)
    tier = extraction_tier or max(r["tier"] for r in members)
    top = [r for r in members if r["tier"] == tier]
    nonmembers = read_jsonl(paths.nonmembers)
    report["extraction"] = {}
    for name in ("target", "base"):
        model, tok = load_model(paths.models / name, device)
        report["extraction"][f"{name}/member_{tier}x"] = greedy_extraction(
            model, tok, top, device=device
        )
        if name == "target":
            report["extraction"]["target/nonmember"] = greedy_extraction(
                model, tok, nonmembers, device=device
            )
    return report
