# Two commands matter: `make serve` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench bench-quick clean system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(PY) server.py serve --dev

# Programs the tests run for real (Debian packages; installed when missing and we are root).
system-deps:
	bash .ci/install-nginx

test: $(STAMP) system-deps
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
