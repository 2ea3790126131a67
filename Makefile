# The two set-up commands of the README:
#   make demo   the operator takes a simulated Langfuse v2 through the upgrade on a local control plane
#   make test   every test: lint, unit + plan + CRD, databases, end to end, GitOps, Helm chart
.PHONY: demo test lint unit db e2e gitops chart crd bench env-up env-down cli-fixtures image catalog

CARGO ?= cargo

demo:
	tests/demo.sh

test: lint unit db e2e gitops chart image

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# No servers: the pure plan over a simulated cluster, builders, CRD sync and CEL rules; and the
# shape of src/ (make shape).
unit: shape
	$(CARGO) test --locked --lib --bins --test crd --test shipping --test fuzz_corpus --test catalog_generate
	$(CARGO) test --locked -p lfu-testkit --lib

# The shape of src/, guarded: no production file over 450 lines, no function in the plan over
# 60 lines, no import circle between modules (tests/shape.rs, from the source text).
.PHONY: shape
shape:
	$(CARGO) test --locked --test shape

# Real PostgreSQL and ClickHouse engine (tests/db/up.sh starts them, always stopped after).
db:
	tests/db/run-tests.sh

# The operator binary against a real control plane and the databases (tests/e2e/run.sh).
e2e:
	tests/e2e/run.sh

# Argo CD health/actions in Lua 5.1 and gopher-lua, Flux health expressions, and every example
# applied to a real apiserver.
gitops:
	tests/gitops/run.sh
	tests/gitops/apply-examples.sh

# Helm chart: lint, render every mode, server-side validation, alert rules and dashboard queries
# against the operator's metric names, helm install on the local control plane, RBAC checked
# with the apiserver's own authorization, and a live run under the chart's ServiceAccount.
chart:
	tests/chart/run.sh

# Per-poll Postgres cost at 100 thousand and 10 million rows (measured, not asserted).
bench:
	benches/run-db-bench.sh

# The operator image built here with buildah (FROM scratch, static musl release binary), then
# inspected: non-root user, entrypoint, nothing but the binary, size, started read-only as 65532.
image:
	tests/image/build.sh
	tests/image/inspect.sh

# Regenerate the objects the `kubectl lfu` rendering tests read (from the plan simulation), then
# the expected text; review both diffs before committing.
cli-fixtures:
	$(CARGO) test --locked --lib generate_cli_fixtures -- --ignored
	LFU_BLESS=1 $(CARGO) test --locked --lib cli::tests

# Regenerate the release catalog (catalog/langfuse.yaml) from Langfuse's history merged with
# catalog/overlay.yaml: from a Langfuse git checkout (LANGFUSE_CHECKOUT=path; the test's
# history is rewritten from it too), else from the test's history (tests/catalog/history.yaml),
# which gives the committed catalog byte for byte. Then the chart's admission policy from it.
catalog:
ifdef LANGFUSE_CHECKOUT
	$(CARGO) run --quiet --locked --bin langfuse-upgrade-operator -- catalog generate --from $(LANGFUSE_CHECKOUT) > catalog/langfuse.yaml.new
	mv catalog/langfuse.yaml.new catalog/langfuse.yaml
	LANGFUSE_CHECKOUT=$(LANGFUSE_CHECKOUT) $(CARGO) test --locked --test catalog_generate -- --ignored write_history
else
	$(CARGO) test --locked --test catalog_generate -- --ignored write_catalog
endif
	$(CARGO) run --quiet --locked --bin langfuse-upgrade-operator -- admission-policy > charts/langfuse-upgrade-operator/templates/admission-policy.yaml

# Regenerate the committed CRD from the Rust types (and the chart's admission policy from the
# release catalog).
crd:
	$(CARGO) run --quiet --locked --bin langfuse-upgrade-operator -- crd > crds/langfuseupgrades.yaml
	cp crds/langfuseupgrades.yaml charts/langfuse-upgrade-operator/crds/langfuseupgrades.yaml
	$(CARGO) run --quiet --locked --bin langfuse-upgrade-operator -- reference > docs/reference.md
	$(CARGO) run --quiet --locked --bin langfuse-upgrade-operator -- admission-policy > charts/langfuse-upgrade-operator/templates/admission-policy.yaml

# A control plane and the test databases that stay up for manual work (`make env-down` stops
# them). Then: `. $(LFU_ENV_DIR)/cluster/env; . $(LFU_ENV_DIR)/db/env` and e.g.
# `cargo test --test e2e -- --include-ignored happy_path`.
LFU_ENV_DIR ?= /tmp/lfu-env
env-up:
	mkdir -p $(LFU_ENV_DIR) && chmod 755 $(LFU_ENV_DIR)
	tests/cluster/up.sh $(LFU_ENV_DIR)/cluster
	tests/db/up.sh $(LFU_ENV_DIR)/db
	tests/prometheus/up.sh $(LFU_ENV_DIR)/prometheus
	@echo "env-up: export LFU_TEST_CLUSTER_ENV=$(LFU_ENV_DIR)/cluster/env LFU_TEST_DB_ENV=$(LFU_ENV_DIR)/db/env LFU_TEST_PROMETHEUS_ENV=$(LFU_ENV_DIR)/prometheus/env"

env-down:
	-tests/cluster/down.sh $(LFU_ENV_DIR)/cluster
	-tests/db/down.sh $(LFU_ENV_DIR)/db
	-tests/prometheus/down.sh $(LFU_ENV_DIR)/prometheus
	rm -rf $(LFU_ENV_DIR)

# Bad input never panics: each cargo-fuzz target (fuzz/fuzz_targets/, bodies in fuzz/src/lib.rs)
# for FUZZ_SECONDS, niced, one process, growing fuzz/corpus/<target>/; a crash is written to
# fuzz/artifacts/<target>/ and stops the run. Needs the nightly toolchain and cargo-fuzz
# (installed here if missing). `cargo test --test fuzz_corpus` replays the corpora on stable.
.PHONY: fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= spec version migration_row
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	for t in $(FUZZ_TARGETS); do \
		nice -n 10 $(CARGO) +nightly fuzz run --codegen-units 16 $$t fuzz/corpus/$$t -- \
			-dict=fuzz/dict/$$t.dict -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=4096 \
			-print_final_stats=1 || exit 1; \
	done

# Argo Rollouts' blue-green switch and resting cost on the local control plane (measured, not
# asserted): benches/peers/run.sh, table in target/bench-peers/argo.md. BENCH_RUNS (20),
# BENCH_REST_SECONDS (300; e.g. 60 for a trial), BENCH_BEFORE_REV (an earlier commit timed in the
# same runs: target/bench-peers/before-after.md).
.PHONY: bench-peers
bench-peers:
	benches/peers/run.sh
