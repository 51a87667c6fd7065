# TwinLedger — every target installs what it needs first and skips finished setup.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TL := $(VENV)/bin/twinledger
PYTEST_ARGS ?=

.PHONY: setup demo test bench compile clean-venv help

help:
	@echo "make demo   - install what is missing, then run the supply-chain pilot on a local devnet"
	@echo "make test   - install what is missing, then run every test"
	@echo "make setup  - install only (Python venv from requirements.lock, npm toolchain, age tool)"
	@echo "make bench  - run every benchmark (one JSON line each)"
	@echo "make compile - recompile contracts into contracts/artifacts"

setup: $(VENV)/.installed node_modules/.installed .age-tool

# Python: a venv pinned by requirements.lock; re-run only when the lock, the project or the
# native accelerator's sources change (vault/_accel is compiled by `pip install -e .`).
ACCEL_SRC := setup.py vault/_accel/_accel.c vault/_accel/build.py
$(VENV)/.installed: requirements.lock pyproject.toml $(ACCEL_SRC) .native-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# npm: Anvil, solc and OpenZeppelin exactly as package-lock.json pins them.
# `npm install` rather than `npm ci`: @foundry-rs/anvil lists every platform's binary as an
# optional dependency and the other platforms' packages are not served here, so `npm ci`
# refuses the lock; `npm install` honours the lock and skips the unavailable optionals.
node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

# A C compiler and OpenSSL's headers (Debian: gcc, libssl-dev) for vault/_accel, and strace,
# which tests/vault/test_blockstore_native.py uses to check the native put's syscalls.
.native-deps:
	@{ command -v gcc >/dev/null 2>&1 && test -f /usr/include/openssl/evp.h && command -v strace >/dev/null 2>&1; } || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq gcc libssl-dev strace >/dev/null; }
	@test -f /usr/include/openssl/evp.h && touch $@

# The `age` command-line tool (Debian package) for interoperability tests and benchmarks.
.age-tool:
	@command -v age >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq age >/dev/null; }
	@command -v age >/dev/null && touch $@

compile: setup
	$(PY) -m ledger.compiler --write

demo: setup
	$(TL) pilot

# --dist loadfile: every test module runs on one worker, so module-scoped clusters and the
# tests that build on each other's state stay together. (`loadgroup` would be finer, but
# with pytest 9 xdist's group marker no longer takes effect: it rewrites Item._nodeid.)
test: setup
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

bench: setup
	@for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV) node_modules .age-tool .native-deps vault/_accel/_lib.*
