"""A synthetic :class:`~memlens.audit.AuditResult` for the report's tests and size benchmark.

No model runs: texts are random words with a fake phone number and e-mail address (ground-truth
PII spans in ``meta["pii"]``), tokens are the words and the spaces before them, and the
token-level scores are drawn so that members' PII tokens score high. Private: not an API.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WORDS = ("the", "of", "and", "a", "to", "in", "is", "was", "he", "for", "it", "with", "as", "his", "on", "be", "at", "by",
         "this", "had", "not", "are", "but", "from", "or", "have", "an", "they", "river", "stone", "lamp", "orchard",
         "violet", "copper", "harbor", "meadow", "lantern", "willow", "marble", "cedar")
ATTACKS = ("loss", "zlib", "mink", "minkpp", "ref", "rmia", "informia", "informia_token")


def synthetic_result(n_texts: int = 40, n_tokens: int | tuple[int, int] = 60, *, seed: int = 0, attacks: Sequence[str] = ATTACKS,
                     token_attacks: Sequence[str] = ("informia_token", "minkpp"), extra_texts: Sequence[tuple[str, str, int]] = (),
                     n_bootstrap: int = 50, with_reference: bool = True):
    """``n_texts`` texts (half members) of about ``n_tokens`` tokens (or a number drawn from the range
    ``(lo, hi)`` per text), plus ``extra_texts`` given as (id, text, label), tokenized the same way."""
    from memlens.audit import AuditResult
    from memlens.data import Sample
    from memlens.metrics import evaluate
    from memlens.stats import TokenStats
    from memlens.tokens import token_spread

    rng = np.random.default_rng(seed)
    samples, stats, strings, ref_lp = [], [], [], []
    tok_scores: dict[str, list[np.ndarray]] = {a: [] for a in token_attacks}
    texts: list[tuple[str, str, int, dict]] = []
    for i in range(n_texts):
        label = int(i < n_texts // 2)
        n_tok = int(rng.integers(n_tokens[0], n_tokens[1] + 1)) if isinstance(n_tokens, tuple) else int(n_tokens)
        words = [str(w) for w in rng.choice(WORDS, size=max(n_tok - 5, 4))]
        phone = f"555-{rng.integers(1000, 9999)}"
        email = f"user{i}@example.org"
        k = int(rng.integers(1, len(words)))
        text = " ".join(words[:k]) + f" call {phone} or mail {email} " + " ".join(words[k:])
        a = text.index(phone)
        b = text.index(email)
        pii = [{"type": "phone", "start": a, "end": a + len(phone), "value": phone},
               {"type": "email", "start": b, "end": b + len(email), "value": email}]
        texts.append((f"t{i:04d}", text, label, {"tier": int(rng.choice([1, 4, 16])) if label else None, "pii": pii}))
    for tid, text, label in extra_texts:
        texts.append((tid, text, int(label), {}))
    for tid, text, label, meta in texts:
        starts, ends = _tokenize(text)
        n = len(starts)
        pii_mask = np.zeros(n, bool)
        for sp in meta.get("pii", []):
            pii_mask |= (starts < sp["end"]) & (ends > sp["start"])
        lp = rng.normal(-3.0, 1.0, n).astype(np.float32)
        gain = rng.normal(0.3, 1.0, n) + (3.0 * pii_mask if label else 0.0)
        samples.append(Sample(tid, text, label, {k: v for k, v in meta.items() if v is not None}))
        stats.append(TokenStats(token_ids=rng.integers(0, 50_000, n), logprob=lp, entropy=np.ones(n), mean_logp=-np.ones(n),
                                std_logp=np.ones(n), rank=np.ones(n), span_start=starts, span_end=ends))
        strings.append([text[s:e] for s, e in zip(starts, ends)])
        ref_lp.append(lp.astype(np.float64) - gain * np.log(2.0))
        for ta in token_attacks:
            tok_scores[ta].append(gain if ta == "informia_token" else (lp - lp.mean()) / (lp.std() + 1e-9) + pii_mask * label)
    labels = np.array([s.label for s in samples])
    table = {"id": [s.id for s in samples], "label": labels, "tier": [s.meta.get("tier") for s in samples]}
    for j, a in enumerate(attacks):
        table[a] = rng.normal(labels * (0.4 + 0.1 * j), 1.0)
    import pandas as pd

    scores = pd.DataFrame(table)
    metrics = {a: evaluate(labels, scores[a].to_numpy(), n_bootstrap=n_bootstrap, seed=seed) for a in attacks}
    settings = {"target": {"name": "synthetic-target", "fingerprint": "sha256:" + "ab" * 8, "tokenizer_fingerprint": "cd" * 8},
                "references": [{"name": "synthetic-ref", "fingerprint": "sha256:" + "ef" * 8, "tokenizer_fingerprint": "cd" * 8}],
                "attacks": list(attacks), "attack_params": {"informia_token": {"agg": "mean", "k": 0.2}},
                "pass": {"max_length": None, "stride": None, "temperature": 1.0}, "n_population": 0, "seed": seed,
                "n_bootstrap": n_bootstrap, "fprs": [0.001, 0.01, 0.05], "python": "3"}
    info = {a: ({"unit": "bits"} if a == "informia_token" else {}) for a in attacks}
    # as memlens.audit saves them (results.json "token_scales", read by `memlens show`, and "token_ranges", by the report)
    spreads = {a: token_spread(np.asarray(t, dtype=np.float32) for t in v) for a, v in tok_scores.items()}
    return AuditResult(samples=samples, scores=scores, metrics=metrics, token_scores=tok_scores, target_stats=stats,
                       token_strings=strings, settings=settings, attack_info=info, notes=["synthetic audit"],
                       reference_logprobs=ref_lp if with_reference else None,
                       extra={"token_scales": {a: sp and sp["scale"] for a, sp in spreads.items()},
                              "token_ranges": {a: [sp["lo"], sp["hi"]] for a, sp in spreads.items() if sp}})


def _tokenize(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Words with their leading whitespace, as byte-level BPE tokenizers split them."""
    starts, ends, pos = [], [], 0
    while pos < len(text):
        s = pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        while pos < len(text) and not text[pos].isspace():
            pos += 1
        starts.append(s)
        ends.append(pos)
    return np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)
