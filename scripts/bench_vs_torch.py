#!/usr/bin/env python3
"""dexar and transformers side by side on the same checkpoint (not run by CI).

Writes (once) a synthetic LLaVA checkpoint with `dexar bench --synthetic S
--save-checkpoint DIR`, then alternates, --rounds times: one `dexar bench
--model DIR --repeat 1` (its own process) and one transformers run (this
process: LlavaForConditionalGeneration, eager attention, torch's intra-op
threads set to --threads). Interleaving spreads a varying load on the machine
over both. Each stage reports its fastest round; the ratios (dexar/torch, and
dexar's traced/plain) are the medians of the ratios within each round, which
a load that drifts between rounds disturbs less than a ratio of bests.

transformers' stages, defined as dexar's (docs/bench.md):
- prefill_ms: the whole prompt with the image (vision tower, projector,
  decoder) up to the first token's logits;
- plain_ms_per_token: the time after the prefill to decode the remaining
  tokens greedily with the KV cache (N - 1 forward steps and their logits),
  divided by N, the number of tokens.

Usage (the venv of the fixture scripts has torch and transformers):
  cargo build --release -p dexar-cli
  /work/venv-fixtures/bin/python scripts/bench_vs_torch.py \
      --dexar target/release/dexar --synthetic 8x1024 --checkpoint /tmp/synth-8x1024 \
      --tokens 16 --rounds 3 --threads 2 --layer-index 0 --json bench-vs-torch.json
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_dexar(args, extra):
    """One `dexar bench` run; its JSON document."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [args.dexar, "bench", *extra, "--tokens", str(args.tokens), "--threads", str(args.threads),
               "--layer-index", str(args.layer_index), "--dtype", args.dtype, "--json", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
        return json.loads(out.read_text(encoding="utf-8"))


def load_torch(checkpoint, dtype_name, threads):
    import torch
    from transformers import LlavaForConditionalGeneration

    torch.set_num_threads(threads)
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    t0 = time.perf_counter()
    model = LlavaForConditionalGeneration.from_pretrained(
        checkpoint, dtype=dtype, attn_implementation="eager").eval()
    return model, (time.perf_counter() - t0) * 1e3


def torch_inputs(model, checkpoint, prompt_tokens):
    """A prompt of dexar's length: BOS, the image tokens, text tokens; pixels
    of the processor's size (their values do not change the cost)."""
    import torch

    config = json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8"))
    vision = config["vision_config"]
    grid = vision["image_size"] // vision["patch_size"]
    image_token = config["image_token_index"]
    text_tokens = prompt_tokens - 1 - grid * grid
    if text_tokens < 0:
        sys.exit(f"dexar's prompt of {prompt_tokens} tokens cannot hold {grid * grid} image tokens")
    gen = torch.Generator().manual_seed(0)
    words = torch.randint(5, config["text_config"]["vocab_size"], (text_tokens,), generator=gen)
    words[words == image_token] = 5
    ids = torch.cat([torch.tensor([1]), torch.full((grid * grid,), image_token), words]).unsqueeze(0)
    pixels = torch.randn(1, 3, vision["image_size"], vision["image_size"], generator=gen).to(model.dtype)
    return ids, pixels


