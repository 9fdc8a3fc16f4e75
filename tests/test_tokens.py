"""token_strings: token pieces from character spans, checked by hand and against a real byte-level BPE."""
from __future__ import annotations

import numpy as np
import pytest

from memlens.tokens import token_strings


def test_plain_spans():
    assert token_strings("hello world", [0, 5], [5, 11]) == ["hello", " world"]


def test_trimmed_whitespace_goes_with_the_next_token():
    # offsets that leave the space out (trim_offsets): the space is shown with "world"
    assert token_strings("hello world", [0, 6], [5, 11]) == ["hello", " world"]


def test_a_character_split_over_byte_pieces_shows_once():
    # "é" is two UTF-8 bytes: two tokens share the span (1, 2)
    assert token_strings("héllo", [0, 1, 1, 2], [1, 2, 2, 5]) == ["h", "é", "", "llo"]
    # three pieces of one CJK character, then another one
    assert token_strings("日本", [0, 0, 0, 1, 1, 1], [1, 1, 1, 2, 2, 2]) == ["日", "", "", "本", "", ""]


def test_empty_and_nested_spans():
    assert token_strings("abc", [0, 1, 1], [1, 1, 3]) == ["a", "", "bc"]
    assert token_strings("abcdef", [0, 1, 4], [4, 3, 6]) == ["abcd", "", "ef"]  # (1, 3) lies inside text already shown


def test_first_token_starts_at_its_span_and_spans_are_clipped():
    # text before the first scored token (an unscored first token) is not shown
    assert token_strings("xx yy", [2], [5]) == [" yy"]
    assert token_strings("ab", [0, 1], [1, 9]) == ["a", "b"]
    assert token_strings("", [], []) == []


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="one length"):
        token_strings("ab", [0, 1], [1])


def test_real_byte_level_tokenizer_pieces_join_to_the_text(tokenizer):
    text = "Willow café ✓ 日本  two\nlines"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts, ends = zip(*enc["offset_mapping"])
    got = token_strings(text, starts, ends)
    assert "".join(got) == text
    assert len(got) == len(enc["input_ids"])
    # where a token decodes to whole characters, the span gives the same string
    for tid, piece in zip(enc["input_ids"], got):
        dec = tokenizer.decode([tid])
        if "\ufffd" not in dec:
            assert piece == dec


def test_audit_token_strings_come_from_the_spans(gpt2, tokenizer):
    import memlens

    texts = ["Willow café ✓ 日本 two", "River stone lamp, code 123.", "Amber  cobalt\nhazel", "Copper 日 meadow"]
    res = memlens.audit(str(gpt2.path), members=texts[:2], nonmembers=texts[2:], attacks=["loss"], n_bootstrap=0,
                        cache_dir=None)
    for s, st, strings in zip(res.samples, res.target_stats, res.token_strings):
        assert len(strings) == len(st.token_ids)
        assert "".join(strings) == s.text  # a BOS is prepended, so every token of the text is scored
        assert "\ufffd" not in "".join(strings)


def test_many_texts_at_once_are_each_text_alone(tokenizer, corpus):
    """TokenStrings and its arrow rows (one running maximum over all texts) give every text token_strings' list,
    with real spans, hand-made odd ones (gaps, nested, out of range, empty) and texts without tokens."""
    import numpy as np

    from memlens.tokens import TokenStrings

    texts = corpus[:30] + ["héllo wörld ✓ café", "", "ab", "xyz"]
    starts, ends = [], []
    for t in texts[:31]:
        enc = tokenizer(t, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        starts.append(np.array([a for a, _ in enc], dtype=np.int64))
        ends.append(np.array([b for _, b in enc], dtype=np.int64))
    starts += [np.array([], dtype=np.int64), np.array([0, 5, 1], dtype=np.int64), np.array([-3, 1, 1, 2], dtype=np.int64)]
    ends += [np.array([], dtype=np.int64), np.array([1, 9, 2], dtype=np.int64), np.array([1, 1, 3, 0], dtype=np.int64)]
    many = [token_strings(t, a, b) for t, a, b in zip(texts, starts, ends)]
    lazy = TokenStrings(texts, starts, ends)  # what an audit keeps: made when asked for
    assert len(lazy) == len(texts) and lazy == many and lazy[3] == many[3] and lazy[-2:] == many[-2:]
    for idx in ([0, 1, 2], list(range(len(texts))), [31, 30], [31], []):  # ASCII and not, empty texts, no texts
        assert lazy.arrow(idx).to_pylist() == [many[i] for i in idx]
    assert TokenStrings([], [], []).arrow([]).to_pylist() == []
    with pytest.raises(ValueError, match="1-d of one length"):
        TokenStrings(["ab"], [np.array([0, 1])], [np.array([1])]).arrow([0])


def test_quantiles_linear_equal_numpys_on_the_float64_values():
    from memlens.tokens import quantiles_linear

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 999, 1000, 1001, 54321):
        for x in ((rng.normal(size=n) * 3).astype(np.float32), rng.integers(-3, 3, size=n).astype(np.float32)):
            qs = [0.001, 0.999, 0.99, 0.5, 0.0, 1.0]
            assert quantiles_linear(x.copy(), qs) == np.quantile(x.astype(np.float64), qs).tolist()
