# The two set-up commands of the README. Both install what is missing first (scripts/setup.sh).
.PHONY: demo test build

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
	$(CARGO) test --locked
	NODEAGENT_BIN=target/debug/nodeagent scripts/real-engine-check.sh
