"""Help texts for options that share a meaning across commands, filled in where a command's own
definition gives none (so `memlens X --help` explains every option). A command's own help wins."""
from __future__ import annotations

import inspect

# flag -> help, for every command that has the flag without its own text
OPTION_HELP: dict[str, str] = {
    "--members": "member texts (jsonl, csv, parquet, txt or a directory of .txt)",
    "--nonmembers": "non-member texts (same formats)",
    "--data": "one file of texts with a label field (1 member, 0 non-member)",
    "--population": "population texts z for RMIA/InfoRMIA (not audited)",
    "--attacks": "comma-separated attack names, or 'all' (see `memlens attacks`)",
    "--param": "attack parameter ATTACK.NAME=VALUE (repeatable), e.g. minkpp.k=0.1",
    "--out": "output directory",
    "--text-field": "the field that holds the text in jsonl/csv/parquet files",
    "--gguf-file": "GGUF file inside the --target directory",
    "--device": "auto, cpu, cuda or cuda:N",
    "--dtype": "auto (bf16 on GPU, fp32 on CPU), float32, bfloat16 or float16",
    "--batch-size": "texts per batch (default: chosen from the model size and device)",
    "--max-length": "window length in tokens (default: the model's context)",
    "--stride": "new tokens per window for long texts (default: half the window)",
    "--temperature": "temperature applied to both models for token-level InfoRMIA",
    "--cache-dir": "statistics cache (default ~/.cache/memlens or $MEMLENS_CACHE)",
    "--bootstrap": "bootstrap resamples for confidence intervals",
    "--seed": "random seed (bootstrap, sampling, training): the same seed gives the same numbers",
    "--model-kind": "causal (autoregressive) or masked (masked / diffusion LM: SAMA)",
    "--mask-steps": "masked LMs: progressive masking steps T",
    "--mask-min": "masked LMs: smallest mask density",
    "--mask-max": "masked LMs: largest mask density",
    "--independent-masks": "masked LMs: a fresh mask per step instead of nested masks",
    "--mask-token-id": "masked LMs: mask token id if the tokenizer has none",
    "--masked-auto-class": "masked LMs: transformers class (AutoModel + --trust-remote-code for LLaDA/Dream)",
    "--trust-remote-code": "allow model repositories to run their own code",
    "--allow-pickle": "allow pickle-based weight files (.bin); they can run code",
    "--verbose": "log what each step does",
    "--quick": "the small configuration (minutes on 2 CPU cores)",
    "--epochs": "training epochs (default: the preset's)",
    "--lr": "peak learning rate (default: the preset's)",
    "--val-fraction": "share of the training data held out for validation (default: the preset's)",
    "--threads": "torch threads per process",
    "--preset": "tiny (CI), small (CPU, minutes) or large (GPU)",
    "--modes": "comma-separated evaluation modes: family, domain, paper",
    "--skip-eval": "generate and train only; skip the transfer evaluation",
    "--manifest": "canary manifest from `memlens canary make`",
    "--reference-splits": "JSON: which --reference trained on which text (`memlens testbed references`); rmia/informia then run online",
}
# (command path, flag) -> help, where a flag means something particular to one command
COMMAND_HELP: dict[tuple[str, str], str] = {
    ("canary exposure", "--out"): "write the exposure results (JSON) here",
    ("canary exposure", "--batch-size"): "candidates scored per batch",
}


def apply_option_help(app, path: str = "") -> None:
    """Give every option of every command under ``app`` (a typer app) a help text from the tables above."""
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        _fill(info.callback, f"{path} {name}".strip())
    for group in app.registered_groups:
        apply_option_help(group.typer_instance, f"{path} {group.name}".strip())


def _fill(callback, command: str) -> None:
    fn = inspect.unwrap(callback)
    for p in inspect.signature(fn).parameters.values():
        opt = p.default
        decls = getattr(opt, "param_decls", None)
        if decls is None or getattr(opt, "help", None) or getattr(opt, "hidden", False):
            continue
        flags = [d.split("/")[0] for d in decls if d.startswith("--")]
        for flag in flags:
            text = COMMAND_HELP.get((command, flag)) or OPTION_HELP.get(flag)
            if text:
                opt.help = text
                break
