"""Canaries and their exposure (Carlini et al., "The Secret Sharer", USENIX Security 2019).

A canary is a text made from a format template with random *slots*, e.g. ``"my SSN is
{ddd-dd-dddd}"``. Some canaries are inserted into the training data at chosen repetition counts,
others are kept out (held-out: exposure near 0 is what an unmemorized secret looks like). After
training, a canary's exposure is

    exposure = log2 |R| - log2 rank

where R is the set of every filling of the template's slots and rank is the position of the
inserted filling when all of R is sorted by the model's log-perplexity (1 = the model prefers the
inserted secret over every other candidate: exposure = log2 |R|, the maximum).

Slot syntax (inside ``{...}``; ``{{`` and ``}}`` are literal braces):

* ``d`` a digit 0-9, ``a`` a lowercase letter, ``A`` an uppercase letter, ``h`` a hex digit 0-9a-f;
* the separators ``-``, ``.``, ``/``, ``:``, ``_``, ``+``, ``(``, ``)``, ``#``, ``@`` and space
  are kept as written (``{ddd-dd-dddd}``);
* ``{word1|word2|...}`` is an explicit choice of one of the listed words (at least two, distinct);
* ``{=...}`` (any of the above after ``=``) is a *context* slot: drawn once per canary and kept
  fixed when ranking, so R is the fillings of the other (secret) slots only. Several canaries of
  one template without context slots compete: each one's secret is a candidate of the others (the
  k-th most repeated cannot get more than log2|R| − log2 k); a context slot such as
  ``"{=Aaaaa}'s PIN is {dddd}"`` gives each canary its own prefix, as the paper's one canary has.

Anything else inside a slot is an error, so a typo does not silently become a literal.
"""
from __future__ import annotations

import json
import math
import os
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memlens.data import DataError

SLOT_CLASSES = {"d": string.digits, "a": string.ascii_lowercase, "A": string.ascii_uppercase, "h": "0123456789abcdef"}
SLOT_SEPARATORS = set("-./:_+()#@ ")
MANIFEST_FORMAT = "memlens-canaries/1"
DEFAULT_MAX_ENUMERATE = 20_000  # spaces up to this size are ranked exactly; larger ones are extrapolated
DEFAULT_N_SAMPLES = 2_000  # candidates sampled for the extrapolated estimate


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    """A parsed template: a sequence of literal strings and random positions.

    ``positions`` holds, per random position, its options (single characters or choice words);
    ``parts`` interleaves literal strings with ints (the index of a position); ``context`` flags
    the positions of context slots (fixed per canary, not ranked over).
    """

    source: str
    parts: tuple[str | int, ...]
    positions: tuple[tuple[str, ...], ...]
    context: tuple[bool, ...]

    @classmethod
    def parse(cls, source: str) -> Template:
        if not isinstance(source, str) or not source.strip():
            raise DataError("canary template is empty")
        parts: list[str | int] = []
        positions: list[tuple[str, ...]] = []
        context: list[bool] = []
        lit: list[str] = []
        i, n = 0, len(source)
        while i < n:
            c = source[i]
            if source.startswith("{{", i) or source.startswith("}}", i):
                lit.append(c)
                i += 2
                continue
            if c == "}":
                raise DataError(f"canary template {source!r}: '}}' at character {i} closes no slot (write '}}}}' for a literal brace)")
            if c != "{":
                lit.append(c)
                i += 1
                continue
            j = source.find("}", i + 1)
            if j < 0:
                raise DataError(f"canary template {source!r}: the slot opened at character {i} is not closed with '}}'")
            body = source[i + 1:j]
            is_context = body.startswith("=")
            body = body[1:] if is_context else body
            if lit:
                parts.append("".join(lit))
                lit = []
            for item in _parse_slot(source, body):
                if isinstance(item, str):
                    parts.append(item)
                else:
                    parts.append(len(positions))
                    positions.append(item)
                    context.append(is_context)
            i = j + 1
        if lit:
            parts.append("".join(lit))
        if all(context):
            raise DataError(f"canary template {source!r} has no secret slot; mark the secret with {{...}}, e.g. 'my PIN is {{dddd}}'")
        # merge adjacent literals (a separator inside a slot next to template text)
        merged: list[str | int] = []
        for p in parts:
            if isinstance(p, str) and merged and isinstance(merged[-1], str):
                merged[-1] = merged[-1] + p
            else:
                merged.append(p)
        return cls(source, tuple(merged), tuple(positions), tuple(context))

    def _sizes(self, context: bool) -> list[int]:
        return [len(p) for p, c in zip(self.positions, self.context) if c == context]

    @property
    def size(self) -> int:
        """|R|: the number of distinct fillings of the secret slots."""
        return math.prod(self._sizes(False))

    @property
    def context_size(self) -> int:
        """The number of distinct fillings of the context slots (1 without any)."""
        return math.prod(self._sizes(True))

    def _digits(self, index: int, context: bool) -> list[int]:
        """The option chosen at each secret (or context) position for ``index`` (mixed radix, last fastest)."""
        sizes = self._sizes(context)
        total = math.prod(sizes)
        if not 0 <= index < total:
            raise DataError(f"{'context' if context else 'filling'} index {index} is outside 0..{total - 1}")
        out = []
        for n in reversed(sizes):
            index, r = divmod(index, n)
            out.append(r)
        return out[::-1]

    def _choices(self, index: int, context_index: int) -> list[str]:
        sec, ctx = iter(self._digits(index, False)), iter(self._digits(context_index, True))
        return [opts[next(ctx) if c else next(sec)] for opts, c in zip(self.positions, self.context)]

    def fill(self, index: int, context_index: int = 0) -> str:
        """The text with secret filling ``index`` and context filling ``context_index``."""
        choice = self._choices(index, context_index)
        return "".join(p if isinstance(p, str) else choice[p] for p in self.parts)

    def secret(self, index: int) -> str:
        """The secret part only: every secret position's option, in order."""
        choice = self._choices(index, 0)
        return "".join(ch for ch, c in zip(choice, self.context) if not c)


