"""InfoRMIA's claim on a real base: SmolLM2-135M LoRA, base reference vs format-matched reference vs 4 split references.

One GPU command: fine-tune (LoRA, the same recipe for every model) the target on the testbed's stream, a
format-matched reference on half the population (`memlens testbed finetune --data population`), and K
references on balanced halves of members + non-members + population (`split_plan`, as
`memlens testbed references` does for the tiny testbed); then audit the target through memlens.audit in
four settings:

* base: the base (the target with its adapter disabled) as the one reference, offline, a = 1;
* format: the format-matched reference, offline, a = 1 (population = the half it never saw);
* split_online / split_offline: the K split references with their splits (online; offline a = 1 and tuned a).

Attacks: loss, minkpp, ref, rmia, informia, informia_token (mean, bottomk), ltmia (the shipped classifier,
zero-shot). Per tier and overall: AUC, TPR@0.1%/1% FPR with bootstrap intervals. Completed fine-tunes are
reused, so a run cut off by a time limit continues when run again.

    # data (needs faker): python benchmarks/smollm2_references.py --build-data out/smolref-testbed
    python benchmarks/smollm2_references.py --device cuda --base PATH.gguf|DIR --testbed out/smolref-testbed --out out/smolref
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from informia_claim import commit  # noqa: E402

EXTRA_ROWS = (  # beside the testbed study's rows (memlens.lab.informia_claim.ROWS)
    ("base", "ltmia (zero-shot)", "ltmia", {}),
    ("format", "ref", "ref", {}),
    ("format", "rmia (a=1)", "rmia", {}),
    ("format", "informia", "informia", {}),
    ("format", "informia_token (mean)", "informia_token", {}),
    ("format", "informia_token (bottomk)", "informia_token", {"agg": "bottomk"}),
    ("format", "ltmia (zero-shot)", "ltmia", {}),
)


def plain_base(base: str, out: Path) -> str:
    """A GGUF base (or the smollm2 alias) dequantized once into a plain float32 safetensors directory ``out``,
    so that the six fine-tunes load it directly instead of dequantizing it six times. Other bases: unchanged."""
    if not (str(base).endswith(".gguf") or str(base).lower() == "smollm2"):
        return str(base)
    if not (out / "config.json").is_file():
        from memlens.testbed.finetune import load_base

        model, tok, _ = load_base(base, device="cpu")
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
    return str(out)


def export_ltmia_features(dest: Path, target, base, tokenizer, paths, batch_size: int, seed: int) -> None:
    """The shipped classifier's input windows (first window per text, as the authors score) of the target with its
    base as reference, with the labels and the baselines' scores: real-model training or test data for LT-MIA."""
    import numpy as np

    from memlens._io import read_jsonl
    from memlens.lab.ltmia.generate import score_run
    from memlens.ltmia import load_classifier
    from memlens.ltmia.features import pad

    spec = load_classifier("default").spec
    members = [r["text"] for r in read_jsonl(paths.members)]
    nonmembers = [r["text"] for r in read_jsonl(paths.nonmembers)]
    population = [r["text"] for r in read_jsonl(paths.population)]
    chunks, scores, meta = score_run(target, base, tokenizer, members, nonmembers, population, spec, batch_size)
    x, lengths = pad(chunks, spec.max_tokens, chunks[0].shape[1], dtype=np.float16)
    labels = np.r_[np.ones(len(members), np.int8), np.zeros(len(nonmembers), np.int8)]
    tiers = np.asarray([str(r.get("tier", "")) for r in read_jsonl(paths.members)] + ["nonmember"] * len(nonmembers))
    dest.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dest, features=x, lengths=lengths, labels=labels, tiers=tiers, seed=seed,
                        **{f"score_{k}": v for k, v in scores.items()})
    print(f"LT-MIA features {x.shape} -> {dest} ({meta})")


