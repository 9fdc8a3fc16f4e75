"""Token-level localization: do token scores single out the secret tokens of member texts?

A token is a secret token when its character span overlaps a ground-truth span (e.g. a PII
value). For each token-level scorer we report the AUC of token scores (secret vs other tokens,
pooled over texts) and the mean precision of each text's top-k tokens (k = its number of secret
tokens, so a perfect scorer reaches 1).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def secret_token_mask(span_start: np.ndarray, span_end: np.ndarray, spans: Sequence[dict]) -> np.ndarray:
    mask = np.zeros(len(span_start), dtype=bool)
    for sp in spans:
        a, b = int(sp["start"]), int(sp["end"])
        mask |= (span_start < b) & (span_end > a)
    return mask


def localization(token_scores: Sequence[np.ndarray], span_starts: Sequence[np.ndarray], span_ends: Sequence[np.ndarray],
                 secret_spans: Sequence[Sequence[dict]]) -> dict[str, Any]:
    """AUC of token scores for secret vs other tokens, and mean top-k precision per text."""
    ys, ss, precisions = [], [], []
    for sc, a, b, spans in zip(token_scores, span_starts, span_ends, secret_spans):
        if not spans:
            continue
        y = secret_token_mask(a, b, spans)
        sc = np.asarray(sc, dtype=np.float64)
        ys.append(y)
        ss.append(sc)
        k = int(y.sum())
        if 0 < k < len(y):
            top = np.argsort(-sc, kind="stable")[:k]
            precisions.append(float(y[top].mean()))
    if not ys:
        return {"auc": None, "topk_precision": None, "n_texts": 0, "n_secret_tokens": 0, "n_tokens": 0}
    y, s = np.concatenate(ys), np.concatenate(ss)
    auc = float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None
    return {"auc": auc, "topk_precision": float(np.mean(precisions)) if precisions else None, "n_texts": len(ys),
            "n_secret_tokens": int(y.sum()), "n_tokens": int(len(y)), "base_rate": float(y.mean())}
