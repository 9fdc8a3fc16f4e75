"""The demo's leaked tokens per group at the calibrated threshold, against a hand count."""
import numpy as np
import pytest

from memlens.lab.demo import leak_by_group
from memlens.leakage import text_null


def test_leak_by_group_by_hand():
    # 20 non-members of 10 tokens (one with a token above 0.5), two 16x members, one 1x member; tokens span 1 char each
    toks = [np.zeros(10) for _ in range(20)] + [np.r_[1.0, 1.0, 1.0, np.zeros(7)], np.r_[np.zeros(9), 1.0], np.zeros(10)]
    toks[0] = np.r_[1.0, np.zeros(9)]
    starts, ends = [np.arange(10)] * 23, [np.arange(1, 11)] * 23
    pii = [[{"start": 0, "end": 2}]] * 23  # tokens 0 and 1 are PII
    ids = [f"n{i}" for i in range(20)] + ["a", "b", "c"]
    labels, tiers = [0] * 20 + [1, 1, 1], [None] * 20 + [16, 16, 1]
    null = text_null(toks[:20], 0.5, 0.01, source="non-member texts", ids=ids[:20], text_rate=0.05)
    lt = {"value": 0.5, "rate": 0.01, "text": null}
    got = leak_by_group(toks, starts, ends, pii, ids, labels, tiers, lt)
    assert list(got) == ["1x", "16x", "nonmember"]
    # 16x: 3 + 1 tokens above, 2 of them PII (tokens 0 and 1 of "a"); "a" (3 above) beats every non-member, "b" (1) ties n0
    assert got["16x"] == {"texts": 2, "leaked_tokens_per_text": 2.0, "texts_with_leaked_tokens": 1.0, "flagged": 0.5,
                          "flagged_binomial": pytest.approx(0.5), "pii_share_of_leaked": 0.5}
    # non-members: n0 (1 above, PII), judged against the other 19: p = 1/20 <= 0.05, flagged; P(X >= 1) = 0.096 > 0.01
    assert got["nonmember"] == {"texts": 20, "leaked_tokens_per_text": 0.05, "texts_with_leaked_tokens": 0.05, "flagged": 0.05,
                                "flagged_binomial": 0.0, "pii_share_of_leaked": 1.0}
    assert got["1x"]["leaked_tokens_per_text"] == 0.0 and got["1x"]["pii_share_of_leaked"] is None and got["1x"]["flagged"] == 0.0
