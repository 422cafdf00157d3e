# The two set-up commands of the README. Both install what is missing first (scripts/setup.sh).
.PHONY: demo test build fuzz deb image

CARGO ?= cargo

build:
	scripts/setup.sh demo
	$(CARGO) build --release --locked

# The main job: plan the bundled seed host (4 x MetaX MXC500), serve the engine simulator under
# that binding mapped onto this machine, sweep, compare none with auto, write the report.
demo: build
	target/release/nodeagent demo

# Everything CI checks: formatting, lints, all tests, then verify against a real engine
# (llama.cpp's server; its first build on a machine takes minutes, then it is cached).
test:
	scripts/setup.sh test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	NODEAGENT_FUZZ_CASES=$(FUZZ_TEST_CASES) $(CARGO) test --locked
	NODEAGENT_BIN=target/debug/nodeagent scripts/real-engine-check.sh

# Fuzzing (docs/RELIABILITY.md): `make test` runs a bounded slice of the harness in
# tests/fuzz.rs through cargo test; `make fuzz` runs FUZZ_CASES inputs in a release build, the
# hwloc XML child being the release binary, and prints counts per entry point and a total line.
FUZZ_TEST_CASES ?= 2000
FUZZ_CASES ?= 100000
FUZZ_SEED ?= 12

fuzz:
	NODEAGENT_FUZZ_CASES=$(FUZZ_CASES) NODEAGENT_FUZZ_SEED=$(FUZZ_SEED) \
	NODEAGENT_HWLOC_HELPER=$(CURDIR)/target/release/nodeagent \
	$(CARGO) test --release --locked --test fuzz -- --nocapture --test-threads 1

# Packaging for fleets (docs/install.md). `make deb`: the Debian package from the release
# binary, with units, example config, man pages and completions, in target/debian/.
# `make image`: the DaemonSet's image nodeagent:<version> from that package (docs/kubernetes.md);
# IMAGE_BASE is any Debian bookworm image (the default needs a registry), IMAGE_DEPS a folder
# of the .deb files it lacks (offline: pkg/dep-debs.sh downloads them and prints that folder).
IMAGE_BASE ?= debian:bookworm-slim
IMAGE_DEPS ?=

deb: build
	scripts/setup.sh deb
	pkg/build-deb.sh

image: deb
	deploy/image/build.sh "$$(ls -t target/debian/nodeagent_*.deb | head -n 1)" --base $(IMAGE_BASE) \
	  $(if $(IMAGE_DEPS),--deps $(IMAGE_DEPS))
