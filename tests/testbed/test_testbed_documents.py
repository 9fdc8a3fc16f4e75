import itertools
import random
import re
from collections import defaultdict

import pytest

from memlens.testbed.documents import (
    DOC_KINDS,
    MAX_CHARS,
    MAX_WORDS,
    MIN_WORDS,
    make_document,
    render,
)
from memlens.testbed.profiles import PII_TYPES, UNIQUE_PII_TYPES, generate_profiles


@pytest.fixture(scope="module")
def docs():
    rng = random.Random(0)
    profiles = generate_profiles(600, seed=0)
    return [make_document(p, DOC_KINDS[i % len(DOC_KINDS)], rng) for i, p in enumerate(profiles)]


def test_render_records_exact_spans_for_pii_fields_only():
    text, spans = render(
        "Hi {first_name}, {He} lives at {address}.",
        {"first_name": "Ann", "He": "She", "address": "1 Main St, X, CA 90001"},
    )
    assert text == "Hi Ann, She lives at 1 Main St, X, CA 90001."
    assert [(s["type"], text[s["start"] : s["end"]]) for s in spans] == [
        ("first_name", "Ann"),
        ("address", "1 Main St, X, CA 90001"),
    ]


def test_spans_are_exact(docs):
    for d in docs:
        assert d.pii, d.text
        for s in d.pii:
            assert d.text[s["start"] : s["end"]] == s["value"]
            assert s["type"] in PII_TYPES
        # spans come in text order and never overlap
        ends = [(s["start"], s["end"]) for s in d.pii]
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends))


def test_every_document_holds_an_identifying_value(docs):
    for d in docs:
        assert any(s["type"] in UNIQUE_PII_TYPES for s in d.pii), d.text


def test_spans_use_the_documents_own_profile(docs):
    profiles = {p.profile_id: p for p in generate_profiles(600, seed=0)}
    for d in docs:
        p = profiles[d.profile_id]
        values = {
            "name": p.name, "email": p.email, "phone": p.phone, "ssn": p.ssn,
            "credit_card": p.credit_card, "address": p.address, "username": p.username,
            "employer": p.employer, "salary": p.salary_str,
        }  # fmt: skip
        for s in d.pii:
            if s["type"] in values:
                assert s["value"] == values[s["type"]]


def test_lengths_in_range(docs):
    for d in docs:
        assert MIN_WORDS <= len(d.text.split()) <= MAX_WORDS
        assert len(d.text) <= MAX_CHARS


def test_all_kinds_and_varied_templates(docs):
    skeletons = defaultdict(set)
    by_kind = defaultdict(int)
    for d in docs:
        by_kind[d.kind] += 1
        # Replace PII by its type: what is left is the template the document was built from.
        s, last = [], 0
        for sp in d.pii:
            s.append(d.text[last : sp["start"]] + "<" + sp["type"] + ">")
            last = sp["end"]
        skeleton = re.sub(r"\d", "#", "".join(s) + d.text[last:])
        skeletons[d.kind].add(skeleton)
    assert set(by_kind) == set(DOC_KINDS)
    for kind, n in by_kind.items():
        # Nearly every document has its own sentence selection and order.
        assert len(skeletons[kind]) >= 0.8 * n, kind


def test_document_generation_is_deterministic():
    p = generate_profiles(5, seed=1)
    a = [make_document(x, k, random.Random(3)) for x, k in zip(p, DOC_KINDS)]
    b = [make_document(x, k, random.Random(3)) for x, k in zip(p, DOC_KINDS)]
    assert a == b


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown document kind"):
        make_document(generate_profiles(1)[0], "tweet", random.Random(0))
