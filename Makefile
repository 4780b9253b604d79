.PHONY: run test lint fmt bench
# Fetch the demo models from PyPI, build, and serve them on http://127.0.0.1:8080
run:
	scripts/run.sh
# Everything CI runs: tiny models, Rust tests, the openai SDK conformance suite
test:
	scripts/test.sh
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
fmt:
	cargo fmt --all
