import datetime as dt
import re

from memlens.testbed.profiles import (
    REFERENCE_DATE,
    STATE_NAMES,
    UNIQUE_PII_TYPES,
    ProfileGenerator,
    generate_profiles,
    shared_values,
)


def _luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()][::-1]
    total = sum(
        d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits)
    )
    return total % 10 == 0


def test_no_identifying_value_shared_across_profiles():
    profiles = generate_profiles(1500, seed=3)
    assert shared_values(profiles) == {}
    for t in UNIQUE_PII_TYPES:
        values = [p.unique_values()[t].lower() for p in profiles]
        assert len(set(values)) == len(values), t


def test_uniqueness_holds_across_batches_of_one_generator():
    gen = ProfileGenerator(seed=0)
    first, second = gen.generate_many(300), gen.generate_many(300)
    assert shared_values(first + second) == {}
    assert len({p.profile_id for p in first + second}) == 600


def test_shared_values_detects_duplicates():
    p = generate_profiles(2, seed=0)
    clone = type(p[0]).from_dict({**p[1].to_dict(), "ssn": p[0].ssn})
    assert shared_values([p[0], clone]) == {"ssn": {p[0].ssn}}


def test_profiles_are_internally_consistent():
    for p in generate_profiles(400, seed=1):
        dob = dt.date.fromisoformat(p.date_of_birth)
        had_birthday = (REFERENCE_DATE.month, REFERENCE_DATE.day) >= (dob.month, dob.day)
        assert p.age == REFERENCE_DATE.year - dob.year - (not had_birthday)
        assert 18 <= p.age <= 80
        assert p.name == f"{p.first_name} {p.last_name}"
        # e-mail and username derive from the name
        def slug(s):
            return re.sub(r"[^a-z]", "", s.lower())

        local = p.email.split("@")[0]
        assert slug(p.last_name) in local or slug(p.first_name) in local
        first, last = slug(p.first_name), slug(p.last_name)
        assert first[:3] in p.username or last[:3] in p.username
        # address pieces agree with each other
        assert p.address == f"{p.street_address}, {p.city}, {p.state} {p.zipcode}"
        assert STATE_NAMES[p.state] == p.state_name
        assert re.fullmatch(r"\d{5}", p.zipcode)
        assert re.fullmatch(r"\d{3}-\d{2}-\d{4}", p.ssn)
        assert _luhn_ok(p.credit_card), p.credit_card
        assert len(re.sub(r"\D", "", p.phone)) in (10, 11)
        assert p.salary_str == f"${p.salary:,}"


def test_same_seed_same_profiles_other_seed_different():
    assert generate_profiles(50, seed=7) == generate_profiles(50, seed=7)
    assert generate_profiles(50, seed=7) != generate_profiles(50, seed=8)
