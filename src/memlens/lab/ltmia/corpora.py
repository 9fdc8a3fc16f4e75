"""Text domains for LT-MIA data generation, all available offline.

Every domain yields short documents (a few hundred characters, about the 128 tokens LT-MIA
looks at), deduplicated and in a seeded order:

* ``docs``: real English technical prose: the language reference shipped with CPython
  (``pydoc_data``) and the docstrings of the installed Python sources;
* ``code``: real Python source: blocks of the standard library's and installed packages' modules;
* ``pii``: the PII testbed's six document kinds (biographies, forum posts, reviews, listings,
  e-mails, chats) about synthetic Faker profiles (:mod:`memlens.testbed`);
* ``web``: Faker-made web text: product reviews, order notices, company profiles, event
  announcements, news briefs and short biographies;
* ``records``: Faker-made structured text: JSON records, CSV tables, server logs, invoices.

``docs`` and ``code`` depend on the Python installation (its version and packages): a corpus is
written once to the generation's output directory, with the files it came from counted in the
manifest, and reused from there.
"""
from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import sys
import sysconfig
import zlib
from pathlib import Path
from typing import Callable, Sequence

DOMAINS = ("docs", "code", "pii", "web", "records")
#: default packages (besides the standard library) whose sources feed ``code`` and ``docs``
CODE_PACKAGES = ("transformers",)

_MAX_CHARS = 900


def _dedup_shuffle(texts: Sequence[str], seed: int) -> list[str]:
    seen, out = set(), []
    for t in texts:
        t = t.strip()
        h = hashlib.sha1(t.encode()).digest()
        if t and h not in seen:
            seen.add(h)
            out.append(t)
    random.Random(seed).shuffle(out)
    return out


# ---------------------------------------------------------------------------------------------
# Python sources: code blocks and docstrings
# ---------------------------------------------------------------------------------------------
def python_source_files(packages: Sequence[str] = CODE_PACKAGES, max_files: int | None = None, seed: int = 0) -> list[Path]:
    """The standard library's .py files and those of ``packages`` (when installed), in a seeded order."""
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    for name in packages:
        try:
            import importlib.util

            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            roots.append(Path(list(spec.submodule_search_locations)[0]))
    files: list[Path] = []
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            rel = str(f.relative_to(root))
            if "site-packages" in rel or "/test" in "/" + rel or "idlelib" in rel or "lib2to3" in rel:
                continue
            files.append(f)
    random.Random(seed).shuffle(files)
    return files[:max_files] if max_files else files


def _code_blocks(src: str, max_chars: int) -> list[str]:
    """Consecutive runs of lines cut at blank lines, about ``max_chars`` long, mostly ASCII."""
    blocks, cur, size = [], [], 0
    for line in src.splitlines():
        if len(line) > 160:
            continue
        cur.append(line)
        size += len(line) + 1
        if size >= max_chars * 0.5 and (not line.strip() or size >= max_chars):
            blocks.append("\n".join(cur).strip("\n"))
            cur, size = [], 0
    if cur:
        blocks.append("\n".join(cur).strip("\n"))
    out = []
    for b in blocks:
        b = b[:max_chars]
        lines = [ln for ln in b.splitlines() if ln.strip()]
        if len(lines) < 4 or sum(c.isascii() for c in b) < 0.98 * len(b):
            continue
        out.append(b)
    return out


_WORDY = re.compile(r"[A-Za-z][a-z]+")


