#!/usr/bin/env bash
# The whole test suite: Rust unit + integration tests on tiny generated models, then the
# official `openai` Python SDK against the real binary. Installs what it needs (a virtualenv
# with pinned packages) into a cache outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
VENV=$CACHE/venv
mkdir -p "$CACHE"
if ! cmp -s tests/python/requirements.txt "$VENV/requirements.txt" 2>/dev/null; then
  echo "== installing test Python packages into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
  cp tests/python/requirements.txt "$VENV/requirements.txt"
fi
export AIAAS_PYTHON=$VENV/bin/python
export AIAAS_TEST_MODELS=$CACHE/tiny-models
echo "== generating tiny models into $AIAAS_TEST_MODELS"
"$AIAAS_PYTHON" tests/fixtures/make_models.py "$AIAAS_TEST_MODELS"

# The console's browser test: playwright-core from npm (no browser download; Debian's chromium).
if command -v npm >/dev/null; then
  if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.aiaas-lock 2>/dev/null; then
    echo "== installing playwright-core (npm ci)"
    (cd tests/browser && npm ci --no-audit --no-fund --silent && cp package-lock.json node_modules/.aiaas-lock) ||
      echo "npm ci failed: the browser test will skip"
  fi
fi

echo "== cargo build"
cargo build --workspace --all-targets --locked
echo "== cargo test"
# One test at a time: tests compare outputs of separate requests, and a batched step gives
# slightly different floats than an unbatched one. Concurrency has tests of its own.
cargo test --workspace --locked -- --test-threads="${AIAAS_TEST_THREADS:-1}"
echo "== openai SDK conformance"
export AIAAS_BIN=$CARGO_TARGET_DIR/debug/aiaas
"$AIAAS_PYTHON" -m pytest tests/python -q -p no:cacheprovider
