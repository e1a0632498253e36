#!/usr/bin/env bash
# On a GPU machine: builds attrib-dfdx with the real `cuda` feature (vendored sources,
# offline) and runs the CPU-vs-GPU check. Prints what the machine has either way.
set -u
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
command -v nvcc && nvcc --version | tail -1
export PATH="$PATH:$HOME/.cargo/bin:/usr/local/cargo/bin:/usr/local/cuda/bin"
export CUDA_ROOT="${CUDA_ROOT:-$(dirname "$(dirname "$(command -v nvcc)")")}"
ls "$CUDA_ROOT"/lib64 2>/dev/null | grep -E "^lib(cublas|nvrtc|curand|cuda)\.so" | head
if ! command -v cargo >/dev/null; then
    echo "no Rust toolchain on this machine: the CUDA build cannot run here"
    exit 3
fi
cargo --version
cargo build --release --offline \
    --config 'source.crates-io.replace-with="vendored"' \
    --config 'source.vendored.directory="vendor"' 2>&1 | tail -25 || exit 4
./target/release/attrib-gpu-check "${1:-8}"
