#!/usr/bin/env bash
# On the CPU machine: stages everything the GPU check needs in $REPO/.gpu (git-ignored),
# for a device run with `carry: [".gpu"]` and the command `bash .gpu/run.sh`.
#   attrib       release build with the GPU path (cudarc, dynamic loading: nothing CUDA
#                is needed here; NVRTC compiles the kernels on the device)
#   compare,     the side-by-side runner and the PyTorch peer script
#   peer.py
#   wheels/      Captum, pytorch-grad-cam (+ ttach), efficientnet-lite-pytorch and the
#                small pure-Python modules they import (tqdm, packaging), installed
#                there with --no-deps next to the device's own PyTorch
#   stand-ins/   import stand-ins for matplotlib, scipy, sklearn and OpenCV, used only
#                where the device lacks them (stand-ins/sitecustomize.py says how)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUTDIR="$REPO/.gpu"
rm -rf "$OUTDIR"; mkdir -p "$OUTDIR/wheels" "$OUTDIR/tools/bench"
(cd "$REPO" && cargo build --release -p attrib-cli --features cuda)
mkdir -p "$OUTDIR/target/release"
cp "$REPO/target/release/attrib" "$OUTDIR/target/release/"
cp "$REPO/tools/bench/compare" "$REPO/tools/bench/peer.py" "$OUTDIR/tools/bench/"
cp "$REPO/tools/gpu/run.sh" "$OUTDIR/"
cp -r "$REPO/tools/gpu/stand-ins" "$OUTDIR/"
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$OUTDIR/wheels" \
    captum==0.9.0 grad-cam==1.5.7 ttach==0.0.3 efficientnet-lite-pytorch==0.1.0 tqdm packaging \
  || python3 -m pip download -q --disable-pip-version-check --no-deps -d "$OUTDIR/wheels" \
    captum==0.9.0 grad-cam==1.5.7 ttach==0.0.3 efficientnet-lite-pytorch==0.1.0 tqdm packaging
# pytorch-grad-cam ships only a source archive: built into a wheel here, since the
# device has no network to fetch a build backend.
for sd in "$OUTDIR"/wheels/*.tar.gz; do
  [ -e "$sd" ] || continue
  python3 -m pip wheel -q --disable-pip-version-check --no-deps -w "$OUTDIR/wheels" "$sd"
  rm "$sd"
done
du -sh "$OUTDIR"; ls -la "$OUTDIR" "$OUTDIR/wheels"
