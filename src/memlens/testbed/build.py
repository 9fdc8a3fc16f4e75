"""Build the testbed's data: members, non-members and population, split by construction.

Layout of ``out_dir`` after :func:`build_testbed`::

    members.jsonl          label 1, with a repetition tier (1x / 4x / 16x by default)
    nonmembers.jsonl       label 0: same distribution, never trained on by the target
    population.jsonl       label null: for reference models and RMIA's z samples
    finetune_corpus.jsonl  the target's fine-tuning stream: a tier-k member appears k times
                           (``source: "member"``), mixed with filler documents of other,
                           never audited profiles (``source: "filler"``, label null)
    pretrain_corpus.jsonl  the base model's data: real prose + documents of background profiles
    profiles.jsonl         every profile with the split it belongs to (ground truth)
    manifest.json          seed, config, counts, file hashes and versions

and, after :func:`memlens.testbed.train.train_models`, ``models/{tokenizer,base,target,ref_pop*}``.

Every document is about its own profile and no two profiles share an identifying value, so the
PII of a non-member (or of a population sample) never occurs in the target's training data: the
split is exact, not estimated. Background (pretraining) and filler profiles are drawn from the
same generator, so they are disjoint from all audited profiles too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from memlens._io import atomic_write, read_jsonl, write_jsonl  # noqa: F401  (re-exported: the testbed's readers import them from here)

from .corpus import public_text_chunks
from .documents import DOC_KINDS, make_document
from .profiles import Profile, ProfileGenerator

FORMAT = "memlens-testbed/1"

# File names, kept in one place so that TestbedPaths and the writer cannot disagree.
MEMBERS, NONMEMBERS, POPULATION = "members.jsonl", "nonmembers.jsonl", "population.jsonl"
FINETUNE, PRETRAIN, PROFILES, MANIFEST = (
    "finetune_corpus.jsonl",
    "pretrain_corpus.jsonl",
    "profiles.jsonl",
    "manifest.json",
)


@dataclass
class TestbedConfig:
    """Everything that determines a testbed: data sizes, tokenizer, model and training.

    ``TestbedConfig()`` is the default (144 members, non-members and population samples; about
    3 to 5 minutes on 2 CPU cores); :meth:`quick` is the small one (48 of each; under a minute
    on 2 idle cores). Both memorize the 16x tier clearly: greedy decoding reproduces most of its
    PII, while the base model and non-members give none.
    """

    __test__ = False  # not a pytest test class, despite the name

    # -- data ----------------------------------------------------------------------------------
    seed: int = 0
    members_per_tier: int = 48
    tiers: tuple[int, ...] = (1, 4, 16)
    n_nonmembers: int | None = None  # None: as many as there are members
    n_population: int | None = None  # None: as many as there are members
    kinds: tuple[str, ...] = DOC_KINDS
    # Pretraining data: documents of the same kinds about background (never audited) profiles,
    # which teaches the base model the templates so that it is a good calibrator, plus real prose.
    n_background_docs: int = 1500
    public_text_chars: int = 120_000
    public_text_files: tuple[str, ...] = ()
    # Filler: documents of other (never audited) profiles mixed once into the fine-tuning
    # stream, this many per member occurrence. Without them the target fits the few member
    # documents so tightly that it gets worse on everything else (non-member NLL rises far
    # above the base's), which makes even the 1x tier trivially separable; real fine-tuning
    # sets are mostly other data.
    finetune_filler_ratio: float = 1.0
    # -- tokenizer (byte-level BPE trained on the pretraining corpus only) ---------------------
    vocab_size: int = 3000
    # -- model (Llama architecture) ------------------------------------------------------------
    n_layer: int = 4
    d_model: int = 192
    n_head: int = 4
    d_ff: int = 512
    context: int = 256
    # -- training --------------------------------------------------------------------------------
    # Small batches throughout: tiny models on little data learn more per token from more
    # updates, and in fine-tuning each exposure of a member then weighs more in its update.
    batch_size: int = 4  # pretraining
    pretrain_epochs: int = 4
    pretrain_lr: float = 3e-3
    # The fine-tuning stream is traversed finetune_epochs times, so a tier-k member is seen
    # k * finetune_epochs times in all (the manifest records this as "exposures").
    finetune_epochs: int = 3
    finetune_lr: float = 2e-3
    finetune_batch_size: int = 4
    warmup_frac: float = 0.05
    weight_decay: float = 0.01
    n_reference_models: int = 0  # reference models fine-tuned from base on population halves

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so configs stay hashable/comparable.
        self.tiers = tuple(int(t) for t in self.tiers)
        self.kinds = tuple(self.kinds)
        self.public_text_files = tuple(str(f) for f in self.public_text_files)
        if not self.tiers or min(self.tiers) < 1:
            raise ValueError("tiers must be positive repetition counts")
        unknown = set(self.kinds) - set(DOC_KINDS)
        if unknown:
            raise ValueError(f"unknown document kinds {sorted(unknown)}; known: {DOC_KINDS}")
        if self.d_model % self.n_head:
            raise ValueError("d_model must be divisible by n_head")

    @classmethod
    def quick(cls, **overrides: Any) -> TestbedConfig:
        """Small testbed: 16 members per tier, 48 non-members, 48 population; tiny model."""
        base = {
            "members_per_tier": 16,
            "n_background_docs": 600,
            "public_text_chars": 60_000,
            "vocab_size": 2048,
            "n_layer": 2,
            "d_model": 192,
            "n_head": 4,
            "d_ff": 512,
        }
        base.update(overrides)
        return cls(**base)

    @property
    def n_filler_docs(self) -> int:
        stream = self.members_per_tier * sum(self.tiers)
        return round(self.finetune_filler_ratio * stream)

    @property
    def n_members(self) -> int:
        return self.members_per_tier * len(self.tiers)

    @property
    def nonmember_count(self) -> int:
        return self.n_members if self.n_nonmembers is None else self.n_nonmembers

    @property
    def population_count(self) -> int:
        return self.n_members if self.n_population is None else self.n_population

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TestbedConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class TestbedPaths:
    """Where a testbed's files are. Every path derives from ``root``: ``TestbedPaths(dir)``
    is all it takes to reopen a testbed built earlier."""

    __test__ = False

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    members = property(lambda self: self.root / MEMBERS)
    nonmembers = property(lambda self: self.root / NONMEMBERS)
    population = property(lambda self: self.root / POPULATION)
    finetune_corpus = property(lambda self: self.root / FINETUNE)
    pretrain_corpus = property(lambda self: self.root / PRETRAIN)
    profiles = property(lambda self: self.root / PROFILES)
    manifest = property(lambda self: self.root / MANIFEST)
    models = property(lambda self: self.root / "models")
    tokenizer = property(lambda self: self.models / "tokenizer")
    base = property(lambda self: self.models / "base")
    target = property(lambda self: self.models / "target")

    @property
    def references(self) -> list[Path]:
        """Population-trained reference models present on disk (``ref_pop0``, ``ref_pop1``...)."""
        if not self.models.is_dir():
            return []
        return sorted(
            (p for p in self.models.glob("ref_pop*") if p.is_dir()),
            key=lambda p: int(p.name.removeprefix("ref_pop") or 0),
        )

    def config(self) -> TestbedConfig:
        """The config this testbed was built with (from its manifest)."""
        return TestbedConfig.from_dict(json.loads(self.manifest.read_text())["config"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------
def _balanced_kinds(n: int, kinds: tuple[str, ...], rng: random.Random) -> list[str]:
    """``n`` kinds, as evenly spread as possible, in random order (per-kind analyses need each
    kind in each tier)."""
    out = [kinds[i % len(kinds)] for i in range(n)]
    rng.shuffle(out)
    return out


def _record(doc_id: str, doc, label: int | None, tier: int | None) -> dict:
    return {
        "id": doc_id,
        "text": doc.text,
        "label": label,
        "tier": tier,
        "kind": doc.kind,
        "profile_id": doc.profile_id,
        "pii": doc.pii,
    }


def build_testbed(out_dir: str | Path, config: TestbedConfig | None = None) -> TestbedPaths:
    """Write the testbed's data files (no model training; takes about a second).

    Args:
        out_dir: created if missing; existing testbed files in it are overwritten (models under
            ``out_dir/models`` are left alone: retrain them with ``train_models``).
        config: defaults to ``TestbedConfig()``; use ``TestbedConfig.quick()`` for the small one.

    Returns:
        The paths of everything written (and of the models :func:`train_models` will write).
    """
    cfg = config or TestbedConfig()
    paths = TestbedPaths(Path(out_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    seed = cfg.seed
    # One random stream per purpose, each derived from the seed by name, so that e.g. shuffling
    # the fine-tuning stream never changes which profile landed in which split.
    rng_split = random.Random(f"{seed}/split")
    rng_kind = random.Random(f"{seed}/kinds")
    rng_doc = random.Random(f"{seed}/documents")
    rng_stream = random.Random(f"{seed}/stream")

    gen = ProfileGenerator(seed)
    n_mem, n_non, n_pop = cfg.n_members, cfg.nonmember_count, cfg.population_count
    # Audited profiles are drawn as one pool and then split at random, so members, non-members
    # and population are exchangeable draws from one distribution.
    audited = gen.generate_many(n_mem + n_non + n_pop)
    rng_split.shuffle(audited)
    mem_p, non_p, pop_p = audited[:n_mem], audited[n_mem : n_mem + n_non], audited[n_mem + n_non :]
    background = gen.generate_many(cfg.n_background_docs)
    filler_p = gen.generate_many(cfg.n_filler_docs)

    # Members: tiers get equal shares; kinds balanced within each tier.
    members: list[dict] = []
    for t_idx, tier in enumerate(cfg.tiers):
        group = mem_p[t_idx * cfg.members_per_tier : (t_idx + 1) * cfg.members_per_tier]
        for p, kind in zip(group, _balanced_kinds(len(group), cfg.kinds, rng_kind)):
            doc = make_document(p, kind, rng_doc)
            members.append(_record(f"mem-{len(members):04d}", doc, 1, tier))
    nonmembers = [
        _record(f"non-{i:04d}", make_document(p, k, rng_doc), 0, None)
        for i, (p, k) in enumerate(zip(non_p, _balanced_kinds(n_non, cfg.kinds, rng_kind)))
    ]
    population = [
        _record(f"pop-{i:04d}", make_document(p, k, rng_doc), None, None)
        for i, (p, k) in enumerate(zip(pop_p, _balanced_kinds(n_pop, cfg.kinds, rng_kind)))
    ]

    # The fine-tuning stream: tier-k members k times each, plus filler documents once each,
    # shuffled so that repeats are spread out.
    filler = [
        dict(_record(f"fill-{i:04d}", make_document(p, k, rng_doc), None, None), source="filler")
        for i, (p, k) in enumerate(
            zip(filler_p, _balanced_kinds(len(filler_p), cfg.kinds, rng_kind))
        )
    ]
    stream = [dict(r, source="member", repeat=rep) for r in members for rep in range(r["tier"])] + [
        dict(r, repeat=0) for r in filler
    ]
    rng_stream.shuffle(stream)

    # Pretraining corpus of the base model: real prose + same-kind background documents.
    pretrain: list[dict] = []
    for i, text in enumerate(
        public_text_chunks(cfg.public_text_chars, seed=seed, extra_files=cfg.public_text_files)
    ):
        pretrain.append(
            {"id": f"pub-{i:05d}", "text": text, "source": "public", "kind": "prose",
             "profile_id": None, "pii": []}
        )  # fmt: skip
    bg_kinds = _balanced_kinds(len(background), cfg.kinds, rng_kind)
    for i, (p, k) in enumerate(zip(background, bg_kinds)):
        doc = make_document(p, k, rng_doc)
        pretrain.append(
            {"id": f"bg-{i:05d}", "text": doc.text, "source": "background", "kind": k,
             "profile_id": p.profile_id, "pii": doc.pii}
        )  # fmt: skip
    rng_stream.shuffle(pretrain)

    split_of = {p.profile_id: "member" for p in mem_p}
    split_of.update({p.profile_id: "nonmember" for p in non_p})
    split_of.update({p.profile_id: "population" for p in pop_p})
    split_of.update({p.profile_id: "background" for p in background})
    split_of.update({p.profile_id: "filler" for p in filler_p})
    all_profiles: list[Profile] = sorted(
        audited + background + filler_p, key=lambda p: p.profile_id
    )

    write_jsonl(paths.members, members)
    write_jsonl(paths.nonmembers, nonmembers)
    write_jsonl(paths.population, population)
    write_jsonl(paths.finetune_corpus, stream)
    write_jsonl(paths.pretrain_corpus, pretrain)
    write_jsonl(
        paths.profiles, ({"split": split_of[p.profile_id], **p.to_dict()} for p in all_profiles)
    )

    def kind_counts(records: list[dict]) -> dict[str, int]:
        return dict(sorted(Counter(r["kind"] for r in records).items()))

    manifest = {
        "format": FORMAT,
        "seed": seed,
        "config": cfg.to_dict(),
        "counts": {
            "members": len(members),
            "members_by_tier": {str(t): cfg.members_per_tier for t in cfg.tiers},
            # Times the target sees each member of a tier during fine-tuning.
            "exposures_by_tier": {str(t): t * cfg.finetune_epochs for t in cfg.tiers},
            "nonmembers": len(nonmembers),
            "population": len(population),
            "finetune_corpus": len(stream),
            "finetune_filler": len(filler),
            "pretrain_corpus": {
                "public": sum(r["source"] == "public" for r in pretrain),
                "background": sum(r["source"] == "background" for r in pretrain),
            },
            "profiles": len(all_profiles),
        },
        "kinds": {
            "members": kind_counts(members),
            "nonmembers": kind_counts(nonmembers),
            "population": kind_counts(population),
        },
        "files": {
            name: _sha256(paths.root / name)
            for name in (MEMBERS, NONMEMBERS, POPULATION, FINETUNE, PRETRAIN, PROFILES)
        },
        # Faker's output for a seed can change between its releases; record what made the data.
        "versions": {"faker": metadata.version("faker")},
    }
    atomic_write(paths.manifest, json.dumps(manifest, indent=2) + "\n", fsync=False)
    return paths
