"""Seeded, internally consistent synthetic person profiles (PANORAMA-style).

Every profile is a fictitious person built with Faker plus a seeded :class:`random.Random`.
The fields are made to agree with one another, the way real records do: the e-mail address and
username are derived from the name (and sometimes the birth year), the age is the age on a fixed
reference date given the date of birth, the ZIP code belongs to the state, and so on. Consistency
matters because a model that memorizes a document should have to memorize the *values*, not be
able to shortcut them from unrelated noise.

Identifying values (see :data:`UNIQUE_PII_TYPES`) are unique across every profile made by one
:class:`ProfileGenerator`: a value that collides with an earlier profile's is regenerated. This is
what lets the testbed promise that the PII of a non-member never occurs in the training data, so
any ability of the target model to produce it is not memorization of that value.

Attributes such as the job or the medical condition come from finite lists and are naturally
shared between people; they are still sensitive (and tagged in documents) but are not unique.
"""

from __future__ import annotations

import datetime as _dt
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from faker import Faker

#: PII types whose values identify one profile; no two profiles share any of these values.
UNIQUE_PII_TYPES: tuple[str, ...] = (
    "name",
    "dob",
    "address",
    "phone",
    "email",
    "username",
    "ssn",
    "credit_card",
    "employer",
    "salary",
)

#: Sensitive attributes drawn from finite sets: tagged in documents but shared across people.
ATTRIBUTE_PII_TYPES: tuple[str, ...] = ("first_name", "age", "city", "job", "medical_condition")

#: Every span type a document may carry.
PII_TYPES: tuple[str, ...] = UNIQUE_PII_TYPES + ATTRIBUTE_PII_TYPES

#: Fixed "today" so ages (and hence documents) do not depend on the day the build runs.
REFERENCE_DATE = _dt.date(2024, 6, 1)

MEDICAL_CONDITIONS: tuple[str, ...] = (
    "type 1 diabetes",
    "type 2 diabetes",
    "hypertension",
    "asthma",
    "migraine",
    "epilepsy",
    "celiac disease",
    "Crohn's disease",
    "ulcerative colitis",
    "rheumatoid arthritis",
    "psoriasis",
    "multiple sclerosis",
    "hypothyroidism",
    "Graves' disease",
    "sleep apnea",
    "chronic kidney disease",
    "atrial fibrillation",
    "glaucoma",
    "lupus",
    "fibromyalgia",
    "endometriosis",
    "polycystic ovary syndrome",
    "irritable bowel syndrome",
    "generalized anxiety disorder",
    "major depressive disorder",
    "bipolar disorder",
    "ADHD",
    "COPD",
    "osteoporosis",
    "gout",
    "Lyme disease",
    "hepatitis C",
    "HIV",
    "anemia",
    "tinnitus",
    "sciatica",
    "long COVID",
    "Hashimoto's thyroiditis",
    "kidney stones",
    "chronic back pain",
)

#: Two-letter abbreviation -> state name (Faker's own two tuples are not aligned because of DC).
STATE_NAMES: dict[str, str] = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "DC": "the District of Columbia",
    "FL": "Florida", "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois",
    "IN": "Indiana", "IA": "Iowa", "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana",
    "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota",
    "MS": "Mississippi", "MO": "Missouri", "MT": "Montana", "NE": "Nebraska", "NV": "Nevada",
    "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico", "NY": "New York",
    "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma",
    "OR": "Oregon", "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina",
    "SD": "South Dakota", "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont",
    "VA": "Virginia", "WA": "Washington", "WV": "West Virginia", "WI": "Wisconsin",
    "WY": "Wyoming",
}  # fmt: skip

# Card networks and the Faker card type that yields numbers with the right prefix and checksum.
_CARD_TYPES: tuple[tuple[str, str], ...] = (
    ("Visa", "visa16"),
    ("Visa", "visa16"),
    ("Mastercard", "mastercard"),
    ("Discover", "discover"),
    ("American Express", "amex"),
)

# A few e-mail providers, weighted roughly like real usage; kept explicit so that a Faker upgrade
# changing its own list does not silently change the corpus.
_EMAIL_DOMAINS: tuple[str, ...] = (
    "gmail.com",
    "gmail.com",
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "aol.com",
    "protonmail.com",
    "fastmail.com",
)