def combine_seeds(files: list[Path], out: Path) -> dict:
    """Several seeds' result files -> one document (per_seed, combined: mean ± sd) and its markdown."""
    from memlens.lab.informia_claim import combine, markdown

    docs = sorted((json.loads(Path(f).read_text()) for f in files), key=lambda d: d["seed"])
    if len({d["seed"] for d in docs}) != len(docs):
        raise SystemExit("two result files have the same seed")
    md = markdown(docs).replace(f"K = {docs[0]['k']} split references.",
                                f"K = {docs[0]['k']} split references; SmolLM2-135M LoRA, {docs[0]['epochs']} epochs.")
    for key, label in docs[0]["settings"].items():
        md = md.replace(f"| {key} |", f"| {label} |")
    doc = {"seeds": [d["seed"] for d in docs], "k": docs[0]["k"], "epochs": docs[0]["epochs"], "settings": docs[0]["settings"],
           "combined": combine(docs), "per_seed": {str(d["seed"]): Path(f).name for d, f in zip(docs, files)},
           "per_seed_provenance": {str(d["seed"]): d.get("provenance") or {"commit": d.get("commit"), "machine": d.get("machine")}
                                   for d in docs}}
    doc["provenance"] = {"commit": "; ".join(f"seed {s}: {str(p['commit']).split(' ')[0]}" for s, p in doc["per_seed_provenance"].items()),
                         "machine": "; ".join(dict.fromkeys(str(p["machine"]) for p in doc["per_seed_provenance"].values()))}
    out.mkdir(parents=True, exist_ok=True)
    (out / "smollm2_references.json").write_text(json.dumps(doc, indent=1))
    (out / "smollm2_references.md").write_text(md)
    print(md)
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="smollm2", help="a .gguf file, a saved model directory, a hub id, or smollm2 (the wheel)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--testbed", default=None, help="testbed data built earlier (--build-data)")
    ap.add_argument("--build-data", default=None, metavar="DIR", help="only write the testbed data to DIR, then exit")
    ap.add_argument("--quick", action="store_true", help="the quick testbed")
    ap.add_argument("--profiles", type=int, default=None, help="member profiles per tier")
    ap.add_argument("--epochs", type=int, default=2, help="LoRA epochs for every model (the testbed's recipe has 3; 2 fits ~8 min)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=None, help="LoRA peak learning rate [finetune's default, 1e-3]")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=None, help="cap per fine-tune (to validate the command cheaply)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("out/smolref"))
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--export-ltmia", type=Path, default=None, metavar="NPZ",
                    help="also write the shipped LT-MIA classifier's input features of the target/base pair (members + non-members) "
                         "to NPZ, for training LT-MIA with real-model runs")
    ap.add_argument("--combine", type=Path, nargs="+", default=None, metavar="JSON",
                    help="only combine finished seeds' result files into OUT/smollm2_references.{json,md} (mean ± sd over seeds)")
    ap.add_argument("--save-base", type=Path, default=None, metavar="DIR", help="only write --base as a plain safetensors model to DIR")
    a = ap.parse_args(argv)
    if a.combine:
        combine_seeds(a.combine, a.out)
        return 0
    if a.save_base:
        print(f"plain base in {plain_base(a.base, a.save_base)}")
        return 0
    from memlens.lab.demo_real import real_testbed_config
    from memlens.testbed import TestbedPaths, build_testbed

    cfg = real_testbed_config(quick=a.quick, device=a.device, seed=a.seed, profiles=a.profiles, epochs=a.epochs)
    if a.build_data:
        paths = build_testbed(a.build_data, cfg)
        print(f"testbed data in {paths.root}: {json.loads(paths.manifest.read_text())['counts']}")
        return 0
    import torch

    from memlens.lab.informia_claim import ROWS, Row, audit_rows, markdown
    from memlens.models.handle import ModelHandle
    from memlens.testbed.build import write_jsonl
    from memlens.testbed.finetune import finetune, population_corpus
    from memlens.testbed.train import split_plan

    t0 = time.perf_counter()
    out = a.out
    paths = TestbedPaths(Path(a.testbed)) if a.testbed else build_testbed(out / "testbed", cfg)
    a.base = plain_base(a.base, out / "base")
    kw = dict(lora=True, epochs=a.epochs, batch_size=a.batch_size, lora_r=a.lora_r, max_steps=a.max_steps, device=a.device,
              seed=a.seed, progress=a.progress, checkpoint_every=0, **({"lr": a.lr} if a.lr else {}))
    timings: dict[str, float] = {}
    tgt = finetune(a.base, paths, out / "target", **kw)
    timings["target_s"] = round(time.perf_counter() - t0, 1)
    stream, unseen = population_corpus(paths, out / "format_ref", seed=a.seed)
    fmt = finetune(a.base, paths, out / "format_ref", corpus=stream, **kw)
    timings["format_ref_s"] = round(time.perf_counter() - t0 - timings["target_s"], 1)
    plan = split_plan(paths, a.k, a.seed)
    splits = plan.write(out / "splits.json")
    refs = []
    for n in plan.names:
        (out / n).mkdir(parents=True, exist_ok=True)
        write_jsonl(out / n / "stream.jsonl", plan.streams[n])
        refs.append(finetune(a.base, paths, out / n, corpus=out / n / "stream.jsonl", **kw))
    timings["models_s"] = round(time.perf_counter() - t0, 1)

    tok = tgt.tokenizer
    target_h = ModelHandle(tgt.model, tok, name="SmolLM2-135M + LoRA (target)")
    base_h = ModelHandle(tgt.reference(), tok, name="SmolLM2-135M (adapter disabled)")
    fmt_h = ModelHandle(fmt.model, tok, name="format-matched reference (LoRA on half the population)")
    split_h = [ModelHandle(r.model, tok, name=n) for r, n in zip(refs, plan.names)]
    pop = str(paths.population)
    settings = {"base": ([base_h], None, pop), "format": ([fmt_h], None, str(unseen)),
                "split_online": (split_h, splits, pop), "split_offline": (split_h, splits, pop)}
    rows = ROWS + tuple(Row(s, lab, att, p) for s, lab, att, p in EXTRA_ROWS)
    t1 = time.perf_counter()
    results, info = audit_rows(target_h, settings, str(paths.members), str(paths.nonmembers), rows, device=a.device,
                               cache_dir=out / "cache", seed=a.seed, n_bootstrap=a.bootstrap, progress=a.progress, tokenizer=tok)
    timings["audits_s"] = round(time.perf_counter() - t1, 1)
    if a.export_ltmia:
        export_ltmia_features(a.export_ltmia, tgt.model, tgt.reference(), tok, paths, a.batch_size, a.seed)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    gpu = torch.cuda.get_device_name(0) if a.device.startswith("cuda") and torch.cuda.is_available() else None
    machine = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
               "device": a.device, "gpu": gpu}
    doc = {"seed": a.seed, "k": a.k, "base": str(a.base), "epochs": a.epochs, "batch_size": a.batch_size, "lora_r": a.lora_r,
           "settings": {"base": "1 base reference (adapter disabled), offline a = 1",
                        "format": "1 format-matched reference (LoRA on half the population), offline a = 1",
                        "split_online": f"{a.k} split LoRA references, online", "split_offline": f"{a.k} split LoRA references, offline"},
           "results": results, "info": info, "timings": timings, "machine": machine, "commit": commit(),
           "finetunes": {n: {k: r.summary.get(k) for k in ("steps", "tokens", "seconds", "epoch_mean_loss")}
                         for n, r in [("target", tgt), ("format_ref", fmt), *zip(plan.names, refs)]}}
    out.mkdir(parents=True, exist_ok=True)
    md = markdown([doc]).replace(f"K = {a.k} split references.", f"K = {a.k} split references; SmolLM2-135M LoRA, {a.epochs} epochs.")
    for key, label in doc["settings"].items():
        md = md.replace(f"| {key} |", f"| {label} |")
    (out / "smollm2_references.md").write_text(md)
    (out / "smollm2_references.json").write_text(json.dumps(doc, indent=1, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
    print(md)
    print(json.dumps(timings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
