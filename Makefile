# hedgeflow: `make demo` and `make test` set up everything they need on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := operators connectors flows tests infra

.PHONY: install demo test lint format bench fuzz contracts clean chromium

$(STAMP): pyproject.toml requirements.lock | node_modules/.installed
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"need Python 3.11, got {sys.version}"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# The dev chain's npm tools: Anvil (node_modules/.bin/anvil) and solcjs (the Solidity compiler).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

install: $(STAMP)

# Rebuild the committed contract artifacts (infra/contracts/build/) from the Solidity sources.
contracts: node_modules/.installed
	node infra/contracts/build.js

demo: install
	$(BIN)/hedgeflow demo

lint: install
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix $(SOURCES)
	$(BIN)/ruff format $(SOURCES)

# The report's browser test (tests/integration/test_report_browser.py) needs Debian's
# chromium: installed here when missing, as root with apt-get; else make test stops, saying so.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; \
	  else \
	    echo "make test: needs Debian's chromium for the report's browser test; run as root on Debian, or install it (apt-get install chromium)" >&2; exit 1; \
	  fi; }
	@command -v chromium >/dev/null || { echo "make test: chromium still missing after apt-get install chromium" >&2; exit 1; }

test: lint chromium
	$(BIN)/python -m pytest

# 1M mutated messages through both stages' cores (tests/fuzz): prints the count, the
# exceptions that escaped (must be 0) and the share of rejects found in the deadletter (100%).
fuzz: install
	HEDGEFLOW_FUZZ_MESSAGES=1000000 $(BIN)/python -m pytest tests/fuzz/test_mutation.py -q -s

bench: install
	$(BIN)/python tests/bench/oracle_throughput.py
	$(BIN)/python tests/bench/ingest_throughput.py
	$(BIN)/python tests/bench/margin_reprice.py
	$(BIN)/python tests/bench/liquidation_crash.py
	$(BIN)/python tests/bench/risk_replay.py
	PYTHONPATH=. $(BIN)/python tests/bench/executor_throughput.py
	$(BIN)/python tests/bench/routing.py
	PYTHONPATH=. $(BIN)/python tests/bench/block_latency.py
	PYTHONPATH=. $(BIN)/python tests/bench/split_on_chain.py

clean:
	rm -rf $(VENV) node_modules out .pytest_cache .mypy_cache .ruff_cache
