#!/usr/bin/env python3
"""The Python half of scripts/gpu-check.sh (see docs/cuda.md).

    gpu_check.py libdirs SONAME...        directories of the nvidia-* wheels holding them
    gpu_check.py compare REF.json RUN.json TOL
    gpu_check.py torch-decode --out FILE [shape options]
    gpu_check.py report RESULTS_DIR       summary.json + summary.txt; exit 1 on a failed check

Only the standard library and numpy at module level: the torch part imports
torch and transformers when it runs, so the rest works without them.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# Tolerances on maps (explain.json maps are min-max normalised to [0, 1], so
# an absolute difference is also a relative one).
F32_TOL = 1e-4
# crates/dexar-model/tests/incremental.rs, half_precision_runs_and_stays_close_to_f32:
# bf16 gradients within 1e-1 relative error of f32, same greedy tokens. That
# bounds the DEX-AR maps, which are made from those gradients, so bf16 is held
# to it on them; the other strategies are reported, not held (on the CPU, bf16
# raw-attention and grad-x-attn maps of the fixtures already differ from f32
# by up to 0.103).
BF16_TOL = 1e-1
BF16_GATED = ("dexar", "dexar-unfiltered")


# ---- libdirs ----------------------------------------------------------------
def nvidia_lib_dirs(sonames):
    """For each soname, the first directory under an importable `nvidia`
    package (the CUDA wheels PyTorch installs) that holds it."""
    roots = []
    for entry in sys.path:
        candidate = Path(entry or ".") / "nvidia"
        if candidate.is_dir() and candidate.resolve() not in roots:
            roots.append(candidate.resolve())
    found = {}
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in files:
                if name in sonames and name not in found:
                    found[name] = folder
    return found


def cmd_libdirs(args):
    found = nvidia_lib_dirs(set(args.sonames))
    missing = [s for s in args.sonames if s not in found]
    for soname in missing:
        print(f"not found in the Python packages: {soname}", file=sys.stderr)
    dirs = []
    for soname in args.sonames:
        if soname in found and found[soname] not in dirs:
            dirs.append(found[soname])
    print(":".join(dirs))
    return 1 if missing else 0


# ---- compare ----------------------------------------------------------------
def load_explain(path):
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("schema") != "dexar.explain/1":
        raise ValueError(f"{path}: schema {doc.get('schema')!r}, expected dexar.explain/1")
    return doc


def compare_explain(ref_path, run_path, tol, gated=None):
    """Same tokens, and every map (per token and sentence) of the strategies
    in `gated` (None: all) within `tol` of the reference."""
    ref, run = load_explain(ref_path), load_explain(run_path)
    ref_ids = [t["id"] for t in ref["tokens"]]
    run_ids = [t["id"] for t in run["tokens"]]
    result = {
        "reference": str(ref_path),
        "run": str(run_path),
        "reference_device": ref["settings"]["device"],
        "reference_dtype": ref["settings"]["dtype"],
        "device": run["settings"]["device"],
        "dtype": run["settings"]["dtype"],
        "tokens": len(run_ids),
        "same_tokens": ref_ids == run_ids,
        "tolerance": tol,
        "gated_strategies": list(gated) if gated else "all",
        "max_abs_diff": None,
        "per_strategy": {},
    }
    problems = []
    if not ref_ids:
        problems.append("the reference explained no token")
    if ref_ids != run_ids:
        problems.append(f"different tokens: {run_ids} vs reference {ref_ids}")
    else:
        shared = sorted(set(ref["strategies"]) & set(run["strategies"]))
        held = [name for name in shared if gated is None or name in gated]
        if "dexar" not in held:
            problems.append("no dexar strategy in both files")
        worst = 0.0
        for name in shared:
            diffs = []
            for key in ("per_token", "sentence"):
                a = np.asarray(ref["strategies"][name][key], dtype=np.float64)
                b = np.asarray(run["strategies"][name][key], dtype=np.float64)
                if a.shape != b.shape:
                    problems.append(f"{name}.{key}: shape {b.shape} vs reference {a.shape}")
                    continue
                if not (np.isfinite(a).all() and np.isfinite(b).all()):
                    problems.append(f"{name}.{key}: non-finite values")
                    continue
                diffs.append(float(np.max(np.abs(a - b))) if a.size else 0.0)
            if diffs:
                result["per_strategy"][name] = max(diffs)
                if name in held:
                    worst = max(worst, max(diffs))
        result["max_abs_diff"] = worst
        if worst > tol:
            problems.append(f"{'/'.join(held)} maps differ by {worst:.3g} > {tol:g}")
        a = np.asarray([t["weight"] for t in ref["tokens"]], dtype=np.float64)
        b = np.asarray([t["weight"] for t in run["tokens"]], dtype=np.float64)
        result["token_weight_max_abs_diff"] = float(np.max(np.abs(a - b))) if a.size else 0.0
    result["ok"] = not problems
    result["problems"] = problems
    return result


def cmd_compare(args):
    result = compare_explain(args.reference, args.run, args.tol)
    print(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


# ---- torch-decode -----------------------------------------------------------
def llama_mlp_width(hidden):
    """LLaMA's MLP width, as dexar's synthetic models have it: 8/3 of the
    hidden size rounded up to a multiple of 256 (2816 for 1024, 11008 for 4096)."""
    return ((hidden * 8 + 2) // 3 + 255) // 256 * 256


def cmd_torch_decode(args):
    """Prefill and plain greedy decoding (KV cache) in transformers, on a
    randomly initialised LLaVA of the shape `dexar bench --synthetic` builds."""
    import torch
    import transformers
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden = args.hidden
    image_token = args.vocab - 1
    grid = args.image_size // args.patch_size
    image_tokens = grid * grid
    vision = CLIPVisionConfig(
        hidden_size=args.vision_hidden, intermediate_size=args.vision_hidden * 4,
        num_hidden_layers=args.vision_layers, num_attention_heads=args.vision_hidden // 64,
        image_size=args.image_size, patch_size=args.patch_size,
    )
    text = LlamaConfig(
        hidden_size=hidden, intermediate_size=llama_mlp_width(hidden), num_hidden_layers=args.layers,
        num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
        vocab_size=args.vocab, max_position_embeddings=2048, tie_word_embeddings=True,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=image_tokens,
    )
    # transformers 5 names it image_token_id; set both so either version reads it.
    config.image_token_id = image_token
    config.image_token_index = image_token
    t0 = time.perf_counter()
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with device:
        model = LlavaForConditionalGeneration(config)
    torch.set_default_dtype(previous)
    model = model.to(device=device, dtype=dtype).eval()
    init_s = time.perf_counter() - t0

    text_tokens = max(args.prompt_tokens - image_tokens - 1, 1)
    gen = torch.Generator().manual_seed(0)
    words = torch.randint(3, image_token, (text_tokens,), generator=gen)
    ids = torch.cat([torch.tensor([1]), torch.full((image_tokens,), image_token), words])
    ids = ids.unsqueeze(0).to(device)
    pixels = torch.randn(1, 3, args.image_size, args.image_size, generator=gen).to(device, dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run_once():
        t0 = time.perf_counter()
        out = model(input_ids=ids, pixel_values=pixels, use_cache=True)
        past = out.past_key_values
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        t1 = time.perf_counter()
        for _ in range(args.tokens):
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        t2 = time.perf_counter()
        return t1 - t0, (t2 - t1) / args.tokens

    with torch.inference_mode():
        run_once()  # warm-up: kernel selection, allocator
        runs = [run_once() for _ in range(args.repeat)]
    prefill = min(r[0] for r in runs)
    decode = min(r[1] for r in runs)
    result = {
        "schema": "dexar.gpu-check.torch/1",
        "note": "randomly initialised LlavaForConditionalGeneration of the shape of dexar bench --synthetic "
                "(scripts/bench_vs_torch.py compares on the very same weights, written by dexar bench --save-checkpoint)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "dtype": args.dtype,
        "layers": args.layers,
        "hidden": hidden,
        "vocab": args.vocab,
        "prompt_tokens": int(ids.shape[1]),
        "decoded_tokens": args.tokens,
        "init_s": init_s,
        "prefill_ms": prefill * 1e3,
        "decode_ms_per_token": decode * 1e3,
        "decode_tokens_per_s": 1.0 / decode,
        "repeat": args.repeat,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"transformers {transformers.__version__} on {device} ({args.dtype}): prefill {prefill * 1e3:.1f} ms, "
          f"decode {decode * 1e3:.2f} ms/token ({1 / decode:.1f} tokens/s), {ids.shape[1]}-token prompt")
    return 0


# ---- report -----------------------------------------------------------------
def read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cmd_report(args):
    results = Path(args.results)
    plan = read_json(results / "plan.json") or {}
    summary = {"schema": "dexar.gpu-check/1", **plan, "parity": [], "bench": None, "torch": None, "ratios": {}}
    failures = []

    # (run directory, tolerance, strategies held to it, counts as a check)
    comparisons = [("test-f32", F32_TOL, None, True), ("test-bf16", BF16_TOL, BF16_GATED, True),
                   ("context-bf16", BF16_TOL, BF16_GATED, False)]
    for fixture in plan.get("fixtures", []):
        ref = results / "explain" / fixture / "ref-f32" / "explain.json"
        for name, tol, gated, counts in comparisons:
            run = results / "explain" / fixture / name / "explain.json"
            if not counts and not run.parent.is_dir():
                continue
            if not ref.is_file() or not run.is_file():
                missing = ref if not ref.is_file() else run
                entry = {"dtype": name.split("-")[1], "ok": False,
                         "problems": [f"no {missing.relative_to(results)} (see the log.txt beside it)"]}
            else:
                try:
                    entry = compare_explain(ref, run, tol, gated)
                except (KeyError, ValueError, TypeError) as e:
                    entry = {"dtype": name.split("-")[1], "ok": False, "problems": [f"unreadable: {e}"]}
            entry = {"fixture": fixture, "run": name, "counts": counts, **entry}
            summary["parity"].append(entry)
            if counts and not entry["ok"]:
                failures.append(f"parity {fixture} {name}: {'; '.join(entry['problems'])}")

    bench = read_json(results / "bench" / "bench.json")
    summary["bench"] = bench
    if bench is None:
        failures.append("bench: no bench/bench.json (see bench/bench.log)")
    torch_result = read_json(results / "torch" / "torch.json")
    summary["torch"] = torch_result
    if torch_result is None and not plan.get("cpu_only"):
        failures.append("torch: no torch/torch.json (see torch/torch.log)")

    # Ratios: dexar.bench/2 has plain and traced decoding; /1 only the traced
    # (incremental) path, which is then compared as it is.
    ratios = summary["ratios"]
    if bench and torch_result:
        torch_ms = torch_result["decode_ms_per_token"]
        plain = bench.get("plain_ms_per_token")
        traced = bench.get("traced_ms_per_token", bench.get("incremental_ms_per_token"))
        if plain:
            ratios["dexar_plain_over_torch_decode"] = plain / torch_ms
        if traced:
            ratios["dexar_traced_over_torch_decode"] = traced / torch_ms
        if plain and traced:
            ratios["dexar_traced_over_plain"] = traced / plain
        if bench.get("prefill_ms"):
            ratios["dexar_prefill_over_torch_prefill"] = bench["prefill_ms"] / torch_result["prefill_ms"]

    summary["ok"] = not failures
    summary["failures"] = failures
    (results / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    text = render_text(summary)
    (results / "summary.txt").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0 if not failures else 1


def render_text(summary):
    lines = ["dexar GPU check" + (" (--cpu-only dry run: every 'test' run is on the CPU)" if summary.get("cpu_only") else "")]
    for key in ("started", "binary", "binary_bytes", "gpu", "driver"):
        if summary.get(key):
            lines.append(f"  {key}: {summary[key]}")
    lines.append("")
    lines.append("explain parity (reference: the CPU in f32, same binary)")
    for p in summary["parity"]:
        diff = p.get("max_abs_diff")
        if diff is None:
            lines.append(f"  FAIL {p['fixture']:<14} {p['run']}: {'; '.join(p.get('problems', []))}")
            continue
        diff_text = f"max |diff| {diff:.2e}"
        where = f"{p['device']} {p['dtype']}"
        held = p.get("gated_strategies", "all")
        held_text = "all maps" if held == "all" else "/".join(held)
        status = ("ok  " if p["ok"] else "FAIL") if p["counts"] else "info"
        lines.append(f"  {status} {p['fixture']:<14} {where:<10} {diff_text} on {held_text} "
                     f"(tolerance {p.get('tolerance', float('nan')):g}, {p.get('tokens', 0)} tokens)"
                     + ("" if p["counts"] else ": the CPU's own bf16, for context"))
        per = p.get("per_strategy") or {}
        if per:
            lines.append("       per strategy: " + ", ".join(f"{k} {v:.2e}" for k, v in per.items()))
        for problem in p.get("problems", []):
            lines.append(f"       {problem}")
    lines.append("")
    bench = summary.get("bench")
    lines.append("dexar bench: " + (json.dumps(bench) if bench else "no result"))
    t = summary.get("torch")
    if t:
        lines.append(f"transformers {t['transformers']} (torch {t['torch']}, {t['attn_implementation']}), "
                     f"{t['device']} {t['dtype']}: prefill {t['prefill_ms']:.1f} ms, decode "
                     f"{t['decode_ms_per_token']:.2f} ms/token ({t['decode_tokens_per_s']:.1f} tokens/s), "
                     f"{t['prompt_tokens']}-token prompt; {t['note']}")
    else:
        lines.append("transformers: no result")
    for name, value in summary["ratios"].items():
        lines.append(f"  {name}: {value:.2f}")
    lines.append("")
    lines.append("result: " + ("all checks passed" if summary["ok"] else "FAILED"))
    for f in summary["failures"]:
        lines.append(f"  {f}")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("libdirs")
    p.add_argument("sonames", nargs="+")
    p.set_defaults(func=cmd_libdirs)
    p = sub.add_parser("compare")
    p.add_argument("reference")
    p.add_argument("run")
    p.add_argument("tol", type=float)
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("torch-decode")
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--vocab", type=int, required=True, help="the bundled tokenizer's vocabulary size")
    p.add_argument("--prompt-tokens", type=int, required=True)
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--vision-hidden", type=int, default=256)
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--patch-size", type=int, default=2)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_torch_decode)
    p = sub.add_parser("report")
    p.add_argument("results")
    p.set_defaults(func=cmd_report)
    args = parser.parse_args()
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
