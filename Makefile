# p2pchat — `make help` lists the targets.
#
# One optimised profile (release) serves run, test and bench, so the
# workspace compiles once.

CARGO   ?= cargo
BIN     := target/release
PREFIX  ?= $(HOME)/.local
DESTDIR ?=

.DEFAULT_GOAL := help
.PHONY: help build run test check fmt lint clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build p2pchatd and p2pchat (release)
	$(CARGO) build --release --workspace --bins

run: build ## Build, start a daemon for this terminal and follow the room
	@./scripts/run.sh $(BIN)

test: build ## What CI runs: format check, clippy -D warnings, every test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) test --release --workspace

check: test ## Same as test (fmt, clippy, tests)

fmt: ## Format the code
	$(CARGO) fmt --all

clean: ## Remove build output
	$(CARGO) clean