def torch_round(model, ids, pixels, tokens):
    """(prefill ms, plain decoding ms per token) of one greedy run."""
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(input_ids=ids, pixel_values=pixels, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        past = out.past_key_values
        t1 = time.perf_counter()
        for _ in range(tokens - 1):
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3 / tokens


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dexar", default="target/release/dexar", help="the dexar binary")
    p.add_argument("--checkpoint", required=True, help="the llava-hf directory both load")
    p.add_argument("--synthetic", help="LAYERSxHIDDEN: write the checkpoint first (if the directory does not exist)")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layer-index", type=int, default=0)
    p.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args()
    if args.tokens < 1 or args.rounds < 1 or args.threads < 1:
        sys.exit("--tokens, --rounds and --threads must be at least 1")

    ckpt = Path(args.checkpoint)
    if args.synthetic and not (ckpt / "config.json").exists():
        run_dexar(args, ["--synthetic", args.synthetic, "--save-checkpoint", str(ckpt), "--repeat", "1"])
        print(f"wrote {ckpt} (dexar bench --synthetic {args.synthetic})")
    if not (ckpt / "config.json").exists():
        sys.exit(f"{ckpt}: no config.json (give --synthetic to write the checkpoint)")

    import torch
    import transformers

    model, torch_load_ms = load_torch(ckpt, args.dtype, args.threads)
    dexar_runs, torch_runs, ids, pixels = [], [], None, None
    for r in range(args.rounds):
        doc = run_dexar(args, ["--model", str(ckpt), "--repeat", "1"])
        dexar_runs.append(doc)
        if ids is None:
            ids, pixels = torch_inputs(model, ckpt, doc["prompt_tokens"])
            torch_round(model, ids, pixels, 2)  # warm-up
        torch_runs.append(torch_round(model, ids, pixels, args.tokens))
        print(f"round {r + 1}: dexar prefill {doc['prefill_ms']:.1f} ms, plain {doc['plain_ms_per_token']:.2f} "
              f"ms/token, traced {doc['traced_ms_per_token']:.2f} ms/token | torch prefill "
              f"{torch_runs[-1][0]:.1f} ms, plain {torch_runs[-1][1]:.2f} ms/token", flush=True)

    best = lambda key: min(d[key] for d in dexar_runs)
    dexar = {k: best(k) for k in ("load_ms", "prefill_ms", "plain_ms_per_token", "traced_ms_per_token")}
    dexar["traced_over_plain"] = statistics.median(d["traced_over_plain"] for d in dexar_runs)
    dexar["peak_rss_bytes"] = max(d.get("peak_rss_bytes") or 0 for d in dexar_runs)
    dexar["trace_bytes_per_token"] = dexar_runs[-1]["trace_bytes_per_token"]
    def per_round(key, torch_index):
        """The median over the rounds of dexar's `key` over torch's stage."""
        return statistics.median(d[key] / t[torch_index] for d, t in zip(dexar_runs, torch_runs))

    torch_best = {
        "load_ms": torch_load_ms,
        "prefill_ms": min(r[0] for r in torch_runs),
        "plain_ms_per_token": min(r[1] for r in torch_runs),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    result = {
        "schema": "dexar.bench-vs-torch/1",
        "checkpoint": str(ckpt),
        "dtype": args.dtype,
        "threads": args.threads,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "layers": dexar_runs[-1]["layers"],
        "prompt_tokens": dexar_runs[-1]["prompt_tokens"],
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "dexar": dexar,
        "torch": torch_best,
        "dexar_over_torch": {
            "prefill": per_round("prefill_ms", 0),
            "plain_decoding": per_round("plain_ms_per_token", 1),
            "traced_decoding": per_round("traced_ms_per_token", 1),
        },
    }
    print(f"\n{ckpt}: {result['prompt_tokens']}-token prompt, {args.tokens} tokens, {args.dtype}, "
          f"{args.threads} threads, best of {args.rounds} interleaved rounds")
    ratios = result["dexar_over_torch"]
    print(f"{'best round':28}{'dexar':>10}{'torch':>10}{'dexar/torch (median of rounds)':>32}")
    for name, key, ratio in (("prefill (ms)", "prefill_ms", "prefill"),
                             ("plain decoding (ms/token)", "plain_ms_per_token", "plain_decoding")):
        print(f"{name:28}{dexar[key]:>10.2f}{torch_best[key]:>10.2f}{ratios[ratio]:>32.2f}")
    print(f"{'traced decoding (ms/token)':28}{dexar['traced_ms_per_token']:>10.2f}{'':>10}"
          f"{ratios['traced_decoding']:>32.2f}")
    print(f"traced/plain (dexar, median of rounds): {dexar['traced_over_plain']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
