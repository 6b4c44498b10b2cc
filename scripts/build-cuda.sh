#!/usr/bin/env bash
# Build dexar with CUDA support (`--features cuda`) on a machine that has no
# CUDA toolkit and no GPU. See docs/cuda.md.
#
# 1. Installs the CUDA 13.0 compiler, headers and libraries from PyPI wheels
#    into $DEXAR_CUDA_TOOLKIT (default target/cuda-toolkit), once; later runs
#    reuse it.
# 2. Generates a link-time stand-in for the driver library (libcuda.so.1),
#    which no wheel ships (scripts/cuda/libcuda_stub.py says why).
# 3. Builds a stripped release binary into $DEXAR_CUDA_TARGET_DIR (default
#    target/cuda), apart from the normal target/ so the CPU build is untouched.
#
# Why CUDA 13.0 and not the newest 13.x: candle's kernels are embedded as PTX
# that the driver compiles (JIT) when they are first loaded, and a driver only
# accepts PTX whose ISA version is not newer than its own CUDA version. nvcc
# 13.0 writes PTX ISA 9.0, which every CUDA 13 driver accepts; a newer nvcc
# would write PTX that a 13.0 driver rejects (CUDA_ERROR_UNSUPPORTED_PTX_VERSION).
# The GPU machine's driver minor version is not known, so the oldest wins.
#
# Environment (all optional):
#   CUDA_COMPUTE_CAP      GPU architecture to compile for (default 90: H100/H200)
#   DEXAR_CUDA_TOOLKIT    where the toolkit goes (default target/cuda-toolkit)
#   DEXAR_CUDA_TARGET_DIR cargo target directory (default target/cuda)
#   DEXAR_BUILD_JOBS      parallel jobs for cargo and nvcc (default 2)
#   PYTHON                python with pip, for the wheels (default python3)
#
# usage: scripts/build-cuda.sh [--toolkit-only]

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLKIT=${DEXAR_CUDA_TOOLKIT:-$REPO/target/cuda-toolkit}
TARGET_DIR=${DEXAR_CUDA_TARGET_DIR:-$REPO/target/cuda}
JOBS=${DEXAR_BUILD_JOBS:-2}
PYTHON=${PYTHON:-python3}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
MAX_BINARY_MB=60

# CUDA 13.0 Update 2, component by component (the versions NVIDIA ships
# together; cuBLAS and cuRAND have their own numbering). PyTorch 2.11 pins the
# same release (cuda-toolkit==13.0.2), so the GPU machine's wheels match.
WHEELS=(
    nvidia-cuda-nvcc==13.0.88     # nvcc, ptxas, fatbinary
    nvidia-cuda-crt==13.0.88      # nvcc's crt/ headers
    nvidia-nvvm==13.0.88          # cicc and libdevice, nvcc's device front end
    nvidia-cuda-runtime==13.0.96  # cuda_runtime.h, libcudart.so.13
    nvidia-cuda-cccl==13.0.85     # CCCL (cuda/std, cub, thrust) headers
    nvidia-cuda-nvrtc==13.0.88    # libnvrtc.so.13
    nvidia-cublas==13.1.0.3       # libcublas.so.13, libcublasLt.so.13
    nvidia-curand==10.4.0.35      # libcurand.so.10
)
# Libraries the binary links against, and the unversioned names the linker
# looks for (a real toolkit has these symlinks; wheels ship only the SONAMEs).
LINK_LIBS=(libcudart.so.13 libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10)

START=$(date +%s)
step() { printf '\n==> [%ss] %s\n' "$(($(date +%s) - START))" "$*"; }
die() { printf 'build-cuda: error: %s\n' "$*" >&2; exit 1; }

TOOLKIT_ONLY=0
case "${1:-}" in
    "") ;;
    --toolkit-only) TOOLKIT_ONLY=1 ;;
    -h|--help) sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (try --help)" ;;
esac

