#!/usr/bin/env bash
# On the GPU machine (PyTorch in its python3, no Rust, no network), from the carried
# .gpu folder made by tools/gpu/build.sh. ResNet-18 and EfficientNet-Lite0 at 224,
# batch 1 and 8: every method's GPU map against the CPU's (rel. diff <= 1e-4), attrib
# against Captum and pytorch-grad-cam on the same GPU in the same run, peak GPU memory.
# Writes to $OUT: gpu.txt (the device), table.md (the table), rows.jsonl, log.txt.
# Exit status 0 only if everything ran and every GPU map matched the CPU's.
set -uo pipefail
cd "$(dirname "$0")"
O="${OUT:-./out}"; mkdir -p "$O"
ROUNDS=${ROUNDS:-1} ITERS=${ITERS:-5}
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | tee "$O/gpu.txt"
PY=python3
# cuBLAS and NVRTC (CUDA 13) from the wheels of the device's PyTorch; libcuda from the
# driver. cudarc opens them by name at run time.
LIBS=$("$PY" -c 'import glob,os,site; print(":".join(sorted({os.path.dirname(p) for sp in site.getsitepackages() for p in glob.glob(sp+"/nvidia/**/lib/lib*.so*", recursive=True)})))')
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64; do
    [ -e "$d/libcuda.so.1" ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
  done
fi
# The peers, next to the device's PyTorch; stand-ins only for modules it lacks.
"$PY" -m pip install -q --no-deps --no-index --target ./py wheels/* 2>&1 | tail -2
export PYTHONPATH="$PWD/py:$PWD/stand-ins"
"$PY" - <<'PYEOF' | tee "$O/python.txt"
import importlib
for m in ["torch", "torchvision", "numpy", "PIL", "captum", "pytorch_grad_cam", "matplotlib", "scipy", "sklearn", "cv2"]:
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "MISSING", type(e).__name__, e)
import sitecustomize
print("stand-ins:", sitecustomize.STUBBED)
PYEOF
chmod +x target/release/attrib tools/bench/compare
echo "== smoke: one GPU map against the CPU"
timeout 120 ./target/release/attrib bench --arch resnet18 --method guided-grad-cam --batch 2 --iters 3 --device cuda --check-cpu 2>&1 | tee "$O/log.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "smoke failed"; exit 1; }
echo "== side by side"
timeout 500 "$PY" tools/bench/compare --python "$PY" --attrib ./target/release/attrib --device cuda \
    --archs resnet18,efficientnet-lite0 --batches 1,8 --rounds "$ROUNDS" --iters "$ITERS" --warmup 2 \
    --threads "$(nproc)" > "$O/table.md" 2> >(tee -a "$O/log.txt" > "$O/rows.jsonl")
rc=$?
cat "$O/table.md"
echo "rc=$rc"
exit $rc
