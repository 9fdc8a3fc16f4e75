"""A tiny masked diffusion LM testbed with ground-truth membership (for SAMA and the DLM baselines).

A small bidirectional transformer (``BertForMaskedLM``, no next-sentence head, byte-level BPE)
trained with the masked-diffusion objective of LLaDA / MDLM: per sequence draw a ratio
``r ~ U(0, 1)`` (floored at ``min_ratio``), mask each text token with probability r, and take the
cross-entropy on the masked tokens, weighted by 1/r and normalised by the sequence length
(``weighting="llada"``, an ELBO) or plainly averaged over masked tokens (``weighting="plain"``).

The testbed: a *reference* pretrained from scratch, then a *target* = the reference fine-tuned on
the members (each repeated 1x, 4x or 16x per epoch: repetition tiers). Two conditions:

* ``no-shift``: the reference is pretrained on same-domain documents (other people's bios),
* ``shift``: the reference is pretrained on another domain (other genres of text), so fine-tuning also
  adapts the target to the domain, which raises the target's likelihood of non-members too.

:func:`train_masked_diffusion` takes plain lists of texts and any ``PreTrainedTokenizerFast`` with a
mask token (:func:`add_mask_token` adds one), so it can be fed the PII corpus of
:mod:`memlens.testbed` (members / non-members / population JSONL) as well. The synthetic corpora
here (:func:`synthetic_bios`, :func:`other_domain_texts`) are Faker-based and only for the
self-contained experiment (``python -m memlens.testbed.diffusion``).
"""
from __future__ import annotations

import datetime as _dt
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from memlens.testbed.profiles import REFERENCE_DATE

MASK_TOKEN = "<|mask|>"
EOT = "<|endoftext|>"
CONDITIONS = ("no-shift", "shift")


# --------------------------------------------------------------------------------------------
# Tokenizer and model
# --------------------------------------------------------------------------------------------
def add_mask_token(tokenizer: Any, token: str = MASK_TOKEN) -> Any:
    """Give ``tokenizer`` a mask token (and a pad token) if it has none; returns it (modified in place).

    A model trained with this tokenizer must have ``len(tokenizer)`` embeddings.
    """
    if tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": token})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.mask_token
    return tokenizer


def train_tokenizer(texts: Sequence[str], vocab_size: int = 1024) -> Any:
    """A byte-level BPE tokenizer on ``texts`` with ``<|endoftext|>`` (pad/bos/eos) and a mask token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(list(texts), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT, MASK_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=EOT, eos_token=EOT, pad_token=EOT, mask_token=MASK_TOKEN)


def make_model(tokenizer: Any, *, hidden: int = 128, layers: int = 2, heads: int = 4, intermediate: int = 256,
               max_positions: int = 128, dropout: float = 0.0, seed: int = 0) -> torch.nn.Module:
    """A small bidirectional transformer with an MLM head (BertForMaskedLM), randomly initialised."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=intermediate, max_position_embeddings=max_positions, type_vocab_size=1,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                     pad_token_id=tokenizer.pad_token_id)
    return BertForMaskedLM(cfg)


# --------------------------------------------------------------------------------------------
# The masked-diffusion objective
# --------------------------------------------------------------------------------------------
@dataclass
class TrainLog:
    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[tuple[list[int], list[int]]]:
    out = []
    for t in texts:
        enc = tokenizer(t, add_special_tokens=True, truncation=True, max_length=max_length, return_special_tokens_mask=True)
        out.append((list(enc["input_ids"]), list(enc["special_tokens_mask"])))
    return out


