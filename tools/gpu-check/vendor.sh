#!/usr/bin/env bash
# Vendors this crate's dependencies into ./vendor for an offline build on a GPU
# machine, pruned to fit what can be carried there (about 50 MB): crates for other
# operating systems keep only their manifests, and tests, benches and examples go.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf vendor
cargo vendor --versioned-dirs vendor > /dev/null
python3 - <<'PY'
import json, os, shutil
os.chdir("vendor")
for d in os.listdir("."):
    if not os.path.isdir(d):
        continue
    if d.startswith(("windows", "winapi", "wasi", "wasm", "js-sys", "web-sys", "redox", "hermit")):
        for f in os.listdir(d):
            if f not in ("Cargo.toml", ".cargo-checksum.json"):
                p = os.path.join(d, f)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
        os.makedirs(os.path.join(d, "src"), exist_ok=True)
        open(os.path.join(d, "src", "lib.rs"), "w").close()
    for sub in ("tests", "benches", "examples", "docs", "doc", "test-data", "testdata", "fuzz"):
        if os.path.isdir(os.path.join(d, sub)):
            shutil.rmtree(os.path.join(d, sub))
    if d.startswith("linux-raw-sys"):
        src = os.path.join(d, "src")
        for a in os.listdir(src):
            if os.path.isdir(os.path.join(src, a)) and a != "x86_64":
                shutil.rmtree(os.path.join(src, a))
    if d.startswith("libc-"):
        for sub in ("windows", "solid", "vxworks", "fuchsia", "wasi", "sgx", "xous", "teeos", "trusty", "switch",
                    "psp", "hermit", "unix/bsd", "unix/haiku", "unix/solarish", "unix/nto", "unix/hurd",
                    "unix/redox", "unix/newlib", "unix/aix", "unix/cygwin"):
            shutil.rmtree(os.path.join(d, "src", sub), ignore_errors=True)
    # Pruned files are no longer listed, so cargo does not look for them.
    ck = os.path.join(d, ".cargo-checksum.json")
    j = json.load(open(ck))
    j["files"] = {}
    json.dump(j, open(ck, "w"))
PY
du -sh vendor
