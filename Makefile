# Two commands matter: `make serve` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench bench-quick clean system-deps web dist

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(PY) server.py serve --dev

# Rebuild the embed page bundle (committed under api/embed_static/) from web/ and its lockfile.
web:
	cd web && npm ci --no-audit --no-fund && node build.mjs

# What the tests start for real: Debian's chromium (browser tests), nginx (several hosts) and
# PostgreSQL (--store); node/npm for the embed bundle check and its JS unit tests. Installed with
# apt when missing (CI runs as root on a clean machine).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing system packages:$$missing (apt-get install them as root)"; exit 1; fi; \
		echo "installing system packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

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
	$(PY) loadtest/bench_embed.py
	$(PY) -m loadtest.bench_kernels
	$(PY) loadtest/bench_isolation.py

bench-quick: $(STAMP)
	$(PY) -m loadtest.bench --duration 15 --viewers 200 --editors 10

# One self-contained zipapp (shiv): `python3 dist/agora.pyz serve …` with nothing else installed.
# It holds compiled wheels (orjson, pyzmq, pydantic-core): one file per platform and Python version.
dist: $(STAMP)
	PYTHON=$(PY) bash deploy/build-pyz.sh dist/agora.pyz
	@ls -l dist/agora.pyz

clean:
	rm -rf $(VENV) .venv-locust dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis
