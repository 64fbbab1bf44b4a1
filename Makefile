# Everything a fresh machine needs goes through these targets; see README.md.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit perf browser js bench bench-backplane cluster fuzz clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "icefloe needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever the pinned set or the project metadata changes.
$(STAMP): $(BIN)/python pyproject.toml requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements-dev.lock -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/icefloe demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples scripts
	$(BIN)/ruff format --check src tests bench examples scripts

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# The timing- and memory-sensitive tests (wall-clock rates, latencies, RSS) on
# their own; `make test` runs them too.
perf: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m perf tests/perf

# The browser tests (tests/e2e) drive Debian's chromium; Playwright's own
# browser downloads (`playwright install`) are never used. Installing needs root.
browser:
	@test -x /usr/bin/chromium || { \
		test "$$(id -u)" = 0 || { echo "make browser: run as root to install chromium" >&2; exit 1; }; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } </dev/null; \
	}

# The AI SDK test (tests/integration/test_ai_sdk.py) runs the real `ai` npm
# package in Node: npm installs exactly what tests/js/package-lock.json pins,
# from the registry, into tests/js only (the demo never needs Node).
JS_STAMP := tests/js/node_modules/.installed
$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	@command -v npm >/dev/null || { echo "make js: needs Node.js 20+ and npm" >&2; exit 1; }
	cd tests/js && npm ci --no-audit --no-fund
	@touch $(JS_STAMP)

js: $(JS_STAMP)

# pytest exits 5 when it collects nothing, so an empty run fails here too.
# The suite runs on two workers, a test file on one worker (its servers
# started once); the timing- and memory-sensitive tests (-m perf) run after,
# alone, so that no other test's load skews what they measure.
test: lint typecheck browser js
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile -m "not perf" --durations=15
	$(BIN)/pytest -q -p no:cacheprovider -m perf

# The long fuzz run of the frame codec and the store's record decoders
# (make test runs 100,000 inputs); FUZZ_ITERATIONS and FUZZ_SEED override.
FUZZ_ITERATIONS ?= 2000000
fuzz: $(STAMP)
	FUZZ_ITERATIONS=$(FUZZ_ITERATIONS) PYTHONPATH=src $(BIN)/python tests/fuzzkit.py

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The backplane beside raw redis-py (needs Redis: REDIS=redis://host:port/db);
# NATS=nats://host:4222 also runs the JetStream engine beside raw nats-py.
bench-backplane: $(STAMP)
	$(BIN)/python bench/backplane.py --redis $(or $(REDIS),redis://127.0.0.1:6379/0) $(if $(NATS),--nats $(NATS))

# 3 gateways, 2 workers (when `icefloe worker` exists) and a round-robin proxy
# on this machine's Redis (REDIS=redis://host:port/db): docs/deploy.md.
cluster: $(STAMP)
	$(BIN)/python scripts/cluster.py --redis $(or $(REDIS),redis://127.0.0.1:6379/0)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis tests/js/node_modules
