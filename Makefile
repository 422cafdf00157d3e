# The two set-up commands of the README. Both install what is missing first (scripts/setup.sh).
.PHONY: demo test build

CARGO ?= cargo

build:
	scripts/setup.sh demo
	$(CARGO) build --release --locked

# The main job: plan on the bundled snapshot of the seed's 4 x MetaX MXC500 host.
demo: build
	target/release/nodeagent plan --from testdata/hosts/seed-4xmxc500

# Everything CI checks: formatting, lints, all tests.
test:
	scripts/setup.sh test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	$(CARGO) test --locked