def _parse_slot(source: str, body: str) -> list[str | tuple[str, ...]]:
    if not body:
        raise DataError(f"canary template {source!r}: empty slot {{}}")
    if body.startswith("="):
        raise DataError(f"canary template {source!r}: slot {{={body}}} has two '='")
    if "|" in body:
        words = body.split("|")
        if any(not w for w in words):
            raise DataError(f"canary template {source!r}: empty choice in slot {{{body}}}")
        if len(set(words)) != len(words):
            raise DataError(f"canary template {source!r}: repeated choice in slot {{{body}}}")
        return [tuple(words)]
    out: list[str | tuple[str, ...]] = []
    for c in body:
        if c in SLOT_CLASSES:
            out.append(tuple(SLOT_CLASSES[c]))
        elif c in SLOT_SEPARATORS:
            out.append(c)
        else:
            raise DataError(f"canary template {source!r}: {c!r} in slot {{{body}}} is not d, a, A, h, a separator "
                            f"({''.join(sorted(SLOT_SEPARATORS))!r}) or a choice list 'x|y'")
    if not any(isinstance(x, tuple) for x in out):
        raise DataError(f"canary template {source!r}: slot {{{body}}} holds only separators, nothing random")
    return out


# --------------------------------------------------------------------------------------------
# Making canaries, the manifest
# --------------------------------------------------------------------------------------------
@dataclass
class Canary:
    id: str
    template: str
    index: int  # the filling of the template's secret slots (Template.fill(index, context) == text)
    text: str
    secret: str
    repetitions: int  # copies inserted into the training data; 0 = held out
    context: int = 0  # the filling of the template's context slots

    @property
    def inserted(self) -> bool:
        return self.repetitions > 0


