# Observer: `make run` starts the whole pipeline locally; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
CHDB   := chdb-core==26.9.0

.PHONY: run test venv dev-venv sdk system-deps unit e2e bench clean

$(VENV)/.runtime: requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps $(CHDB)
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime
dev-venv: $(VENV)/.dev

sdk/node_modules/.installed: sdk/package.json
	cd sdk && (test -f package-lock.json && npm ci --no-audit --no-fund || npm install --no-audit --no-fund)
	touch $@

sdk: sdk/node_modules/.installed
	cd sdk && npm run --silent build

# Debian packages the tests need; installed only when root (else the tests say what is missing).
system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  command -v clickhouse-server >/dev/null || missing="$$missing clickhouse-server"; \
	  test -x /usr/bin/chromium || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then echo "make test: installing Debian packages:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi; \
	else echo "make test: not root; clickhouse-server and chromium must already be installed"; fi

run: venv sdk
	$(PY) scripts/devstack.py

test: dev-venv sdk system-deps
	cd sdk && npm run --silent typecheck && npm test
	$(PY) -m pytest --cov=app --cov=tasks --cov-report=term --cov-fail-under=80 $(PYTEST_ARGS)

unit: dev-venv
	$(PY) -m pytest tests/unit -q

bench: dev-venv
	$(PY) scripts/bench_ingest.py
	$(PY) scripts/bench_pipeline.py

# Every fault case at full scale on servers it starts itself (about 25 min); FAULTS_ARGS="--case 0".
.PHONY: faults
faults: dev-venv system-deps
	$(PY) scripts/faults $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) sdk/node_modules sdk/dist .pytest_cache .coverage
