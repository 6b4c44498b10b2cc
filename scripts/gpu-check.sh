#!/usr/bin/env bash
# Check the CUDA build of dexar on a GPU machine (see docs/cuda.md). Runs from
# a copy of the repository plus the binary built by scripts/build-cuda.sh;
# needs no Rust toolchain and no network: only the NVIDIA driver, a python
# with numpy, and (for the comparison with transformers) torch and
# transformers whose nvidia-* wheels provide cuBLAS and the other CUDA 13
# libraries the binary links against.
#
#  1. explain parity: `dexar explain` on the parity fixtures (tiny-llava,
#     tiny-bakllava) on the CPU in f32 (the reference, same binary), then with
#     --device cuda in f32 (all maps within 1e-4) and bf16 (DEX-AR maps
#     within 1e-1, the tolerance of the repo's half-precision test), same
#     greedy tokens; the CPU's bf16 run is reported beside it for context;
#  2. dexar bench on a LLaVA-1.5-7B-shaped synthetic model in f16 (BENCH_ARGS);
#  3. transformers' prefill and greedy decoding on a randomly initialised LLaVA
#     of the same shape, for the ratio.
# It writes RESULTS/summary.json and RESULTS/summary.txt, and exits 1 when a
# check failed. Expected run time: a few minutes; every step has a time limit
# and the whole run stops before 10 minutes.
#
# usage: scripts/gpu-check.sh [--cpu-only] [--bin PATH] [--results DIR]
#   --cpu-only   dry run without a GPU: every 'test' run and the bench on the
#                CPU, transformers on the CPU with a small shape if torch is
#                there; checks the script and its comparisons, not CUDA
#   --bin        the dexar binary (default: $DEXAR_BIN, else target/cuda/release/dexar)
#   --results    output directory (default: gpu-check-results/<date-time>)
# Environment: PYTHON (default python3).

set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER=$REPO/scripts/cuda/gpu_check.py
FIXTURES=$REPO/crates/dexar-model/tests/fixtures
PYTHON=${PYTHON:-python3}
BIN=${DEXAR_BIN:-$REPO/target/cuda/release/dexar}
CPU_ONLY=0
RESULTS=""
START=$(date +%s)
BUDGET_S=570 # the whole run, under 10 minutes

die() { printf 'gpu-check: error: %s\n' "$*" >&2; exit 2; }
step() { printf '\n==> [%ss] %s\n' "$(($(date +%s) - START))" "$*"; }

while (($#)); do
    case "$1" in
        --cpu-only) CPU_ONLY=1 ;;
        --bin) BIN=${2:?--bin needs a path}; shift ;;
        --results) RESULTS=${2:?--results needs a directory}; shift ;;
        -h|--help) sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (try --help)" ;;
    esac
    shift
done

# ---- what to run ------------------------------------------------------------
EXPLAIN_ARGS=(--image "$FIXTURES/images/square.png" --prompt "What is in the image?"
    --max-tokens 5 --layer-index 0 --no-png)
if ((CPU_ONLY)); then
    TEST_DEVICE=cpu
    # Small enough for a laptop CPU; only the plumbing is being checked.
    BENCH_ARGS=(--synthetic 2x256 --dtype f32 --device cpu --tokens 4 --repeat 1 --layer-index 0)
    TORCH_ARGS=(--layers 2 --hidden 256 --dtype f32 --device cpu --tokens 4 --repeat 1)
else
    TEST_DEVICE=cuda
    # ---- bench: LLaVA-1.5-7B shape in f16. `dexar bench`'s flags may change
    # (issue 16 adds stages); adjust BENCH_ARGS here, the report reads the
    # JSON it writes whatever its fields.
    BENCH_ARGS=(--synthetic 32x4096 --dtype f16 --device cuda --tokens 16 --repeat 1 --layer-index 0)
    TORCH_ARGS=(--layers 32 --hidden 4096 --dtype f16 --device cuda --tokens 16 --repeat 3)
fi

# ---- preflight --------------------------------------------------------------
[[ -x $BIN ]] || die "no dexar binary at $BIN (build it with scripts/build-cuda.sh, or pass --bin)"
"$PYTHON" -c 'import numpy' 2>/dev/null || die "'$PYTHON' cannot import numpy (set PYTHON)"
[[ -d $FIXTURES/tiny-llava ]] || die "no fixtures at $FIXTURES: run from a copy of the repository"
RESULTS=${RESULTS:-$REPO/gpu-check-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RESULTS" || die "cannot create $RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)