@dataclass
class Manifest:
    canaries: list[Canary]
    seed: int
    templates: list[str]
    insertions: dict[str, Any] = field(default_factory=dict)  # set by insert(): file, lines of each copy

    def to_dict(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, "seed": self.seed, "templates": self.templates,
                "canaries": [{**c.__dict__, "inserted": c.inserted} for c in self.canaries],
                **({"insertions": self.insertions} if self.insertions else {})}

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{p}: no such canary manifest") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: not a canary manifest (invalid JSON: {e.msg})") from None
        if not isinstance(d, dict) or d.get("format") != MANIFEST_FORMAT:
            raise DataError(f"{p}: not a canary manifest (expected format {MANIFEST_FORMAT!r}; write one with `memlens canary make`)")
        keys = ("id", "template", "index", "text", "secret", "repetitions", "context")
        cans = [Canary(**{k: c[k] for k in keys if k in c}) for c in d["canaries"]]
        return cls(cans, int(d["seed"]), list(d["templates"]), dict(d.get("insertions") or {}))

    def inserted(self) -> list[Canary]:
        return [c for c in self.canaries if c.inserted]

    def held_out(self) -> list[Canary]:
        return [c for c in self.canaries if not c.inserted]


def make_canaries(templates: str | Sequence[str], repetitions: Sequence[int] = (1, 4, 16), *, per_count: int = 1,
                  held_out: int | None = None, seed: int = 0) -> Manifest:
    """Canaries from ``templates``: for each template, ``per_count`` canaries per repetition count
    (to be inserted that many times) and ``held_out`` canaries kept out of training (default: as
    many as one repetition count gets). All fillings within a template are distinct."""
    templates = [templates] if isinstance(templates, str) else list(templates)
    if not templates:
        raise DataError("no canary template given")
    reps = list(repetitions)
    if not reps or any(not isinstance(r, (int, np.integer)) or isinstance(r, bool) or r < 1 for r in reps):
        raise DataError(f"repetition counts must be positive integers, got {reps}")
    if len(set(reps)) != len(reps):
        raise DataError(f"repeated repetition count in {reps}")
    if per_count < 1:
        raise DataError(f"canaries per repetition count must be at least 1, got {per_count}")
    n_held = per_count if held_out is None else held_out
    if n_held < 0:
        raise DataError(f"held-out canaries must be 0 or more, got {n_held}")
    rng = random.Random(seed)
    canaries: list[Canary] = []
    for t_i, src in enumerate(templates):
        t = Template.parse(src)
        counts = [int(r) for r in reps for _ in range(per_count)] + [0] * n_held
        if len(counts) > t.size:
            raise DataError(f"canary template {src!r} has {t.size} fillings, fewer than the {len(counts)} canaries asked for")
        indices = rng.sample(range(t.size), len(counts))  # distinct; range() keeps huge spaces cheap
        # distinct contexts where there are enough, so canaries do not share a prefix
        contexts = (rng.sample(range(t.context_size), len(counts)) if t.context_size >= len(counts)
                    else [rng.randrange(t.context_size) for _ in counts])
        for k, (idx, ctx, r) in enumerate(zip(indices, contexts, counts)):
            canaries.append(Canary(f"canary-{t_i}-{k}", src, idx, t.fill(idx, ctx), t.secret(idx), r, ctx))
    return Manifest(canaries, seed, templates)


