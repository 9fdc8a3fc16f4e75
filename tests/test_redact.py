"""Redaction: typed keyed placeholders replace secret spans; scores and token alignment kept."""
from __future__ import annotations

import json

import pytest

from memlens.data import Sample
from memlens.redact import RedactError, Redactor, leaked_values, threshold_spans
from memlens.testbed import TestbedConfig, build_testbed, read_jsonl
from memlens.testbed.profiles import UNIQUE_PII_TYPES

KEY = b"k" * 32


def test_text_by_hand():
    r = Redactor(KEY)
    text = "Call 555-1234 or mail a@b.co; again 555-1234."
    spans = [{"type": "phone", "start": 5, "end": 13}, {"type": "email", "start": 22, "end": 28},
             {"type": "phone", "start": 36, "end": 44}]
    out, new = r.text(text, spans)
    ph, pe = r.placeholder("phone", "555-1234"), r.placeholder("email", "a@b.co")
    assert out == f"Call {ph} or mail {pe}; again {ph}."
    assert ph.startswith("[PHONE#") and len(ph) == len("[PHONE#") + 8 + 1
    assert [out[s["start"]:s["end"]] for s in new] == [ph, pe, ph] == [s["value"] for s in new]
    assert Redactor(b"other" * 7).placeholder("phone", "555-1234") != ph  # keyed: no fixed dictionary
    assert Redactor().placeholder("phone", "555-1234") != Redactor().placeholder("phone", "555-1234")  # random key per run


def test_overlapping_spans_merge_and_bad_spans_refuse():
    r = Redactor(KEY)
    out, new = r.text("abcdefgh", [{"type": "x", "start": 1, "end": 4}, {"type": "y", "start": 3, "end": 6}])
    assert out == "a" + r.placeholder("x", "bcdef") + "gh" and len(new) == 1
    with pytest.raises(RedactError, match="outside the text"):
        r.text("abc", [{"start": 2, "end": 9}])
    with pytest.raises(RedactError, match="outside the text"):
        r.text("abc", [{"start": 2, "end": 2}])


def test_tokens_keep_alignment_with_scores():
    r = Redactor(KEY)
    text = "ssn 123-45-6789 ok"
    tokens = ["ssn", " 123", "-45", "-6789", " ok"]
    starts, ends = [0, 3, 7, 10, 15], [3, 7, 10, 15, 18]
    out = r.tokens(text, tokens, starts, ends, [{"type": "ssn", "start": 4, "end": 15}])
    assert out == ["ssn", r.placeholder("ssn", "123-45-6789"), "", "", " ok"] and len(out) == len(tokens)
    spans = threshold_spans(starts, ends, [0.1, 2.0, 3.0, 0.5, 0.0], threshold=1.0)
    assert spans == [{"type": "leak", "start": 3, "end": 7}, {"type": "leak", "start": 7, "end": 10}]
    red, _ = r.text(text, spans)
    assert red == "ssn" + r.placeholder("leak", " 123-45") + "-6789 ok"  # adjacent tokens merge
    with pytest.raises(RedactError, match="5 token starts"):
        threshold_spans(starts, ends, [1.0], 0.5)


def test_testbed_samples_redacted_leave_no_unique_pii_value(tmp_path):
    paths = build_testbed(tmp_path / "tb", TestbedConfig.quick())
    records = read_jsonl(paths.members) + read_jsonl(paths.nonmembers)
    samples = [Sample(r["id"], r["text"], r["label"], {"pii": r["pii"], "tier": r["tier"]}) for r in records]
    red = Redactor().samples(samples)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / "texts.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": s.id, "text": s.text, "label": s.label, "meta": s.meta}) + "\n" for s in red)
    values = [p["value"] for r in records for p in r["pii"] if p["type"] in UNIQUE_PII_TYPES]
    assert len(values) > 100
    assert leaked_values(out, values) == []
    assert all(s.meta["redacted"] for s in red) and [s.label for s in red] == [s.label for s in samples]
    # The check itself finds what is there: the unredacted texts leak every value.
    (out / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert {v for _, v in leaked_values(out, values)} == set(values)


def test_remap_offsets_by_hand():
    from memlens.redact import remap_offsets

    # "call 555-0100 now": secret 5-13 (8 chars) -> a 12-char placeholder at 5-17 (shift +4)
    old, new = [{"start": 5, "end": 13}], [{"start": 5, "end": 17}]
    # tokens "call", " 555", "-", "0100", " now" by their starts and ends
    assert remap_offsets([0, 4, 8, 9, 13], old, new).tolist() == [0, 4, 17, 17, 17]
    assert remap_offsets([4, 8, 9, 13, 17], old, new).tolist() == [4, 17, 17, 17, 21]
    # two secrets: shifts add up, an offset at a secret's start goes to its placeholder's start
    old2, new2 = [{"start": 2, "end": 4}, {"start": 6, "end": 7}], [{"start": 2, "end": 7}, {"start": 9, "end": 12}]
    assert remap_offsets([0, 2, 3, 4, 6, 7, 8], old2, new2).tolist() == [0, 2, 7, 7, 9, 12, 13]


def test_redact_result_of_a_synthetic_audit():
    from memlens.redact import leaked_values, redact_result
    from memlens.report._synthetic import synthetic_result

    res = synthetic_result(10, 30)
    values = [s.text[p["start"]:p["end"]] for s in res.samples for p in s.meta.get("pii") or []]
    assert values
    red = redact_result(res)
    for s0, s1, st, strings in zip(res.samples, red.samples, red.target_stats, red.token_strings):
        assert not any(v in s1.text for v in values if v in s0.text) or not s0.meta.get("pii")
        assert "".join(strings) == s1.text[st.span_start[0]:max(st.span_end)]
    assert [len(a) for a in res.target_stats] == [len(a) for a in red.target_stats]
    assert res.scores.equals(red.scores) and red.extra["redacted"]["spans"] > 0
    assert res.samples[0].text != red.samples[0].text or not res.samples[0].meta.get("pii")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        res.save(d, redact=True)
        assert leaked_values(d, [v for v in values if len(v) > 3]) == []