@dataclass(frozen=True)
class Profile:
    """One synthetic person. All string fields are exactly as documents will render them."""

    profile_id: str
    gender: str  # "female" or "male": drives pronouns in documents
    first_name: str
    last_name: str
    name: str
    date_of_birth: str  # ISO yyyy-mm-dd
    age: int  # on REFERENCE_DATE
    street_address: str
    city: str
    state: str  # two-letter abbreviation
    state_name: str
    zipcode: str
    address: str  # one line: "street, city, ST 12345"
    phone: str
    email: str
    username: str
    ssn: str
    credit_card: str  # grouped digits, e.g. "4532 0151 1283 0366"
    card_network: str
    employer: str
    job: str
    salary: int  # yearly, USD
    medical_condition: str

    @property
    def dob(self) -> _dt.date:
        return _dt.date.fromisoformat(self.date_of_birth)

    @property
    def salary_str(self) -> str:
        """Salary as documents write it, e.g. ``$84,312``."""
        return _format_salary(self.salary)

    def unique_values(self) -> dict[str, str]:
        """Canonical value of each identifying type (the ones unique across profiles)."""
        return {
            "name": self.name,
            "dob": self.date_of_birth,
            "address": self.address,
            "phone": self.phone,
            "email": self.email,
            "username": self.username,
            "ssn": self.ssn,
            "credit_card": self.credit_card,
            "employer": self.employer,
            "salary": self.salary_str,
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Profile:
        return cls(**d)


def _format_salary(dollars: int) -> str:
    return f"${dollars:,}"


def _slug(s: str) -> str:
    """Lower-case ASCII letters only: "O'Connor-Diaz" -> "oconnordiaz" (for e-mails, usernames)."""
    return re.sub(r"[^a-z]", "", s.lower())


def _normalize_job(job: str) -> str:
    """Faker job titles are Title Case; prose uses lower case except for acronyms."""
    return job if len(job) > 1 and job[1].isupper() else job[0].lower() + job[1:]


class ProfileGenerator:
    """Makes profiles whose identifying values are unique across everything it ever made.

    One generator is used for all splits of a testbed (members, non-members, population and the
    background profiles of the pretraining corpus), so uniqueness holds across splits.

    Args:
        seed: seeds both Faker and the generator's own :class:`random.Random`.
        id_prefix: profile ids are ``f"{id_prefix}{n:05d}"``.
    """

    def __init__(self, seed: int = 0, id_prefix: str = "p") -> None:
        self.rng = random.Random(seed)
        self.fake = Faker("en_US")
        self.fake.seed_instance(seed)
        self.id_prefix = id_prefix
        self.count = 0
        self._seen: dict[str, set[str]] = {t: set() for t in UNIQUE_PII_TYPES}
        # Real-looking job titles only: Faker's inverted forms ("Engineer, civil") and
        # parenthesised ones read badly inside sentences.
        from faker.providers.job.en_US import Provider as _Jobs

        self._jobs = sorted({_normalize_job(j) for j in _Jobs.jobs if not re.search(r"[,()/]", j)})

    # -- uniqueness -------------------------------------------------------------------------
    def _unique(self, kind: str, make: Callable[[int], str], max_tries: int = 1000) -> str:
        """Call ``make(attempt)`` until it returns a value unseen for ``kind``; remember it."""
        seen = self._seen[kind]
        for attempt in range(max_tries):
            value = make(attempt)
            key = value.lower()
            if key not in seen:
                seen.add(key)
                return value
        raise RuntimeError(f"could not find a unique {kind!r} after {max_tries} tries")

    # -- field makers -------------------------------------------------------------------------
    def _name(self, gender: str) -> tuple[str, str]:
        f = self.fake
        first_of = f.first_name_female if gender == "female" else f.first_name_male
        holder: dict[str, tuple[str, str]] = {}

        def make(_: int) -> str:
            holder["v"] = (first_of(), f.last_name())
            return " ".join(holder["v"])

        self._unique("name", make)
        return holder["v"]

    def _dob(self) -> _dt.date:
        # Adults aged 19 to 78 on the reference date, uniformly by day.
        lo = REFERENCE_DATE.toordinal() - 78 * 365
        hi = REFERENCE_DATE.toordinal() - 19 * 365
        iso = self._unique(
            "dob", lambda _: _dt.date.fromordinal(self.rng.randint(lo, hi)).isoformat()
        )
        return _dt.date.fromisoformat(iso)

    def _phone(self) -> str:
        r = self.rng
        fmt = r.choice(("({a}) {e}-{n}", "{a}-{e}-{n}", "{a}.{e}.{n}", "+1 {a} {e} {n}"))

        def make(_: int) -> str:
            # NANP rules: area code and exchange never start with 0/1, and 555 is fictional-only.
            area = f"{r.randint(2, 9)}{r.randint(0, 9)}{r.randint(0, 9)}"
            if area[1:] == "11" or area == "555":
                area = "212"
            exch = f"{r.randint(2, 9)}{r.randint(0, 9)}{r.randint(0, 9)}"
            return fmt.format(a=area, e=exch, n=f"{r.randint(0, 9999):04d}")

        return self._unique("phone", make)

    def _email(self, first: str, last: str, dob: _dt.date) -> str:
        r = self.rng
        fi, la, yy = _slug(first), _slug(last), f"{dob.year % 100:02d}"
        patterns = (
            lambda: f"{fi}.{la}",
            lambda: f"{fi}{la}{yy}",
            lambda: f"{fi[0]}{la}",
            lambda: f"{fi}_{la}{r.randint(1, 99)}",
            lambda: f"{la}.{fi}{dob.year}",
            lambda: f"{fi}{la[0]}{r.randint(10, 999)}",
        )
        domain = r.choice(_EMAIL_DOMAINS)
        local = r.choice(patterns)
        # On collision keep the person's pattern but add digits, as real users have to.
        return self._unique(
            "email",
            lambda k: f"{local()}{'' if k == 0 else r.randint(2, 9999)}@{domain}",
        )

    def _username(self, first: str, last: str, dob: _dt.date) -> str:
        r = self.rng
        fi, la, yy = _slug(first), _slug(last), f"{dob.year % 100:02d}"
        words = ("runner", "gamer", "reads", "cooks", "travels", "tech", "music", "fit", "dev")
        patterns = (
            lambda: f"{fi}{la[0]}{yy}",
            lambda: f"{fi[0]}{la}{r.randint(1, 99)}",
            lambda: f"{fi}_{la}",
            lambda: f"{la}{fi[:3]}{r.randint(10, 99)}",
            lambda: f"{fi}_{r.choice(words)}{yy}",
            lambda: f"the_real_{fi}{la[:2]}",
        )
        pat = r.choice(patterns)
        return self._unique(
            "username", lambda k: pat() if k == 0 else f"{pat()}{r.randint(1, 999)}"
        )

    def _address(self) -> tuple[str, str, str, str, str]:
        f = self.fake
        holder: dict[str, tuple[str, str, str, str]] = {}

        def make(_: int) -> str:
            state = f.state_abbr(include_territories=False, include_freely_associated_states=False)
            holder["v"] = (f.street_address(), f.city(), state, f.zipcode_in_state(state))
            street, city, st, z = holder["v"]
            return f"{street}, {city}, {st} {z}"

        address = self._unique("address", make)
        return (address, *holder["v"])

    def _credit_card(self) -> tuple[str, str]:
        network, ctype = self.rng.choice(_CARD_TYPES)

        def make(_: int) -> str:
            digits = self.fake.credit_card_number(card_type=ctype)
            if len(digits) == 15:  # Amex groups 4-6-5
                return f"{digits[:4]} {digits[4:10]} {digits[10:]}"
            return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))

        return self._unique("credit_card", make), network

    def _salary(self, age: int) -> int:
        # Log-normal-ish, rising with age until mid-career; exact dollars keep values unique.
        base = 38_000 + 1_800 * min(max(age - 22, 0), 25)
        text = self._unique(
            "salary", lambda _: _format_salary(int(base * self.rng.lognormvariate(0.0, 0.35)))
        )
        return int(text.lstrip("$").replace(",", ""))

    # -- public -----------------------------------------------------------------------------
    def generate(self) -> Profile:
        """Make one new profile, unique in all :data:`UNIQUE_PII_TYPES` values."""
        r, f = self.rng, self.fake
        gender = r.choice(("female", "male"))
        first, last = self._name(gender)
        dob = self._dob()
        age = (
            REFERENCE_DATE.year
            - dob.year
            - ((REFERENCE_DATE.month, REFERENCE_DATE.day) < (dob.month, dob.day))
        )
        address, street, city, state, zipcode = self._address()
        card, network = self._credit_card()
        pid = f"{self.id_prefix}{self.count:05d}"
        self.count += 1

        return Profile(
            profile_id=pid,
            gender=gender,
            first_name=first,
            last_name=last,
            name=f"{first} {last}",
            date_of_birth=dob.isoformat(),
            age=age,
            street_address=street,
            city=city,
            state=state,
            state_name=STATE_NAMES[state],
            zipcode=zipcode,
            address=address,
            phone=self._phone(),
            email=self._email(first, last, dob),
            username=self._username(first, last, dob),
            ssn=self._unique("ssn", lambda _: f.ssn()),
            credit_card=card,
            card_network=network,
            employer=self._unique("employer", lambda _: f.company()),
            job=r.choice(self._jobs),
            salary=self._salary(age),
            medical_condition=r.choice(MEDICAL_CONDITIONS),
        )

    def generate_many(self, n: int) -> list[Profile]:
        return [self.generate() for _ in range(n)]


def generate_profiles(n: int, seed: int = 0) -> list[Profile]:
    """Convenience: ``n`` unique profiles from a fresh generator seeded with ``seed``."""
    return ProfileGenerator(seed).generate_many(n)


def shared_values(profiles: Iterable[Profile]) -> dict[str, set[str]]:
    """Identifying values that occur in more than one profile (empty dict when all unique)."""
    seen: dict[str, dict[str, str]] = {t: {} for t in UNIQUE_PII_TYPES}
    dup: dict[str, set[str]] = {}
    for p in profiles:
        for t, v in p.unique_values().items():
            key = v.lower()
            if key in seen[t] and seen[t][key] != p.profile_id:
                dup.setdefault(t, set()).add(v)
            seen[t][key] = p.profile_id
    return dup
