# Observer: `make run` starts the whole pipeline locally; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: run test lint venv dev-venv sdk system-deps unit e2e bench clean outages

# Hashed locks (requirements/, from pyproject.toml by `make lock`): local.txt = runtime + embedded
# servers + honcho (`make run`), dev.txt = all of it + the test tools; chdb-core alone (its
# pandas/pyarrow are not needed). Every lock is installed with --require-hashes --no-deps, then
# `pip check`: pip installs exactly the lock, never resolves anything itself (an extra such as
# coverage[toml] would otherwise be resolved to whatever release is newest that day), and a lock
# that misses a dependency fails here, loudly, on the day it is written.
PIP_LOCK := $(PIP) install -q --disable-pip-version-check --require-hashes --no-deps -r
# The repository itself is put on the venv's path by a .pth file (no build step).
$(VENV)/.runtime: requirements/local.txt requirements/chdb.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCK) requirements/local.txt
	$(PIP_LOCK) requirements/chdb.txt
	$(PY) -c 'import pathlib, sys, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "observer.pth").write_text(sys.argv[1] + "\n")' "$(CURDIR)"
	$(PY) -m devtools.locks check
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements/dev.txt
	$(PIP_LOCK) requirements/dev.txt
	$(PY) -m devtools.locks check
	touch $@

# Re-resolve the locks after editing pyproject.toml (needs the package index; uv is in dev).
UV_COMPILE = $(VENV)/bin/uv pip compile --universal --python-version 3.11 --generate-hashes --quiet --custom-compile-command 'make lock'
.PHONY: lock
lock: $(VENV)/.dev
	$(UV_COMPILE) pyproject.toml --group dev -o requirements/dev.txt
	$(UV_COMPILE) pyproject.toml --group local -c requirements/dev.txt -o requirements/local.txt
	$(UV_COMPILE) pyproject.toml -c requirements/dev.txt -o requirements/runtime.txt
	$(UV_COMPILE) requirements/chdb.in --no-deps -o requirements/chdb.txt

venv: $(VENV)/.runtime
dev-venv: $(VENV)/.dev

sdk/node_modules/.installed: sdk/package.json
	cd sdk && (test -f package-lock.json && npm ci --no-audit --no-fund || npm install --no-audit --no-fund)
	touch $@

# The bundles are rebuilt only when a source changed (a warm `make run` skips the build).
SDK_SRC := $(shell find sdk/src sdk/scripts -type f) sdk/package.json sdk/tsconfig.json app/ingest/privacy_rules.json
sdk/dist/observer.min.js: sdk/node_modules/.installed $(SDK_SRC)
	cd sdk && npm run --silent build

sdk: sdk/dist/observer.min.js

# Debian packages the tests need; installed only when root (else the tests say what is missing).
system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  command -v clickhouse-server >/dev/null || missing="$$missing clickhouse-server"; \
	  test -x /usr/bin/chromium || missing="$$missing chromium"; \
	  test -f /usr/share/java/zookeeper.jar || missing="$$missing zookeeper"; \
	  test -x /usr/lib/rabbitmq/bin/rabbitmq-server || missing="$$missing rabbitmq-server"; \
	  if [ -n "$$missing" ]; then echo "make test: installing Debian packages:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi; \
	  if ! command -v docker-compose >/dev/null; then \
	    echo "make test: installing Debian package: docker-compose (without its recommended Docker engine)"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose; fi; \
	  if ! command -v promtool >/dev/null; then \
	    echo "make test: installing Debian package: prometheus, for promtool (without its recommended node exporter)"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; fi; \
	else echo "make test: not root; clickhouse-server, chromium, zookeeper, rabbitmq-server, prometheus (promtool) and docker-compose must already be installed"; fi

run: venv sdk
	scripts/devstack

# Lint and types, clean (pyproject.toml [tool.ruff], [tool.mypy]; sdk/eslint.config.mjs). Lint
# only: the tree is not reformatted (ruff format would rewrite most files).
lint: dev-venv sdk/node_modules/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	cd sdk && npm run --silent lint

# `make test`: pytest on PYTEST_WORKERS processes (most of the suite waits on servers, not CPU;
# tests that must share one process carry an xdist_group), with lint and the SDK's checks beside
# it (devtools/testrun.py); each step's time and each test group's are printed at the end. The long
# outage cases (marker `outage`: ZooKeeper away 30 s, a Redis Cluster failover, and the four
# fault cases on the scale-out topology, about 9 min in all) run in `make outages` instead.
PYTEST_WORKERS ?= 4
# The venv, the SDK and the Debian packages are made side by side (pip, npm and apt at once).
test:
	$(MAKE) --no-print-directory -j3 dev-venv sdk system-deps
	PYTEST_WORKERS=$(PYTEST_WORKERS) $(PY) -m devtools.testrun $(PYTEST_ARGS)

# `make test` with coverage measured in the processes the tests start too (gunicorn, Celery, the
# flask CLI): the fuller figure, at about a third more CPU (tests/coverage-subprocesses.ini).
.PHONY: coverage
coverage: dev-venv sdk system-deps
	COVERAGE_SUBPROCESSES=1 PYTEST_WORKERS=$(PYTEST_WORKERS) $(PY) -m devtools.testrun $(PYTEST_ARGS)

.PHONY: outages
outages: dev-venv system-deps
	$(PY) -m pytest -m outage -v $(PYTEST_ARGS)

unit: dev-venv
	$(PY) -m pytest tests/unit -q

# The benchmark's eight figures, medians of 3 runs (~10 min); BENCH_ARGS="--check", "--quick", "--batch 200".
bench: dev-venv system-deps
	scripts/bench $(BENCH_ARGS)

# Every fault case at full scale on servers it starts itself (about 25 min); FAULTS_ARGS="--case 0".
.PHONY: faults
faults: dev-venv system-deps
	scripts/faults $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) sdk/node_modules sdk/dist .pytest_cache .coverage .mypy_cache .ruff_cache