step "libraries: the binary's NEEDED entries, CUDA ones from the Python nvidia-* packages"
mapfile -t NEEDED < <(readelf -d "$BIN" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
((${#NEEDED[@]})) || die "readelf could not read $BIN (is binutils installed?)"
CUDA_LIBS=()
for lib in "${NEEDED[@]}"; do
    case "$lib" in libcublas* | libcudart* | libcurand* | libnvrtc*) CUDA_LIBS+=("$lib") ;; esac
done
if ((${#CUDA_LIBS[@]})); then
    # Prepended, so the wheels' CUDA 13 libraries win over any others; a
    # library not found there may still come from LD_LIBRARY_PATH (ldd decides).
    LIB_DIRS=$("$PYTHON" "$HELPER" libdirs "${CUDA_LIBS[@]}")
    [[ -n $LIB_DIRS ]] && export LD_LIBRARY_PATH=$LIB_DIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
UNRESOLVED=$(ldd "$BIN" | grep 'not found')
[[ -z $UNRESOLVED ]] || die "unresolved libraries:
$UNRESOLVED
libcuda.so.1 comes with the NVIDIA driver; the others with the CUDA 13 nvidia-* Python wheels
(nvidia-cublas, nvidia-cuda-runtime, nvidia-cuda-nvrtc, nvidia-curand) that PyTorch for CUDA 13 installs"
ldd "$BIN" >"$RESULTS/ldd.txt"

GPU="" DRIVER=""
if command -v nvidia-smi >/dev/null; then
    nvidia-smi >"$RESULTS/nvidia-smi.txt" 2>&1
    GPU=$(nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader 2>/dev/null | head -n1)
    DRIVER=$(sed -n 's/.*Driver Version: *\([0-9.]*\).*CUDA Version: *\([0-9.]*\).*/driver \1, CUDA \2/p' "$RESULTS/nvidia-smi.txt" | head -n1)
elif ((!CPU_ONLY)); then
    echo "nvidia-smi not found; going on (the driver may still be there)"
fi
echo "gpu: ${GPU:-none found}; ${DRIVER:-}"

"$PYTHON" - "$RESULTS/plan.json" "$BIN" "$CPU_ONLY" "$GPU" "$DRIVER" <<'EOF'
import json, os, sys, time
path, binary, cpu_only, gpu, driver = sys.argv[1:]
json.dump({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "binary": binary,
           "binary_bytes": os.path.getsize(binary), "cpu_only": cpu_only == "1",
           "gpu": gpu, "driver": driver, "fixtures": ["tiny-llava", "tiny-bakllava"]},
          open(path, "w"), indent=1)
EOF

# Runs "$@" with its output in LOG, limited to LIMIT seconds and to what is
# left of the whole run's budget.
run_logged() {
    local limit=$1 log=$2
    shift 2
    local left=$((BUDGET_S - ($(date +%s) - START)))
    ((limit > left)) && limit=$left
    if ((limit < 5)); then
        echo "  skipped: the run's ${BUDGET_S} s budget is spent" | tee "$log"
        return 124
    fi
    local t0=$(date +%s) rc=0
    timeout --kill-after=5 "$limit" "$@" >"$log" 2>&1 || rc=$?
    local took=$(($(date +%s) - t0))
    if ((rc == 0)); then
        echo "  ok (${took} s)"
    else
        ((rc == 124)) && echo "  TIMED OUT after ${limit} s" >>"$log"
        echo "  FAILED (exit $rc after ${took} s): $(tail -n 3 "$log" | tr '\n' ' ')"
    fi
    return $rc
}

# ---- 1. explain parity ------------------------------------------------------
for fixture in tiny-llava tiny-bakllava; do
    RUNS=("ref cpu f32" "test $TEST_DEVICE f32" "test $TEST_DEVICE bf16")
    # The CPU's own bf16 error, to read the GPU's against (in --cpu-only it is the test run).
    ((CPU_ONLY)) || RUNS+=("context cpu bf16")
    for run in "${RUNS[@]}"; do
        read -r role device dtype <<<"$run"
        out=$RESULTS/explain/$fixture/$role-$dtype
        mkdir -p "$out"
        step "explain $fixture --device $device --dtype $dtype"
        run_logged 120 "$out/log.txt" "$BIN" explain --model "$FIXTURES/$fixture" \
            --device "$device" --dtype "$dtype" "${EXPLAIN_ARGS[@]}" --out "$out"
    done
done

# ---- 2. dexar bench -----------------------------------------------------------
mkdir -p "$RESULTS/bench"
step "dexar bench ${BENCH_ARGS[*]}"
run_logged 240 "$RESULTS/bench/bench.log" "$BIN" bench "${BENCH_ARGS[@]}" --json "$RESULTS/bench/bench.json"
cat "$RESULTS/bench/bench.log"

# ---- 3. transformers on the same shape ----------------------------------------
mkdir -p "$RESULTS/torch"
step "transformers: prefill + greedy decoding on a random LLaVA of the bench's shape"
if "$PYTHON" -c 'import torch, transformers' 2>/dev/null; then
    # The same vocabulary and prompt length as the bench: the bundled
    # tokenizer's (via its exported config) and the bench's prompt_tokens.
    VOCAB="" PROMPT_TOKENS=""
    if [[ -f $RESULTS/bench/bench.json ]] && "$BIN" toy export "$RESULTS/torch/bundled" >"$RESULTS/torch/export.log" 2>&1; then
        VOCAB=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["text_config"]["vocab_size"])' \
            "$RESULTS/torch/bundled/config.json" 2>/dev/null)
    fi
    PROMPT_TOKENS=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt_tokens"])' \
        "$RESULTS/bench/bench.json" 2>/dev/null)
    if [[ -n $VOCAB && -n $PROMPT_TOKENS ]]; then
        run_logged 240 "$RESULTS/torch/torch.log" "$PYTHON" "$HELPER" torch-decode "${TORCH_ARGS[@]}" \
            --vocab "$VOCAB" --prompt-tokens "$PROMPT_TOKENS" --out "$RESULTS/torch/torch.json"
        cat "$RESULTS/torch/torch.log"
    else
        echo "  skipped: no vocabulary size (torch/export.log) or no bench prompt length (bench/bench.log)" |
            tee "$RESULTS/torch/torch.log"
    fi
else
    echo "  skipped: '$PYTHON' cannot import torch and transformers" | tee "$RESULTS/torch/torch.log"
fi

# ---- summary --------------------------------------------------------------------
step "summary ($RESULTS)"
"$PYTHON" "$HELPER" report "$RESULTS"
rc=$?
echo "written: $RESULTS/summary.json, $RESULTS/summary.txt (total $(($(date +%s) - START)) s)"
exit $rc