def _docstrings(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if not doc:
                continue
            para = " ".join(doc.split("\n\n")[0].split()) if len(doc) > _MAX_CHARS else " ".join(doc.split())
            words = para.split()
            # prose, not signatures or tables: mostly real words
            if len(words) >= 25 and len(_WORDY.findall(para)) >= 0.6 * len(words) and para.isascii():
                out.append(para[:_MAX_CHARS])
    return out


def _scan_file(args: tuple[str, int, bool]) -> tuple[list[str], list[str]]:
    path, max_chars, want_docs = args
    try:
        src = Path(path).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return [], []
    docs: list[str] = []
    if want_docs:
        try:
            docs = _docstrings(ast.parse(src))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass
    return _code_blocks(src, max_chars), docs


def code_and_docstrings(packages: Sequence[str] = CODE_PACKAGES, n_code: int | None = None, n_docs: int | None = None,
                        seed: int = 0, max_chars: int = 600, jobs: int = 1) -> tuple[list[str], list[str], int]:
    """(code blocks, docstrings, number of files read) from the installed Python sources.

    Files are read in a seeded order until ``n_code`` blocks and ``n_docs`` docstrings are found
    (all files when None); ``jobs`` > 1 reads them in parallel processes."""
    files = [str(f) for f in python_source_files(packages, None, seed)]
    code: list[str] = []
    docs: list[str] = []
    n = 0
    batch = 64 * max(1, jobs)
    pool = None
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(jobs)
    try:
        for lo in range(0, len(files), batch):
            want_docs = n_docs is None or len(docs) < n_docs
            args = [(f, max_chars, want_docs) for f in files[lo:lo + batch]]
            results = pool.map(_scan_file, args, chunksize=8) if pool else map(_scan_file, args)
            for c, d in results:
                code.extend(c)
                docs.extend(d)
                n += 1
            if (n_code is not None and len(code) >= n_code) and (n_docs is None or len(docs) >= n_docs):
                break
    finally:
        if pool is not None:
            pool.shutdown()
    return code, docs, n


# ---------------------------------------------------------------------------------------------
# Faker-made genres
# ---------------------------------------------------------------------------------------------
def _web_doc(fk, rng: random.Random) -> str:
    g = rng.randrange(6)
    if g == 0:
        item = rng.choice(["blender", "backpack", "desk lamp", "phone case", "kettle", "monitor", "tent", "headset"])
        return (f"{rng.choice(['Great', 'Disappointing', 'Solid', 'Decent', 'Excellent'])} {item}. I bought it from "
                f"{fk.company()} in {fk.month_name()}. {fk.paragraph(nb_sentences=3)} Delivery took {rng.randint(1, 14)} days "
                f"and it cost ${rng.randint(9, 499)}.{rng.randint(0, 99):02d}. Rating: {rng.randint(1, 5)}/5. - {fk.first_name()}")
    if g == 1:
        return (f"Order #{fk.numerify('#######')} for {fk.name()} was shipped on {fk.date('%B %d, %Y')} to "
                f"{fk.street_address()}, {fk.city()}, {fk.state_abbr()} {fk.zipcode()}. It contains {rng.randint(1, 6)} items, "
                f"total ${rng.randint(10, 900)}.{rng.randint(0, 99):02d}. Track it at {fk.url()}track/{fk.bothify('??####')}. "
                f"Questions? Call {fk.phone_number()} or write to {fk.company_email()}. {fk.sentence()}")
    if g == 2:
        return (f"{fk.company()} is a company based in {fk.city()} that aims to {fk.bs()}. Founded in {fk.year()} by "
                f"{fk.name()}, it employs about {rng.randint(5, 5000)} people and is known for its "
                f"{fk.catch_phrase().lower()}. {fk.paragraph(nb_sentences=2)}")
    if g == 3:
        return (f"The {fk.word().title()} {rng.choice(['Festival', 'Fair', 'Summit', 'Marathon', 'Concert'])} returns to "
                f"{fk.city()} on {fk.date('%B %d')}. Doors open at {rng.randint(8, 11)} am; tickets cost "
                f"${rng.randint(5, 120)} at {fk.url()}. Organizer: {fk.name()} ({fk.free_email()}). {fk.paragraph(nb_sentences=2)}")
    if g == 4:
        return (f"{fk.city().upper()} ({fk.date('%b %d')}) - {fk.sentence(nb_words=12)} {fk.name()}, a spokesperson for "
                f"{fk.company()}, said the {rng.choice(['plan', 'merger', 'project', 'vote', 'report'])} would be "
                f"announced by {fk.day_of_week()}. {fk.paragraph(nb_sentences=3)}")
    name = fk.name()
    return (f"{name} was born on {fk.date_of_birth(minimum_age=20, maximum_age=80).strftime('%B %d, %Y')} in {fk.city()}. "
            f"{rng.choice(['She', 'He', 'They'])} works as a {fk.job().lower()} at {fk.company()} and can be reached at "
            f"{fk.email()} or {fk.phone_number()}. {fk.paragraph(nb_sentences=2)}")


def _records_doc(fk, rng: random.Random) -> str:
    g = rng.randrange(4)
    if g == 0:
        rec = {"id": rng.randint(1000, 99999), "name": fk.name(), "email": fk.email(), "city": fk.city(),
               "joined": fk.date(), "active": rng.random() < 0.7, "balance": round(rng.uniform(0, 5000), 2),
               "tags": [fk.word() for _ in range(rng.randint(1, 3))]}
        return json.dumps(rec, indent=rng.choice([None, 2]))
    if g == 1:
        cols = rng.sample(["id", "date", "city", "amount", "status", "sku", "qty", "customer"], 4)
        make: dict[str, Callable[[], str]] = {
            "id": lambda: str(rng.randint(1, 9999)), "date": fk.date, "city": fk.city,
            "amount": lambda: f"{rng.uniform(1, 999):.2f}", "status": lambda: rng.choice(["paid", "open", "void"]),
            "sku": lambda: fk.bothify("??-####").upper(), "qty": lambda: str(rng.randint(1, 40)), "customer": fk.name,
        }
        rows = [",".join(cols)] + [",".join(make[c]() for c in cols) for _ in range(rng.randint(4, 8))]
        return "\n".join(rows)
    if g == 2:
        lines = []
        for _ in range(rng.randint(4, 7)):
            lines.append(f"{fk.ipv4()} - - [{fk.date_time().strftime('%d/%b/%Y:%H:%M:%S')} +0000] "
                         f"\"{rng.choice(['GET', 'POST', 'PUT', 'DELETE'])} /{fk.uri_path()} HTTP/1.1\" "
                         f"{rng.choice([200, 200, 200, 301, 404, 500])} {rng.randint(100, 50000)}")
        return "\n".join(lines)
    lines = [f"INVOICE {fk.bothify('INV-#####')}", f"Date: {fk.date()}", f"Bill to: {fk.name()}, {fk.address().replace(chr(10), ', ')}"]
    total = 0.0
    for _ in range(rng.randint(2, 5)):
        q, p = rng.randint(1, 9), round(rng.uniform(2, 300), 2)
        total += q * p
        lines.append(f"{q} x {fk.word()} {fk.word()} @ {p:.2f} = {q * p:.2f}")
    lines.append(f"Total due: {total:.2f} USD by {fk.date()}")
    return "\n".join(lines)


def faker_texts(kind: str, n: int, seed: int) -> list[str]:
    """``n`` Faker-made documents of ``kind`` ("web" or "records")."""
    from faker import Faker

    fk = Faker("en_US")
    fk.seed_instance(seed)
    rng = random.Random(seed)
    make = {"web": _web_doc, "records": _records_doc}[kind]
    return [make(fk, rng) for _ in range(n)]


def pii_texts(n: int, seed: int) -> list[str]:
    """``n`` PII testbed documents (kinds in rotation) about fresh synthetic profiles."""
    from memlens.testbed import DOC_KINDS, generate_profiles, make_document

    rng = random.Random(seed)
    return [make_document(p, DOC_KINDS[i % len(DOC_KINDS)], rng).text for i, p in enumerate(generate_profiles(n, seed=seed))]


def prose_chunks() -> list[str]:
    from memlens.testbed.corpus import public_text_chunks

    return public_text_chunks(10**9, seed=0, min_words=40, max_words=110)


def build_domains(domains: Sequence[str], n_per_domain: int, seed: int = 0, code_packages: Sequence[str] = CODE_PACKAGES,
                  jobs: int = 1) -> tuple[dict[str, list[str]], dict]:
    """Up to ``n_per_domain`` unique texts of each domain, in a seeded order; and a manifest."""
    unknown = set(domains) - set(DOMAINS)
    if unknown:
        raise ValueError(f"unknown domains {sorted(unknown)}; known: {', '.join(DOMAINS)}")
    out: dict[str, list[str]] = {}
    info: dict = {}
    if "code" in domains or "docs" in domains:
        prose = prose_chunks() if "docs" in domains else []
        # ~1.3x the quota: deduplication and short blocks drop some
        n_code = int(1.3 * n_per_domain) if "code" in domains else 0
        n_docs = max(0, int(1.3 * n_per_domain) - len(prose)) if "docs" in domains else 0
        code, docs, n_files = code_and_docstrings(code_packages, n_code, n_docs, seed, jobs=jobs)
        info["python_source_files"] = n_files
        info["code_packages"] = list(code_packages)
        info["python"] = sys.version.split()[0]
        if "code" in domains:
            out["code"] = _dedup_shuffle(code, seed)[:n_per_domain]
        if "docs" in domains:
            out["docs"] = _dedup_shuffle(prose + docs, seed)[:n_per_domain]
    for d in domains:
        if d in ("web", "records"):
            # a few extra: Faker can repeat a short document
            texts = faker_texts(d, int(n_per_domain * 1.05) + 10, seed + zlib.crc32(d.encode()) % 1000)
            out[d] = _dedup_shuffle(texts, seed)[:n_per_domain]
        elif d == "pii":
            out[d] = _dedup_shuffle(pii_texts(n_per_domain, seed + 7), seed)[:n_per_domain]
    info["counts"] = {d: len(out[d]) for d in domains}
    return {d: out[d] for d in domains}, info