# --------------------------------------------------------------------------------------------
# Inserting canaries into a training file
# --------------------------------------------------------------------------------------------
def insert(manifest: Manifest, train_path: str | os.PathLike, out_path: str | os.PathLike, *, seed: int = 0,
           text_field: str = "text", max_fraction: float = 0.5) -> Manifest:
    """Write ``out_path``: the training file with every inserted canary's ``repetitions`` copies at
    seeded random places (one record / line each). Records ``insertions`` in the manifest.

    ``.jsonl`` gets records ``{text_field: canary}``; ``.txt`` (one text per line) gets lines.
    Canary copies may be at most ``max_fraction`` of the output, so that training stays about the
    original data; more is an error rather than a silently different experiment.
    """
    src, out = Path(train_path), Path(out_path)
    suffix = src.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".txt"):
        raise DataError(f"{src}: canaries go into a .jsonl or .txt training file, not {suffix or 'a file without suffix'!r}")
    if out.suffix.lower() != suffix:
        raise DataError(f"{out}: write the output with the input's suffix ({suffix})")
    if src.resolve() == out.resolve():
        raise DataError(f"{out}: the output must not overwrite the training file")
    try:
        lines = src.read_bytes().decode("utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"{src}: no such file") from None
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise DataError(f"{src}: holds no records")
    if suffix != ".txt":
        try:
            first = json.loads(lines[0])
        except json.JSONDecodeError as e:
            raise DataError(f"{src}:1: invalid JSON ({e.msg})") from None
        if not isinstance(first, dict) or text_field not in first:
            raise DataError(f"{src}:1: no {text_field!r} field; pass the text field name")
    copies = [c for c in manifest.inserted() for _ in range(c.repetitions)]
    if not copies:
        raise DataError("the manifest has no canary to insert (all are held out)")
    total = len(lines) + len(copies)
    if len(copies) > max_fraction * total:
        raise DataError(f"{len(copies)} canary copies do not fit {src} ({len(lines)} records): they would be "
                        f"{len(copies) / total:.0%} of the training data (at most {max_fraction:.0%}); "
                        "use lower repetition counts, fewer canaries or a larger file")
    if suffix == ".txt" and any("\n" in c.text or "\r" in c.text for c in manifest.inserted()):
        raise DataError(f"{src}: a .txt training file holds one text per line, and a canary contains a line break")
    rng = random.Random(seed)
    slots = sorted(rng.sample(range(total), len(copies)))
    order = list(range(len(copies)))
    rng.shuffle(order)  # which copy goes to which chosen line
    at = dict(zip(slots, (copies[k] for k in order)))
    out_lines, src_i, where = [], 0, {}
    for pos in range(total):
        if pos in at:
            c = at[pos]
            out_lines.append(c.text if suffix == ".txt" else json.dumps({text_field: c.text}, ensure_ascii=False))
            where.setdefault(c.id, []).append(pos + 1)
        else:
            out_lines.append(lines[src_i])
            src_i += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(out_lines) + "\n", encoding="utf-8")
    manifest.insertions = {"source": str(src), "output": str(out), "seed": seed, "n_records": total, "lines": where}
    return manifest


# --------------------------------------------------------------------------------------------
# Scoring candidates
# --------------------------------------------------------------------------------------------
def sequence_logprobs(model, tokenizer, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
    """Total natural-log likelihood of each text under a causal LM (sum over its tokens).

    The tokenizer's BOS token (or, without one, its EOS token) is put first so that the first
    text token is scored too; the texts run right-padded in batches with no gradient.
    """
    import torch

    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (start or 0)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    if start is not None:
        ids = [[start, *x] for x in ids]
    device = next(model.parameters()).device
    out = np.empty(len(ids), dtype=np.float64)
    # sort by length so batches pad little; results go back to the input order
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in range(0, len(order), batch_size):
                idx = order[b:b + batch_size]
                n = max(len(ids[i]) for i in idx)
                x = torch.full((len(idx), n), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), n), dtype=torch.long)
                for r, i in enumerate(idx):
                    x[r, :len(ids[i])] = torch.tensor(ids[i])
                    mask[r, :len(ids[i])] = 1
                x, mask = x.to(device), mask.to(device)
                logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
                lp = torch.log_softmax(logits, dim=-1).gather(-1, x[:, 1:, None])[..., 0]
                tot = (lp * mask[:, 1:]).sum(-1).cpu().numpy()
                out[idx] = tot
    finally:
        model.train(was_training)
    return out


# --------------------------------------------------------------------------------------------
# Exposure
# --------------------------------------------------------------------------------------------
Scorer = Callable[[Sequence[str]], np.ndarray]  # texts -> total log-likelihood (nats), higher = more likely


