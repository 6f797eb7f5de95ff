# Two commands matter: `make serve` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench bench-quick clean web browser-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(PY) server.py serve --dev

# The embed page's browser tests drive Debian's Chromium (never `playwright install`); its bundle
# check and JS unit tests need node/npm. Installed with apt when missing (CI runs as root).
browser-deps:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)
	@command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)

# Rebuild the embed page bundle (committed under api/embed_static/) from web/ and its lockfile.
web:
	cd web && npm ci --no-audit --no-fund && node build.mjs

test: $(STAMP) browser-deps
	$(PY) -m ruff check .
	$(PY) -m mypy
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} $(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m loadtest.bench
	$(PY) loadtest/bench_recovery.py
	$(PY) loadtest/bench_ot.py

bench-quick: $(STAMP)
	$(PY) -m loadtest.bench --duration 15 --viewers 200 --editors 10

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
