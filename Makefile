# The single entry point for developers and CI (.ci/run calls `make test`).
CARGO ?= cargo

.PHONY: all build fmt lint test unit it schema fixtures-update clean bench run

all: build

build:
	$(CARGO) build --workspace

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Start the platform on its embedded defaults and push the sample app.
run: build
	./scripts/run.sh

# Everything: lints, unit and crate tests, end-to-end tests. Tests that need
# containerd get one from scripts/with-containerd.sh (the system's, or a
# private one started for the run).
test: lint
	./scripts/with-containerd.sh $(CARGO) test --workspace

# Unit and crate tests only.
unit:
	./scripts/with-containerd.sh $(CARGO) test --workspace --exclude launchway-integration

# End-to-end tests only (they drive the real `launchway` binary).
it:
	./scripts/with-containerd.sh $(CARGO) test -p launchway-integration

# Regenerate the committed JSON Schema from the model.
schema:
	$(CARGO) run -q -p launchway -- config schema > config-schema/launchway.schema.json

# Rewrite every fixture's expected.txt from the current output; review the diff.
fixtures-update:
	UPDATE_EXPECT=1 $(CARGO) test -p launchway-config --test config fixtures

clean:
	$(CARGO) clean

# Benchmarks of the real thing (release build; sshd needs root).
# deploy-bench deploys a static std-only backend (bench/backend) and compares
# the router with Debian's nginx (installed here when missing); activate-bench
# clones 1 GiB on the host disk and on an XFS loop mount (xfsprogs installed
# here when missing).
HOST_TRIPLE = $(shell rustc -vV | sed -n 's/host: //p')
bench:
	$(CARGO) build --release -q -p launchway -p launchway-bench
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release -q --target $(HOST_TRIPLE) -p launchway-bench-backend
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
	command -v mkfs.xfs >/dev/null || [ -x /usr/sbin/mkfs.xfs ] || apt-get install -y -qq --no-install-recommends xfsprogs >/dev/null
	./scripts/with-containerd.sh ./target/release/push-bench ./target/release/launchway 5
	./scripts/with-containerd.sh ./target/release/deploy-bench ./target/release/launchway ./target/$(HOST_TRIPLE)/release/launchway-bench-backend 3
	./scripts/with-containerd.sh ./target/release/engine-bench
	./scripts/with-containerd.sh ./target/release/activate-bench ./target/release/launchway