def exposure_exact(secret_logppl: float, candidate_logppl: np.ndarray, space_size: int) -> tuple[float, float]:
    """Exposure and rank from the log-perplexities of the whole candidate space (which includes the
    secret itself). rank = 1 + #candidates with a lower log-perplexity + half the other candidates
    tied with it (mid-rank: a model that cannot tell candidates apart must not get the maximum)."""
    cand = np.asarray(candidate_logppl, dtype=np.float64)
    if len(cand) != space_size:
        raise DataError(f"exact exposure needs all {space_size} candidates, got {len(cand)}")
    below = int((cand < secret_logppl).sum())
    ties = int((cand == secret_logppl).sum()) - 1  # the secret itself is among the candidates
    rank = 1 + below + 0.5 * max(ties, 0)
    return math.log2(space_size) - math.log2(rank), rank


def exposure_extrapolated(secret_logppl: float, sample_logppl: np.ndarray) -> tuple[float, dict[str, float]]:
    """Exposure estimated from a uniform sample of candidates (The Secret Sharer, sec. 4.3):
    fit a skew-normal to the sampled log-perplexities and read rank/|R| off its CDF at the
    secret's log-perplexity: exposure = −log2 CDF(secret). The fitted parameters are returned.

    Being read off a fitted tail, the estimate is not bounded by log2|R| (the exact value is): a
    secret far more likely than every sampled candidate gets more than log2|R|, which says "ranked
    first, by a wide margin" and keeps strongly memorized canaries apart instead of tying them."""
    from scipy import stats

    x = np.asarray(sample_logppl, dtype=np.float64)
    if len(x) < 20:
        raise DataError(f"the extrapolated exposure needs at least 20 sampled candidates, got {len(x)}")
    a, loc, scale = stats.skewnorm.fit(x)
    # logsf/logcdf: the far left tail of a well-memorized secret underflows a plain cdf to 0
    log_cdf = float(stats.skewnorm.logcdf(secret_logppl, a, loc, scale))
    return -log_cdf / math.log(2), {"a": float(a), "loc": float(loc), "scale": float(scale)}


@dataclass
class CanaryExposure:
    id: str
    repetitions: int
    exposure: float
    rank: float | None  # exact (mid-)rank; None for the extrapolated estimate
    space_size: int
    method: str  # "exact" or "extrapolated"
    log_perplexity: float  # the secret's, in bits

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ExposureResult:
    canaries: list[CanaryExposure]
    settings: dict[str, Any]

    def by_repetition(self) -> dict[int, dict[str, float]]:
        """Per repetition count (0 = held out): mean, median, min, max exposure and the count."""
        out: dict[int, dict[str, float]] = {}
        for r in sorted({c.repetitions for c in self.canaries}):
            e = np.array([c.exposure for c in self.canaries if c.repetitions == r])
            out[r] = {"n": len(e), "mean": float(e.mean()), "median": float(np.median(e)),
                      "min": float(e.min()), "max": float(e.max())}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "canaries": [c.to_dict() for c in self.canaries],
                "by_repetition": {str(k): v for k, v in self.by_repetition().items()}}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON (``exposure.json``)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return p