step "checking prerequisites"
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
command -v cc >/dev/null || die "no C compiler (cc): nvcc needs gcc/g++ (apt-get install build-essential)"
command -v g++ >/dev/null || die "no g++: nvcc needs a host C++ compiler (apt-get install g++)"
command -v readelf >/dev/null || die "readelf not found (apt-get install binutils)"
"$PYTHON" -m pip --version >/dev/null 2>&1 ||
    die "'$PYTHON -m pip' does not work: install pip, or set PYTHON to a python that has it"
echo "cargo: $(cargo --version); host compiler: $(g++ --version | head -n1); compute capability: $CUDA_COMPUTE_CAP"

# ---- 1. toolkit -------------------------------------------------------------
CUDA_ROOT_DIR=$TOOLKIT/site/nvidia/cu13
STAMP=$TOOLKIT/installed.txt
if [[ -f $STAMP && "$(cat "$STAMP")" == "$(printf '%s\n' "${WHEELS[@]}")" && -x $CUDA_ROOT_DIR/bin/nvcc ]]; then
    step "CUDA toolkit: reusing $TOOLKIT"
else
    step "CUDA toolkit: installing ${#WHEELS[@]} wheels from PyPI into $TOOLKIT (about 1.2 GB)"
    rm -rf "$TOOLKIT.partial"
    mkdir -p "$TOOLKIT.partial"
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check \
        --no-deps --only-binary=:all: --target "$TOOLKIT.partial/site" "${WHEELS[@]}" ||
        die "pip could not install the CUDA wheels (is PyPI reachable?)"
    printf '%s\n' "${WHEELS[@]}" >"$TOOLKIT.partial/installed.txt"
    # Swap in only a complete install, so an interrupted run starts over.
    rm -rf "$TOOLKIT"
    mv "$TOOLKIT.partial" "$TOOLKIT"
