"""``memlens demo --base``: the demo on a real pretrained base (e.g. SmolLM2-135M): fine-tune it on
the PII testbed's stream (full or LoRA), audit the fine-tuned model against the base, extract the
members' PII by greedy decoding, and measure token localization."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from memlens.testbed.build import TestbedConfig, TestbedPaths, build_testbed
from memlens.testbed.finetune import finetune

log = logging.getLogger("memlens")


# --------------------------------------------------------------------------------------------
# The demo on a real base
# --------------------------------------------------------------------------------------------
# Testbed sizes for a real base. On a GPU: the same data as ``memlens demo`` (TestbedConfig() /
# .quick()), so the two demos compare directly. On CPU (full fine-tuning about 110 tokens/s on 2
# cores, documents about 130 tokens): the default's stream is (6 * 21 members + 32 filler) * 3
# epochs = 474 documents, about 10 minutes; quick is about a third of that.
CPU_TESTBEDS: dict[str, dict[str, Any]] = {
    "default": dict(members_per_tier=6, n_nonmembers=36, n_population=36, finetune_filler_ratio=0.25),
    "quick": dict(members_per_tier=2, n_nonmembers=12, n_population=12, finetune_filler_ratio=0.25),
}


def real_testbed_config(*, quick: bool = False, device: str = "cpu", seed: int = 0, profiles: int | None = None,
                        epochs: int | None = None) -> TestbedConfig:
    """The testbed :func:`run_real_demo` builds (see ``CPU_TESTBEDS``)."""
    over: dict[str, Any] = {"seed": seed}
    if str(device).startswith("cuda"):
        cfg_fn = TestbedConfig.quick if quick else TestbedConfig
    else:
        over.update(CPU_TESTBEDS["quick" if quick else "default"])
        cfg_fn = TestbedConfig
    if profiles is not None:
        over["members_per_tier"] = profiles
    if epochs is not None:
        over["finetune_epochs"] = epochs
    return cfg_fn(**over)


def run_real_demo(
    out_dir: str | Path = "memlens-demo-smollm2",
    *,
    base: str = "smollm2",
    gguf_file: str | None = None,
    lora: bool = False,
    device: str = "cpu",
    quick: bool = False,
    testbed: str | Path | None = None,
    profiles: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    n_bootstrap: int | None = None,
    extract_batch_size: int | None = None,
    extract_reference: bool = False,
    resume: bool = True,
    progress: bool = True,
    **finetune_kwargs: Any,
) -> dict[str, Any]:
    """:func:`memlens.lab.demo.run_demo` on a real pretrained base: fine-tune, audit, extract, localize.

    Builds (data only) or reuses ``testbed``, fine-tunes ``base`` on its stream (``lora``: an
    adapter), audits the fine-tuned model against the base (all attacks), extracts the members'
    and non-members' identifying PII by greedy decoding, and measures token localization. Writes
    ``out_dir/results.json`` (the demo's numbers under ``demo``), scores, report and
    ``extraction.jsonl``. ``finetune_kwargs`` go to :func:`~memlens.testbed.finetune.finetune` (lr, batch_size, max_steps,
    checkpoint_every, stop_after_steps, lora_r, ...). ``extract_reference``: also extract from
    the base, the control that shows which values a model produces without having seen them.

    Returns ``{"result": AuditResult, "demo": dict, "out": Path, "finetune": FinetuneResult}``
    (without "result" when ``stop_after_steps`` ended the fine-tuning early).
    """
    import memlens
    from memlens.data import load_samples
    from memlens.extraction import extract, in_context_excluded, secrets_from_samples, summarize, write_outcomes
    from memlens.lab.demo import localization_by_tier, per_tier_metrics, token_localization
    from memlens.models.handle import ModelHandle
    from memlens.testbed.profiles import UNIQUE_PII_TYPES

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if testbed is not None:
        paths = TestbedPaths(Path(testbed))
        if not paths.members.is_file():
            raise FileNotFoundError(f"{paths.root} is not a testbed (no members.jsonl); build one with `memlens testbed build --data-only`")
    else:
        paths = build_testbed(out / "testbed", real_testbed_config(quick=quick, device=device, seed=seed, profiles=profiles,
                                                                   epochs=epochs))
    if epochs is None and paths.manifest.is_file():
        epochs = paths.config().finetune_epochs
    ft = finetune(base, paths, out / ("finetune-lora" if lora else "finetune-full"), gguf_file=gguf_file, lora=lora, epochs=epochs,
                  device=device, seed=seed, resume=resume, progress=progress, **finetune_kwargs)
    timings["finetune_s"] = time.perf_counter() - t0
    if not ft.complete:
        return {"demo": {"finetune": ft.summary, "complete": False}, "out": out, "finetune": ft}

    t1 = time.perf_counter()
    reference = ft.reference()
    mode = "lora" if lora else "full"
    target_h = ModelHandle(ft.model, ft.tokenizer, name=f"{Path(ft.base).name} + {mode} fine-tune")
    ref_h = ModelHandle(reference, ft.tokenizer, name=f"{Path(ft.base).name}" + (" (adapter disabled)" if lora else " (base)"))
    result = memlens.audit(
        target=target_h, references=[ref_h], members=str(paths.members), nonmembers=str(paths.nonmembers),
        population=str(paths.population), attacks="all", device=device, cache_dir=out / "cache", seed=seed,
        n_bootstrap=n_bootstrap if n_bootstrap is not None else (200 if quick else 1000), progress=progress,
    )
    timings["audit_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    samples = load_samples(paths.members, default_label=1) + load_samples(paths.nonmembers, default_label=0)
    every = secrets_from_samples(samples, types=UNIQUE_PII_TYPES)
    # A value that is already in its own prompt (a username repeated in a chat, a name in a
    # signature) is copied from the context by any pretrained LM, member or not: not leakage.
    # Only a value's first occurrence in a document is a secret here.
    secrets = in_context_excluded(every)
    bs = extract_batch_size or (64 if str(device).startswith("cuda") else 16)
    outcomes = extract(ft.model, ft.tokenizer, secrets, batch_size=bs, progress=progress)
    extraction = summarize(outcomes)
    timings["extraction_s"] = time.perf_counter() - t2
    extraction_ref = None
    if extract_reference:
        t3 = time.perf_counter()
        extraction_ref = summarize(extract(reference, ft.tokenizer, secrets, batch_size=bs, progress=progress))
        timings["extraction_reference_s"] = time.perf_counter() - t3
    del reference

    demo = {
        "testbed": str(paths.root), "base": ft.base, "mode": mode, "quick": quick, "device": device, "seed": seed,
        "finetune": ft.summary,
        "per_tier": per_tier_metrics(result, n_bootstrap=100 if quick else 500, seed=seed),
        "extraction": {**extraction, "pii_types": list(UNIQUE_PII_TYPES), "repeats_in_prompt_excluded": len(every) - len(secrets)},
        "localization": token_localization(result),
        "localization_by_tier": localization_by_tier(result),
        "timings": timings,
    }
    if extraction_ref is not None:
        demo["extraction_reference"] = extraction_ref
    if paths.manifest.is_file():
        demo["testbed_counts"] = json.loads(paths.manifest.read_text()).get("counts")
    timings["total_s"] = time.perf_counter() - t0
    result.extra["demo"] = demo
    result.save(out, report=False)  # the report below, where its failure cannot lose the numbers
    write_outcomes(out / "extraction.jsonl", outcomes)
    try:  # the numbers are saved already; a report that fails to render must not lose them
        from memlens.report import write_report

        write_report(result, out)
    except Exception as e:  # pragma: no cover - depends on the report module
        log.warning("the HTML report could not be written (%s: %s); results.json and scores.csv are in %s", type(e).__name__, e, out)
    return {"result": result, "demo": demo, "out": out, "finetune": ft}