def exposure(manifest: Manifest, scorer: Scorer, *, method: str = "auto", max_enumerate: int = DEFAULT_MAX_ENUMERATE,
             n_samples: int = DEFAULT_N_SAMPLES, seed: int = 0) -> ExposureResult:
    """Exposure of every canary in ``manifest`` (inserted and held out).

    ``scorer`` maps texts to their total log-likelihood (nats); use :func:`model_scorer` for a
    causal LM. ``method``: "exact" ranks among every filling of the template's secret slots
    (|R| scored), "extrapolated" fits the skew-normal to ``n_samples`` random fillings, "auto" is
    exact up to ``max_enumerate`` fillings. Candidates are scored once per (template, context)
    and shared by the canaries that have both.
    """
    if method not in ("auto", "exact", "extrapolated"):
        raise DataError(f"exposure method must be auto, exact or extrapolated, got {method!r}")
    ln2 = math.log(2)
    rows: list[CanaryExposure] = []
    for src, ctx in dict.fromkeys((c.template, c.context) for c in manifest.canaries):
        t = Template.parse(src)
        mine = [c for c in manifest.canaries if c.template == src and c.context == ctx]
        m = method if method != "auto" else ("exact" if t.size <= max_enumerate else "extrapolated")
        if m == "exact":
            if t.size > 10 * max_enumerate and method == "exact":
                raise DataError(f"template {src!r} has {t.size} fillings: too many to rank exactly (use the extrapolated estimate)")
            cand = -np.asarray(scorer([t.fill(i, ctx) for i in range(t.size)]), dtype=np.float64) / ln2
            for c in mine:  # the secret's score is its own candidate's, from the same batch run
                e, rank = exposure_exact(float(cand[c.index]), cand, t.size)
                rows.append(CanaryExposure(c.id, c.repetitions, e, rank, t.size, "exact", float(cand[c.index])))
        else:
            rng = random.Random(seed)
            sample = rng.sample(range(t.size), min(n_samples, t.size))
            cand = -np.asarray(scorer([t.fill(i, ctx) for i in sample]), dtype=np.float64) / ln2
            secret_lp = -np.asarray(scorer([c.text for c in mine]), dtype=np.float64) / ln2
            for c, s in zip(mine, secret_lp):
                e, _fit = exposure_extrapolated(float(s), cand)
                rows.append(CanaryExposure(c.id, c.repetitions, e, None, t.size, "extrapolated", float(s)))
    settings = {"method": method, "max_enumerate": max_enumerate, "n_samples": n_samples, "seed": seed}
    return ExposureResult(rows, settings)


def model_scorer(model, tokenizer, *, batch_size: int = 256) -> Scorer:
    """A :data:`Scorer` from an in-memory causal LM and its tokenizer."""
    return lambda texts: sequence_logprobs(model, tokenizer, texts, batch_size=batch_size)


def model_exposure(model, tokenizer, manifest: Manifest, **kwargs: Any) -> ExposureResult:
    """:func:`exposure` of ``manifest``'s canaries under a causal LM."""
    batch_size = kwargs.pop("batch_size", 256)
    return exposure(manifest, model_scorer(model, tokenizer, batch_size=batch_size), **kwargs)


def target_exposure(target: Any, manifest: Manifest | str | os.PathLike, *, tokenizer: Any = None, base: Any = None,
                    gguf_file: str | None = None, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False,
                    allow_pickle: bool = False, batch_size: int = 256, **kwargs: Any) -> ExposureResult:
    """:func:`exposure` for any memlens target: an in-memory model (with ``tokenizer``), a model
    directory, ``.gguf`` file or hub id, or a PEFT adapter directory (on its base, or ``base``)."""
    import torch

    from memlens.models.adapters import is_adapter_dir, load_adapter
    from memlens.models.loading import load_model, load_tokenizer, resolve_model

    if not isinstance(manifest, Manifest):
        manifest = Manifest.load(manifest)
    if isinstance(target, torch.nn.Module):
        if tokenizer is None:
            raise DataError("an in-memory model needs its tokenizer (tokenizer=...)")
        model = target
    elif is_adapter_dir(target):
        model, tok = load_adapter(target, base, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                  allow_pickle=allow_pickle)
        tokenizer = tokenizer or tok
    else:
        ms = resolve_model(target, gguf_file=gguf_file, allow_pickle=allow_pickle)
        model = load_model(ms, device=device, dtype=dtype, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        tokenizer = tokenizer or load_tokenizer(ms, trust_remote_code=trust_remote_code)
    result = model_exposure(model, tokenizer, manifest, batch_size=batch_size, **kwargs)
    result.settings["target"] = getattr(target, "name_or_path", None) or (str(target) if not isinstance(target, torch.nn.Module)
                                                                          else type(target).__name__)
    return result
