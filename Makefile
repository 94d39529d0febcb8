# Two commands for a fresh machine (Python 3.11+, Node 20+):
#   make run    install the Python packages, then start the daemon and API on the embedded defaults
#   make test   install (Python, npm and, as root through apt-get, Debian packages), then run
#               the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: install system-deps run test lint contracts clean devnet

$(PY_STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

install: $(PY_STAMP) $(NODE_STAMP) system-deps

# Runs apt-get as root (sudo when not root) for what is missing of: prometheus/promtool,
# docker-compose, systemd-analyze for the operations tests; nginx and caddy for the gateway
# tests (their packaged services are not started). README "Two commands" says so too.
system-deps:
	bash scripts/install_system_deps.sh

run: $(PY_STAMP)
	$(BIN)/watcher run

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

contracts: $(NODE_STAMP)
	node scripts/compile_contracts.js

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache

# Anvil + local Solana node + embedded PostgreSQL + watcher + API; then, in another
# terminal: .venv/bin/python scripts/pay.py --chain base (or solana). Ports taken by
# another process are named at start; move them with e.g. DEVNET_ARGS='--api-port 9000'.
DEVNET_ARGS ?=
devnet: install
	$(BIN)/python scripts/devnet.py $(DEVNET_ARGS)