def masked_logits(model: torch.nn.Module, inputs: torch.Tensor, attn: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Logits [n_masked, V] at the masked positions only.

    For a ``BertForMaskedLM`` the MLM head runs on the masked positions alone (the same numbers as
    the full forward's, at about half the cost for a tiny model, whose head is as large as its
    body); any other model runs whole and its logits are indexed.
    """
    bert, cls = getattr(model, "bert", None), getattr(model, "cls", None)
    if bert is not None and cls is not None:
        hidden = bert(input_ids=inputs, attention_mask=attn).last_hidden_state
        return cls(hidden[masked])
    return model(input_ids=inputs, attention_mask=attn).logits[masked]


def diffusion_loss(model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor, maskable: torch.Tensor, mask_id: int,
                   generator: torch.Generator, *, weighting: str = "llada", min_ratio: float = 1e-3) -> torch.Tensor:
    """The random-ratio masking loss of one batch (ids/attn/maskable: [B, n])."""
    # The random masks are drawn on the CPU (``generator`` is a CPU generator), so a seed gives the
    # same masks on every device; the batch then moves to the model's device.
    b = ids.shape[0]
    ids, maskable = ids.cpu(), maskable.cpu()
    ratio = min_ratio + (1 - min_ratio) * torch.rand(b, 1, generator=generator)
    masked = (torch.rand(ids.shape, generator=generator) < ratio) & maskable
    none = ~masked.any(dim=1) & maskable.any(dim=1)
    for r in torch.nonzero(none).flatten().tolist():  # at least one masked token per sequence
        cand = torch.nonzero(maskable[r]).flatten()
        masked[r, cand[torch.randint(len(cand), (1,), generator=generator)]] = True
    dev = next(model.parameters()).device
    ids, attn, maskable, masked, ratio = (t.to(dev) for t in (ids, attn, maskable, masked, ratio))
    inputs = ids.masked_fill(masked, mask_id)
    ce = torch.nn.functional.cross_entropy(masked_logits(model, inputs, attn, masked), ids[masked], reduction="none")
    if weighting == "plain":
        return ce.mean()
    if weighting != "llada":
        raise ValueError(f"weighting must be llada or plain, got {weighting!r}")
    rows = torch.nonzero(masked)[:, 0]
    per_seq = torch.zeros(b, device=dev, dtype=ce.dtype).index_add_(0, rows, ce / ratio[rows, 0])
    return (per_seq / maskable.sum(dim=1).clamp(min=1)).mean()


def epoch_order(lengths: Sequence[int], batch_size: int, rng: random.Random, bucket: int = 0) -> list[int]:
    """One epoch's order of the texts (indices into ``lengths``): a shuffle, each text once.

    ``bucket`` > 0: the shuffled order is cut into chunks of ``bucket * batch_size`` texts, each
    chunk sorted by length and cut into batches, and the batches shuffled, so that consecutive
    ``batch_size`` texts have similar lengths (less padding) while every epoch stays a random
    permutation of the texts.
    """
    perm = list(range(len(lengths)))
    rng.shuffle(perm)
    if bucket <= 0:
        return perm
    span = bucket * batch_size
    batches = []
    for c in range(0, len(perm), span):
        chunk = sorted(perm[c:c + span], key=lambda i: lengths[i])
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return [i for b in batches for i in b]


def train_masked_diffusion(model: torch.nn.Module, texts: Sequence[str], tokenizer: Any, *, epochs: float = 1.0,
                           lr: float = 1e-3, batch_size: int = 32, max_length: int | None = None, weighting: str = "llada",
                           min_ratio: float = 1e-3, warmup: float = 0.05, weight_decay: float = 0.01, seed: int = 0,
                           log_every: int = 0, progress: bool | str = False, bucket: int = 0) -> TrainLog:
    """Train ``model`` in place with the masked-diffusion objective on ``texts`` (each text one sequence).

    ``texts`` may repeat (repetition tiers); they are shuffled every epoch. ``tokenizer`` needs a mask
    token (see :func:`add_mask_token`); its special tokens are never masked. Linear warmup then
    linear decay of the learning rate. Texts are cut to ``max_length`` tokens (default: the model's
    context). The model trains on the device it is on (the random masks are drawn on the CPU, so
    a seed gives the same masks everywhere). ``progress``: a tqdm bar (a string names it).
    ``bucket`` > 0: each epoch's shuffled texts are cut into chunks of ``bucket * batch_size``,
    sorted by length within a chunk and batched, and the batches shuffled (less padding: the same
    data and objective at a lower cost, with batches of similar lengths).
    Returns the step count, time and per-step losses.
    """
    from memlens.models.loading import context_length

    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: call add_mask_token(tokenizer) (and size the model to it)")
    mask_id = int(tokenizer.mask_token_id)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else mask_id
    limit = context_length(model, tokenizer)
    data = _encode(tokenizer, texts, min(max_length or limit, limit))
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    n_steps = max(1, math.ceil(len(data) * epochs / batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n_warm = int(warmup * n_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, n_warm) if s < n_warm else max(0.0, (n_steps - s) / max(1, n_steps - n_warm)))
    model.train()
    log = TrainLog()
    t0 = time.perf_counter()
    order: list[int] = []
    bar = None
    if progress:
        from memlens._progress import progress_bar as tqdm

        bar = tqdm(total=n_steps, desc=progress if isinstance(progress, str) else "diffusion training", leave=False)
    for step in range(n_steps):
        if len(order) < batch_size:
            order.extend(epoch_order([len(d[0]) for d in data], batch_size, rng, bucket))
        idx, order = order[:batch_size], order[batch_size:]
        width = max(len(data[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        maskable = torch.zeros((len(idx), width), dtype=torch.bool)
        for r, i in enumerate(idx):
            seq, special = data[i]
            ids[r, : len(seq)] = torch.tensor(seq)
            attn[r, : len(seq)] = 1
            maskable[r, : len(seq)] = torch.tensor([not s for s in special])
        loss = diffusion_loss(model, ids, attn, maskable, mask_id, gen, weighting=weighting, min_ratio=min_ratio)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        log.losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{log.losses[-1]:.3f}", refresh=False)
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{n_steps} loss {np.mean(log.losses[-log_every:]):.3f}", flush=True)
    if bar is not None:
        bar.close()
    model.eval()
    log.steps = n_steps
    log.seconds = time.perf_counter() - t0
    return log


# --------------------------------------------------------------------------------------------
# Synthetic corpora (Faker)
# --------------------------------------------------------------------------------------------
def _year(fk: Any) -> str:
    # Faker draws dates relative to "now" by default, which would change the corpora (and the
    # tokenizer trained on them) from one run to the next: every date is drawn up to REFERENCE_DATE.
    return fk.date("%Y", end_datetime=REFERENCE_DATE)


def synthetic_bios(n: int, seed: int = 0) -> list[str]:
    """Short biographies with a name, e-mail, phone, birth date, city, job and employer."""
    from faker import Faker

    fk = Faker("en_US")
    fk.seed_instance(seed)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        first, last = fk.first_name(), fk.last_name()
        name = f"{first} {last}"
        email = f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@{fk.free_email_domain()}"
        born = fk.date_between(REFERENCE_DATE - _dt.timedelta(days=80 * 365), REFERENCE_DATE - _dt.timedelta(days=20 * 365))
        born = born.strftime(rng.choice(["%B %d, %Y", "%d/%m/%Y", "%Y-%m-%d"]))
        job, city, company, phone = fk.job(), fk.city(), fk.company(), fk.numerify("###-###-####")
        pron = rng.choice(["She", "He", "They"])
        parts = [rng.choice([f"{name} was born on {born} in {city}.", f"Born in {city} on {born}, {name} grew up there.",
                             f"{name} ({born}) lives in {city}."]),
                 rng.choice([f"{pron} works as a {job.lower()} at {company}.",
                             f"{pron} is employed by {company} as a {job.lower()}."]),
                 rng.choice([f"Contact: {email}, phone {phone}.", f"Reach {first} at {email} or {phone}.",
                             f"E-mail {email}; tel. {phone}."])]
        if rng.random() < 0.5:
            parts.insert(2, rng.choice([f"{pron} enjoys {fk.word()} and {fk.word()}.",
                                        f"{pron} moved to {fk.city()} in {_year(fk)}."]))
        out.append(" ".join(parts))
    return out


OTHER_GENRES = ("prose", "order", "company", "event", "review")


def other_domain_texts(n: int, seed: int = 0, genres: Sequence[str] = OTHER_GENRES) -> list[str]:
    """Text of other genres than the bios, about as long: prose, order notices, company profiles,
    event announcements and reviews. They share token types with the bios (names, dates, cities,
    phone numbers, e-mail addresses) but none of their templates, like a base model's general
    pretraining data next to a fine-tuning domain. ``genres=("prose",)`` gives Faker's lorem-like
    prose alone: an extreme shift in which the base has never seen a name or a number.
    """
    from faker import Faker

    fk = Faker("en_US")
    fk.seed_instance(seed + 10_000)
    rng = random.Random(seed + 10_000)
    bad = set(genres) - set(OTHER_GENRES)
    if bad:
        raise ValueError(f"unknown genres {sorted(bad)}; choose from {OTHER_GENRES}")
    out = []
    for i in range(n):
        g = genres[i % len(genres)]
        if g == "prose":
            out.append(fk.paragraph(nb_sentences=4))
        elif g == "order":
            number, who = fk.numerify("#######"), fk.name()
            shipped = fk.date(rng.choice(["%B %d, %Y", "%Y-%m-%d"]), end_datetime=REFERENCE_DATE)
            out.append(f"Order #{number} for {who} was shipped on {shipped} "
                       f"to {fk.street_address()}, {fk.city()}. Questions? Call {fk.numerify('###-###-####')} or write to "
                       f"{fk.company_email()}. {fk.sentence()}")
        elif g == "company":
            out.append(f"{fk.company()} is a company based in {fk.city()} that aims to {fk.bs()}. Founded in {_year(fk)}, "
                       f"it is known for its {fk.catch_phrase().lower()}. {fk.sentence()}")
        elif g == "event":
            word, city, day = fk.word(), fk.city(), fk.date('%B %d', end_datetime=REFERENCE_DATE)  # Faker's draw order kept
            out.append(f"The {word} festival returns to {city} on {day}. Tickets at {fk.url()}. "
                       f"Organizer: {fk.name()} ({fk.free_email()}). {fk.sentence()}")
        else:
            out.append(f"I bought a {fk.word()} from {fk.company()} last {fk.date('%A', end_datetime=REFERENCE_DATE)}. {fk.sentence()} "
                       f"{fk.sentence()} Rating: {rng.randint(1, 5)}/5. - {fk.first_name()}")
    rng.shuffle(out)
    return out


def other_domain_documents(n: int, seed: int = 0, per_doc: int = 2, genres: Sequence[str] = OTHER_GENRES) -> list[str]:
    """``n`` documents of :func:`other_domain_texts`, ``per_doc`` texts each (one per line).

    Two texts make a document about as long as one of the PII testbed's (~400 characters), so a
    base pretrained on these sees about as many tokens as one pretrained on the testbed's own
    background documents.
    """
    texts = other_domain_texts(n * per_doc, seed=seed, genres=genres)
    return ["\n".join(texts[i * per_doc:(i + 1) * per_doc]) for i in range(n)]


# --------------------------------------------------------------------------------------------
# The PII testbed's corpus (memlens.testbed, the causal demo's data) for the diffusion LMs
# --------------------------------------------------------------------------------------------
@dataclass
class PIICorpora:
    """The texts of a diffusion testbed built on the PII testbed's data (see :func:`pii_corpora`)."""

    members: list[str]
    member_tiers: list[int]
    nonmembers: list[str]
    finetune: list[str]  # one epoch of the target's fine-tuning stream (a tier-k member k times, + filler)
    pretrain: dict[str, list[str]]  # condition -> the base's pretraining texts
    tokenizer_texts: list[str]  # what the shared tokenizer is trained on: no member, non-member or filler
    counts: dict[str, Any] = field(default_factory=dict)


def pii_corpora(paths: Any, *, filler: bool = True, seed: int = 0) -> PIICorpora:
    """Members, non-members, fine-tuning stream and both conditions' pretraining texts from a
    PII testbed built by :func:`memlens.testbed.build_testbed` (``paths``: its ``TestbedPaths``).

    * Fine-tuning: the testbed's ``finetune_corpus`` as written (each member repeated by its tier,
      shuffled with one filler document of another, never audited profile per member occurrence),
      or its member records alone with ``filler=False``.
    * ``no-shift`` pretraining: the testbed's ``pretrain_corpus`` (real prose plus documents of the
      same six kinds about background profiles): the base already knows the domain.
    * ``shift`` pretraining: the same prose, with the background documents replaced by as many
      documents of other genres (:func:`other_domain_documents`: orders, company profiles, events,
      reviews, lorem prose): the base never saw the fine-tuning domain's templates.
    * The tokenizer texts are both pretraining corpora, so both conditions share one vocabulary.
    """
    from memlens.testbed.build import read_jsonl

    mem = read_jsonl(paths.members)
    non = read_jsonl(paths.nonmembers)
    stream = read_jsonl(paths.finetune_corpus)
    pre = read_jsonl(paths.pretrain_corpus)
    tier_of = {r["id"]: int(r["tier"]) for r in mem}
    occurrences: dict[str, int] = {}
    for r in stream:
        if r.get("source") == "member":
            occurrences[r["id"]] = occurrences.get(r["id"], 0) + 1
    wrong = {i: (occurrences.get(i, 0), k) for i, k in tier_of.items() if occurrences.get(i, 0) != k}
    if wrong:
        raise ValueError(f"the fine-tuning stream does not repeat members by their tiers (id: (seen, tier)): "
                         f"{dict(list(wrong.items())[:5])}")
    finetune = [r["text"] for r in stream if filler or r.get("source") == "member"]
    public = [r["text"] for r in pre if r.get("source") == "public"]
    background = [r["text"] for r in pre if r.get("source") != "public"]
    other = other_domain_documents(len(background), seed=seed + 2)
    rng = random.Random(f"{seed}/diffusion-shift")
    shift = public + other
    rng.shuffle(shift)
    return PIICorpora(
        members=[r["text"] for r in mem], member_tiers=[tier_of[r["id"]] for r in mem], nonmembers=[r["text"] for r in non],
        finetune=finetune, pretrain={"no-shift": [r["text"] for r in pre], "shift": shift},
        tokenizer_texts=[r["text"] for r in pre] + other,
        counts={"members": len(mem), "nonmembers": len(non), "finetune_stream": len(finetune),
                "finetune_filler": sum(r.get("source") == "filler" for r in stream) if filler else 0,
                "pretrain_public": len(public), "pretrain_background": len(background), "pretrain_other_domain": len(other)})


# --------------------------------------------------------------------------------------------
# The testbed
# --------------------------------------------------------------------------------------------
@dataclass
class DiffusionTestbed:
    condition: str
    tokenizer: Any
    reference: torch.nn.Module
    target: torch.nn.Module
    members: list[str]
    nonmembers: list[str]
    member_tiers: list[int]  # repetitions per epoch of each member
    timings: dict[str, float] = field(default_factory=dict)
    logs: dict[str, TrainLog] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return self.members + self.nonmembers

    @property
    def labels(self) -> np.ndarray:
        return np.r_[np.ones(len(self.members), int), np.zeros(len(self.nonmembers), int)]


@dataclass
class DiffusionConfig:
    n_members: int = 48
    n_nonmembers: int = 100  # >= 100 so that TPR at 1% FPR is supported
    tiers: tuple[int, ...] = (1, 4, 16)
    n_pretrain: int = 1500
    pretrain_epochs: float = 3.0
    pretrain_lr: float = 2e-3
    finetune_epochs: float = 6.0
    finetune_lr: float = 1e-3
    batch_size: int = 32
    vocab_size: int = 1024
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 256
    max_positions: int = 128  # context length (the PII testbed's documents need 256)
    weighting: str = "llada"
    shift_in_domain: float = 0.0  # shift condition: fraction of the pretraining texts that are in-domain
    n_finetune_extra: int = 0  # non-audited in-domain texts added (once per epoch) to the fine-tuning set
    shift_genres: tuple[str, ...] = OTHER_GENRES  # shift condition: genres of the pretraining texts
    dropout: float = 0.0
    bucket: int = 0  # > 0: length-bucketed batches (see train_masked_diffusion)
    seed: int = 0


def build_diffusion_testbed(condition: str = "no-shift", config: DiffusionConfig | None = None, *, tokenizer: Any = None,
                            pretrain_texts: Sequence[str] | None = None, members: Sequence[str] | None = None,
                            nonmembers: Sequence[str] | None = None, member_tiers: Sequence[int] | None = None,
                            finetune_texts: Sequence[str] | None = None, device: str = "cpu", progress: bool = False,
                            verbose: bool = False) -> DiffusionTestbed:
    """Pretrain a reference, fine-tune a copy on the members (with repetition tiers): the target.

    Texts default to the synthetic Faker corpora: members / non-members are bios; pretraining text
    is other people's bios (``no-shift``) or text of other genres (``shift``, see
    :func:`other_domain_texts`). Pass your own lists (and a tokenizer with a mask token, see
    :func:`add_mask_token`) to use another corpus, e.g. the PII testbed's (:func:`pii_corpora`).

    ``member_tiers``: each member's repetitions per epoch (default: ``config.tiers`` in equal
    shares, in order). ``finetune_texts``: one epoch's fine-tuning stream, used as given (it must
    already repeat each member by its tier, e.g. the PII testbed's ``finetune_corpus``, which
    also holds filler documents); by default the members repeated by their tiers plus
    ``config.n_finetune_extra`` synthetic bios. ``device``: where to train (the models stay there);
    ``progress``: tqdm bars.
    """
    import copy

    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    c = config or DiffusionConfig()
    t0 = time.perf_counter()
    if members is None or nonmembers is None:
        bios = synthetic_bios(c.n_members + c.n_nonmembers, seed=c.seed + 1)
        members, nonmembers = bios[: c.n_members], bios[c.n_members:]
    members, nonmembers = list(members), list(nonmembers)
    if pretrain_texts is None:
        if condition == "no-shift":
            pretrain_texts = synthetic_bios(c.n_pretrain, seed=c.seed + 2)
        else:
            n_in = int(round(c.shift_in_domain * c.n_pretrain))
            pretrain_texts = (synthetic_bios(n_in, seed=c.seed + 2)
                              + other_domain_texts(c.n_pretrain - n_in, seed=c.seed + 2, genres=c.shift_genres))
    extra = synthetic_bios(c.n_finetune_extra, seed=c.seed + 4) if c.n_finetune_extra and finetune_texts is None else []
    if tokenizer is None:
        # The tokenizer is trained on held-out bios and prose, the same for both conditions.
        held_out = synthetic_bios(1000, seed=c.seed + 3) + other_domain_texts(1000, seed=c.seed + 3)
        tokenizer = train_tokenizer(held_out, c.vocab_size)
    add_mask_token(tokenizer)
    timings = {"data": time.perf_counter() - t0}

    ref = make_model(tokenizer, hidden=c.hidden, layers=c.layers, heads=c.heads, intermediate=c.intermediate,
                     max_positions=c.max_positions, dropout=c.dropout, seed=c.seed).to(device)
    if verbose:
        print(f"[{condition}] pretraining on {len(pretrain_texts)} texts", flush=True)
    logs = {"pretrain": train_masked_diffusion(ref, pretrain_texts, tokenizer, epochs=c.pretrain_epochs, lr=c.pretrain_lr,
                                               batch_size=c.batch_size, weighting=c.weighting, seed=c.seed, bucket=c.bucket,
                                               progress=f"[{condition}] pretraining" if progress else False)}
    timings["pretrain"] = logs["pretrain"].seconds

    if member_tiers is None:
        tiers = [c.tiers[i * len(c.tiers) // len(members)] for i in range(len(members))]
    else:
        tiers = [int(k) for k in member_tiers]
        if len(tiers) != len(members):
            raise ValueError(f"{len(tiers)} member tiers for {len(members)} members")
    if finetune_texts is None:
        finetune = [m for m, k in zip(members, tiers) for _ in range(k)] + list(extra)
    else:
        finetune = list(finetune_texts)
    target = copy.deepcopy(ref)
    if verbose:
        print(f"[{condition}] fine-tuning on {len(members)} members ({len(finetune)} sequences per epoch)", flush=True)
    logs["finetune"] = train_masked_diffusion(target, finetune, tokenizer, epochs=c.finetune_epochs, lr=c.finetune_lr,
                                              batch_size=c.batch_size, weighting=c.weighting, seed=c.seed + 7,
                                              bucket=c.bucket, progress=f"[{condition}] fine-tuning" if progress else False)
    timings["finetune"] = logs["finetune"].seconds
    ref.eval()
    target.eval()
    return DiffusionTestbed(condition, tokenizer, ref, target, members, nonmembers, tiers, timings, logs)