fi
[[ -x $CUDA_ROOT_DIR/bin/nvcc ]] || die "no nvcc in $CUDA_ROOT_DIR/bin: the wheel layout changed"
NVCC_RELEASE=$("$CUDA_ROOT_DIR/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
[[ $NVCC_RELEASE == 13.0 ]] || die "nvcc reports release '$NVCC_RELEASE', expected 13.0"
echo "nvcc: release $NVCC_RELEASE ($CUDA_ROOT_DIR/bin/nvcc)"

for lib in "${LINK_LIBS[@]}"; do
    [[ -f $CUDA_ROOT_DIR/lib/$lib ]] || die "missing $CUDA_ROOT_DIR/lib/$lib"
    ln -sfn "$lib" "$CUDA_ROOT_DIR/lib/${lib%.so.*}.so"
done

# ---- 2. libcuda.so.1 stand-in -----------------------------------------------
step "driver stub: lib/stubs/libcuda.so (SONAME libcuda.so.1)"
(cd "$REPO" && cargo fetch --locked --quiet) || die "cargo fetch failed"
CUDARC_SRC=$(cd "$REPO" && cargo metadata --format-version 1 --locked --features dexar-cli/cuda |
    "$PYTHON" -c 'import json, os, sys
pkgs = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"]
print(os.path.join(os.path.dirname(pkgs[0]["manifest_path"]), "src") if pkgs else "")') ||
    die "cargo metadata failed"
[[ -n $CUDARC_SRC ]] || die "cudarc is not in the dependency graph of dexar-cli/cuda"
STUB_DIR=$CUDA_ROOT_DIR/lib/stubs
mkdir -p "$STUB_DIR"
"$PYTHON" "$REPO/scripts/cuda/libcuda_stub.py" "$CUDARC_SRC" "$STUB_DIR/libcuda_stub.c.new"
if ! cmp -s "$STUB_DIR/libcuda_stub.c.new" "$STUB_DIR/libcuda_stub.c" || [[ ! -f $STUB_DIR/libcuda.so ]]; then
    cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$STUB_DIR/libcuda.so" -x c "$STUB_DIR/libcuda_stub.c.new" ||
        die "could not compile the libcuda stub"
    mv "$STUB_DIR/libcuda_stub.c.new" "$STUB_DIR/libcuda_stub.c"
else
    rm "$STUB_DIR/libcuda_stub.c.new"
fi
# The name the loader looks for, for trying the binary on this machine.
ln -sfn libcuda.so "$STUB_DIR/libcuda.so.1"

if ((TOOLKIT_ONLY)); then
    step "done (toolkit only): CUDA_ROOT=$CUDA_ROOT_DIR"
    exit 0
fi

# ---- 3. build ---------------------------------------------------------------
export PATH=$CUDA_ROOT_DIR/bin:$PATH
export NVCC=$CUDA_ROOT_DIR/bin/nvcc # candle-kernels' build (cudaforge)
# cudarc's link search uses every one of these that is set: only ours.
unset CUDA_PATH CUDA_ROOT CUDA_TOOLKIT_ROOT_DIR CUDNN_LIB
export CUDA_HOME=$CUDA_ROOT_DIR
export CUDARC_CUDA_VERSION=13000 # cudarc's bindings for CUDA 13.0, not parsed from nvcc
export CUDAFORGE_THREADS=$JOBS
# candle also compiles its GGUF/MoE kernels to machine code (a fatbin linked
# into the binary: 33 MB as nvcc leaves it, about 7 MB compressed for size;
# the driver unpacks it once when the module loads).
export NVCC_APPEND_FLAGS="--compress-mode=size${NVCC_APPEND_FLAGS:+ $NVCC_APPEND_FLAGS}"
export CARGO_PROFILE_RELEASE_STRIP=symbols
# candle-kernels' build script does not watch NVCC_APPEND_FLAGS (nor which
# nvcc it ran): when they change, rebuild the kernels from scratch.
KERNEL_FLAGS="nvcc $NVCC_RELEASE; NVCC_APPEND_FLAGS=$NVCC_APPEND_FLAGS; CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
if [[ -d $TARGET_DIR/release && "$(cat "$TARGET_DIR/kernel-flags.txt" 2>/dev/null)" != "$KERNEL_FLAGS" ]]; then
    step "kernel flags changed: cleaning candle-kernels"
    (cd "$REPO" && cargo clean --release -p candle-kernels --target-dir "$TARGET_DIR") || die "cargo clean failed"
fi
mkdir -p "$TARGET_DIR"
printf '%s\n' "$KERNEL_FLAGS" >"$TARGET_DIR/kernel-flags.txt"
step "cargo build --release --features cuda (jobs: $JOBS; nvcc compiles candle's kernels: expect 20-40 minutes on 2 cores from scratch)"
(cd "$REPO" && cargo build --release --locked -p dexar-cli --features cuda \
    --target-dir "$TARGET_DIR" -j "$JOBS") || die "cargo build failed (see above)"

# ---- 4. check what was built ------------------------------------------------
BIN=$TARGET_DIR/release/dexar
step "checking $BIN"
SIZE=$(stat -c %s "$BIN")
SIZE_MB=$(awk -v s="$SIZE" 'BEGIN { printf "%.1f", s / 1048576 }')
echo "size: $SIZE bytes ($SIZE_MB MiB)"
echo "NEEDED:"
readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/  \1/p'
((SIZE < MAX_BINARY_MB * 1048576)) || die "binary is $SIZE_MB MiB, over the ${MAX_BINARY_MB} MiB limit"
# Run it here with the toolkit's libraries and the stub driver: --help must
# work, and a CUDA device must be refused cleanly.
LOCAL_LIBS=$CUDA_ROOT_DIR/lib:$STUB_DIR
MISSING=$(LD_LIBRARY_PATH=$LOCAL_LIBS ldd "$BIN" | grep 'not found' || true)
[[ -z $MISSING ]] || die "unresolved libraries: $MISSING"
LD_LIBRARY_PATH=$LOCAL_LIBS "$BIN" --help >/dev/null || die "'dexar --help' failed"

step "done in $(($(date +%s) - START)) s: $BIN ($SIZE_MB MiB)"
cat <<EOF
At run time it needs the NVIDIA driver's libcuda.so.1 and the CUDA 13
libraries in the NEEDED list above (the nvidia-* wheels that PyTorch 2.11
installs for CUDA 13.0 have them). To try it here, without a GPU:
  LD_LIBRARY_PATH=$LOCAL_LIBS $BIN --help
On a GPU machine: scripts/gpu-check.sh (docs/cuda.md).
EOF
