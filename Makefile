# One entry point for everything: `make run` starts the whole system, `make test` runs the tests.
# Both set themselves up on a fresh Debian machine (venv, Python packages, FreeCAD, protobuf code).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
GEN    := cadpipe/v1/.generated
PROTOS := $(wildcard protos/cadpipe/v1/*.proto)
PYTEST_ARGS ?=

.PHONY: run test lint proto freecad chromium vendor bench clean

run: $(STAMP) $(GEN) freecad
	$(PY) -m services.allinone

test: $(STAMP) $(GEN) freecad chromium
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) $(GEN)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy cadpipe cadpipe_cli services

bench: $(STAMP) $(GEN) freecad
	$(PY) -m bench

proto: $(GEN)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml requirements.lock
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

# Generated once per proto change into cadpipe/v1 (not committed).
$(GEN): $(STAMP) $(PROTOS) scripts/gen_protos.py
	$(PY) scripts/gen_protos.py
	touch $@

# FreeCAD from Debian's packages (0.20 on Debian 12, 1.0 on Debian 13), when freecadcmd is missing.
freecad:
	@command -v freecadcmd >/dev/null 2>&1 || { \
	  echo "installing Debian's freecad (freecadcmd)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends freecad; }

# Debian's Chromium for the web app's browser tests (tests/webapp; Playwright drives it, no
# browser download), when /usr/bin/chromium is missing.
chromium:
	@test -x /usr/bin/chromium || { \
	  echo "installing Debian's chromium (browser tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q -o DPkg::Lock::Timeout=300 && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q -o DPkg::Lock::Timeout=300 \
	    --no-install-recommends chromium; }

# Refreshes the vendored browser code (services/gateway/web/vendor, committed) from the npm
# registry after a change to services/gateway/web/package.json (docs/webapp.md).
vendor: $(VENV)/bin/python
	cd services/gateway/web && npm ci --ignore-scripts --no-audit --no-fund
	$(PY) scripts/vendor_web.py

# Refreshes the pinned versions after a change to pyproject.toml's dependencies.
lock: $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip freeze --exclude-editable | grep -v '^cadpipe' > requirements.lock

clean:
	rm -rf $(VENV) cadpipe/v1 .pytest_cache .mypy_cache .ruff_cache
