# The single entry point for developers and CI (.ci/run calls `make test`).
# `run`, `test` and `bench` start with scripts/setup.sh, which installs the
# Debian packages this host lacks (as root) or says which are missing.
CARGO ?= cargo
SETUP = ./scripts/setup.sh

.PHONY: all build fmt lint test unit it schema fixtures-update clean bench soak run install uninstall setup

all: build

build:
	$(CARGO) build --workspace

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Install what building, running and testing Launchway need (as root).
setup:
	$(SETUP) test

# Start the platform on its embedded defaults and push the sample app
# (`launchway doctor` first: it stops here when the host is not ready).
run:
	$(SETUP) run
	$(CARGO) build -p launchway
	./scripts/run.sh

# As root: the release binary in /usr/local/bin, /etc/launchway/launchway.toml
# (the documented defaults, only when absent), the systemd unit and the data
# directory. `make uninstall` removes the binary and the unit, never the
# settings nor the data.
install:
	$(SETUP) run
	$(CARGO) build --release -p launchway
	./scripts/install.sh target/release/launchway

uninstall:
	./scripts/install.sh --uninstall

# Everything: lints, unit and crate tests, end-to-end tests. Tests that need
# containerd get one from scripts/with-containerd.sh (the system's, or a
# private one started for the run).
test:
	$(SETUP) test
	$(MAKE) --no-print-directory lint
	./scripts/with-containerd.sh $(CARGO) test --workspace

# Unit and crate tests only.
unit:
	$(SETUP) test
	./scripts/with-containerd.sh $(CARGO) test --workspace --exclude launchway-integration

# End-to-end tests only (they drive the real `launchway` binary).
it:
	$(SETUP) test
	./scripts/with-containerd.sh $(CARGO) test -p launchway-integration

# Regenerate the committed JSON Schema from the model.
schema:
	$(CARGO) run -q -p launchway --bin launchway -- config schema > config-schema/launchway.schema.json
	LAUNCHWAY_UPDATE_SNAPSHOTS=1 $(CARGO) test -q -p launchway-http openapi

# Rewrite every fixture's expected.txt from the current output; review the diff.
fixtures-update:
	UPDATE_EXPECT=1 $(CARGO) test -p launchway-config --test config fixtures

clean:
	$(CARGO) clean

# Benchmarks of the real thing (release build; sshd needs root).
# deploy-bench deploys a static std-only backend (bench/backend) and compares
# the router with Debian's nginx (7 alternated rounds: on a 2-core VM one
# 5 s round of either side varies by up to 30%, so fewer leave the ratio to
# chance); https-bench compares the router's HTTPS with
# nginx terminating TLS with the same certificate in front of the same backend
# (keep-alive throughput and p99, full handshakes per second); activate-bench
# clones 1 GiB on the host disk and on an XFS loop mount (nginx and xfsprogs
# come from scripts/setup.sh); services-bench compares service containers with
# the same servers run on the host (start, 1 GiB branch, idle memory);
# backup-bench backs up and restores 1 GiB (mount files + PostgreSQL) against
# tar | zstd + pg_dump, and untar + loading the dump; api-bench measures the
# HTTPS API (a project page with 100 environments against the admin socket,
# live logs over SSE against the push's own SSH stream, `deploy DIR` against
# `git push`); builders-bench measures dedicated build hosts against Debian's
# registry (push-to-serving built on a builder against built locally, a
# ~300 MB image pulled from the registry against `skopeo copy`, 8 queued
# builds on two builders against one).
# Every bench writes its figures to $(LW_BENCH_DIR)/<bench>.json; a bench that
# fails does not stop the others (the `-` lines). The last line prints one
# table of every figure (bench | measure | figure | baseline | ratio | target
# | met), writes $(LW_BENCH_DIR)/summary.json and target/bench/latest.json, and
# fails when a target is not met or a bench wrote no results. Compare two
# runs with `./target/release/bench-report compare BEFORE.json AFTER.json`.
HOST_TRIPLE = $(shell rustc -vV | sed -n 's/host: //p')
bench: export LW_BENCH_DIR := $(CURDIR)/target/bench/$(shell date -u +%Y%m%dT%H%M%SZ)
bench:
	$(SETUP) bench
	$(CARGO) build --release -q -p launchway -p launchway-bench
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release -q --target $(HOST_TRIPLE) -p launchway-bench-backend
	-./scripts/with-containerd.sh ./target/release/push-bench ./target/release/launchway 5
	-./scripts/with-containerd.sh ./target/release/deploy-bench ./target/release/launchway ./target/$(HOST_TRIPLE)/release/launchway-bench-backend 7
	-./scripts/with-containerd.sh ./target/release/https-bench ./target/release/launchway ./target/$(HOST_TRIPLE)/release/launchway-bench-backend 3
	-./scripts/with-containerd.sh ./target/release/engine-bench
	-./scripts/with-containerd.sh ./target/release/activate-bench ./target/release/launchway
	-./scripts/with-containerd.sh ./target/release/services-bench ./target/release/launchway
	-./scripts/with-containerd.sh ./target/release/backup-bench ./target/release/launchway
	-./scripts/with-containerd.sh ./target/release/web-bench ./target/release/launchway 3
	-./scripts/with-containerd.sh ./target/release/api-bench ./target/release/launchway 5
	-./scripts/with-containerd.sh ./target/release/builders-bench ./target/release/launchway 5
	./target/release/bench-report $(LW_BENCH_DIR)

# soak-bench (issue 25): SOAK_PUSHES pushes (default 1000) of a commit whose
# build is reused; every SOAK_EVERY (100) a row of push time, daemon RSS, state,
# data dir and repos sizes and listing times, then the slope of each after
# warm-up. `make soak SOAK_PUSHES=300`; SOAK_SETTINGS adds settings sections.
SOAK_PUSHES ?= 1000
SOAK_EVERY ?= 100
soak:
	$(SETUP) bench
	$(CARGO) build --release -q -p launchway -p launchway-bench
	SOAK_PUSHES=$(SOAK_PUSHES) SOAK_EVERY=$(SOAK_EVERY) ./scripts/with-containerd.sh ./target/release/soak-bench ./target/release/launchway
