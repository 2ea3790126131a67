# The two set-up commands of the README:
#   make demo   the operator takes a simulated Langfuse v2 through the upgrade on a local control plane
#   make test   every test (lint, unit, CRD sync, databases, cluster)
.PHONY: demo test lint unit crd

CARGO ?= cargo

demo:
	tests/demo.sh

test: lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --locked

# Regenerate the committed CRD from the Rust types.
crd:
	$(CARGO) run --quiet --locked -- crd > crds/langfuseupgrades.yaml
