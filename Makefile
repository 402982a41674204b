# p2pchat — `make help` lists the targets.
#
# One optimised profile (release) serves run, test and bench, so the
# workspace compiles once.

CARGO   ?= cargo

# The binaries link the C library statically where its static archive is
# installed (glibc's libc.a, with the compiler): a shared libc maps over a
# MiB of its text into every process, and an idle daemon's RSS is mostly
# text (`make bench`: ~3.4 MiB static, ~4.2 MiB shared). Static linking
# needs an explicit --target, so build scripts and proc macros stay
# dynamic. STATIC=0, or any other system, builds the usual shared way.
HOST    := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
LIBC_A  := $(shell $${CC:-cc} -print-file-name=libc.a 2>/dev/null)
STATIC  ?= $(if $(and $(filter %-linux-gnu,$(HOST)),$(filter /%,$(LIBC_A))),1,0)
# Cargo's output folder: CARGO_TARGET_DIR (or CARGO_BUILD_TARGET_DIR) when
# set, as cargo itself reads them, else ./target.
OUT     := $(or $(CARGO_TARGET_DIR),$(CARGO_BUILD_TARGET_DIR),target)
ifeq ($(STATIC),1)
export CARGO_BUILD_TARGET := $(HOST)
export CARGO_TARGET_$(shell echo '$(HOST)' | tr 'a-z-' 'A-Z_')_RUSTFLAGS := -C target-feature=+crt-static
BIN     := $(OUT)/$(HOST)/release
else
BIN     := $(OUT)/release
endif
PREFIX  ?= $(HOME)/.local
DESTDIR ?=
# Where install-service puts the user unit; systemd reads user units here.
UNITDIR ?= $(HOME)/.config/systemd/user

bindir  := $(DESTDIR)$(PREFIX)/bin
mandir  := $(DESTDIR)$(PREFIX)/share/man/man1
bashdir := $(DESTDIR)$(PREFIX)/share/bash-completion/completions
zshdir  := $(DESTDIR)$(PREFIX)/share/zsh/site-functions
fishdir := $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
# Folders install may create, deepest first: uninstall removes them again
# when they are left empty.
dirs    := $(mandir) $(DESTDIR)$(PREFIX)/share/man \
           $(bashdir) $(DESTDIR)$(PREFIX)/share/bash-completion \
           $(zshdir) $(DESTDIR)$(PREFIX)/share/zsh \
           $(fishdir) $(DESTDIR)$(PREFIX)/share/fish \
           $(DESTDIR)$(PREFIX)/share $(bindir)
progs   := p2pchatd p2pchat

.DEFAULT_GOAL := help
.PHONY: help build run demo test check bench fmt clean install uninstall install-service status

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build p2pchatd and p2pchat (release)
	$(CARGO) build --release --workspace --bins

run: build ## Build and open the chat (p2pchatd starts if none runs)
	@$(BIN)/p2pchat

demo: build ## A live room on loopback only: you and three chatty peers
	@./scripts/demo.sh $(BIN)

test: build ## What CI runs: format check, clippy -D warnings, every test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) test --release --workspace

check: test ## Same as test (fmt, clippy, tests)

bench: build ## Measure DESIGN's numbers on loopback (QUICK=1: smaller, < 60 s)
	$(CARGO) run --release -p p2pchatd --example bench -- $(if $(QUICK),--quick)

fmt: ## Format the code
	$(CARGO) fmt --all

install: build ## Install binaries, man pages, completions (PREFIX=~/.local, DESTDIR)
	install -d $(bindir) $(mandir) $(bashdir) $(zshdir) $(fishdir)
	install -m 0755 $(BIN)/p2pchatd $(BIN)/p2pchat $(bindir)/
	for p in $(progs); do \
	    $(BIN)/$$p --write-man-pages $(mandir) && \
	    $(BIN)/$$p --print-completions bash > $(bashdir)/$$p && \
	    $(BIN)/$$p --print-completions zsh > $(zshdir)/_$$p && \
	    $(BIN)/$$p --print-completions fish > $(fishdir)/$$p.fish || exit 1; \
	done
	@echo "installed in $(DESTDIR)$(PREFIX); make sure $(PREFIX)/bin is on your PATH"

uninstall: ## Remove what install put there (same PREFIX and DESTDIR)
	for p in $(progs); do \
	    rm -f $(bindir)/$$p $(mandir)/$$p.1 $(mandir)/$$p-*.1 $(bashdir)/$$p $(zshdir)/_$$p $(fishdir)/$$p.fish; \
	done
	-for d in $(dirs); do [ -d "$$d" ] && rmdir "$$d" 2>/dev/null; done; true

install-service: install ## Install the systemd user unit (and the binaries)
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|@BINDIR@|$(PREFIX)/bin|' systemd/p2pchatd.service > $(DESTDIR)$(UNITDIR)/p2pchatd.service
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && systemctl --user daemon-reload 2>/dev/null; then \
	    echo "unit installed; start it now and at every login with:"; \
	else \
	    echo "unit installed in $(DESTDIR)$(UNITDIR) (run 'systemctl --user daemon-reload' in your session), then:"; \
	fi
	@echo "  systemctl --user enable --now p2pchatd"

status: ## Is a daemon running, where is its socket, who is linked
	@$(BIN)/p2pchat status && { echo; $(BIN)/p2pchat peers; } || true
	@if command -v systemctl >/dev/null && systemctl --user is-enabled p2pchatd >/dev/null 2>&1; then \
	    echo "service: $$(systemctl --user is-active p2pchatd 2>/dev/null) (systemctl --user status p2pchatd)"; fi

clean: ## Remove build output
	$(CARGO) clean
