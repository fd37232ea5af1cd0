# kgrec: two commands. `make run` serves the API on 127.0.0.1:8000 (`make run PORT=8001` elsewhere);
# `make test` runs the whole suite.

PORT := 8000
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LINT_DIR := tools/cypher-lint
STAMP := $(VENV)/.installed
CONSOLE_ASSETS := app/console/assets
CONSOLE_VENDOR := app/console/static/vendor

.PHONY: prereqs run test install lint-deps console-assets browser-deps lint compose-check clean

# What make cannot install, checked in a moment before anything long starts: one line per missing one.
prereqs:
	@missing=0; \
	if ! $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	  echo "missing: Python 3.11 or newer as $(PYTHON) (found: $$($(PYTHON) --version 2>&1 | head -n 1)); set PYTHON=python3.11"; missing=1; \
	fi; \
	if ! command -v npm >/dev/null; then \
	  echo "missing: npm (Node.js), for the Cypher linter and the console's libraries; e.g. apt-get install npm"; missing=1; \
	fi; \
	if ! { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libgomp\.so\.1'; then \
	  echo "missing: libgomp.so.1 (GNU OpenMP), which FalkorDB's module loads; e.g. apt-get install libgomp1"; missing=1; \
	fi; \
	exit $$missing

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml | prereqs
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: prereqs $(STAMP)

$(LINT_DIR)/node_modules/.package-lock.json: $(LINT_DIR)/package.json $(LINT_DIR)/package-lock.json
	cd $(LINT_DIR) && npm ci --no-audit --no-fund --loglevel=error

lint-deps: $(LINT_DIR)/node_modules/.package-lock.json

# The console's browser libraries (cytoscape, uPlot), from npm at install time, never a CDN.
$(CONSOLE_ASSETS)/node_modules/.package-lock.json: $(CONSOLE_ASSETS)/package.json $(CONSOLE_ASSETS)/package-lock.json
	cd $(CONSOLE_ASSETS) && npm ci --no-audit --no-fund --loglevel=error

$(CONSOLE_VENDOR)/.copied: $(CONSOLE_ASSETS)/node_modules/.package-lock.json
	mkdir -p $(CONSOLE_VENDOR)
	cp $(CONSOLE_ASSETS)/node_modules/cytoscape/dist/cytoscape.min.js \
	   $(CONSOLE_ASSETS)/node_modules/uplot/dist/uPlot.iife.min.js \
	   $(CONSOLE_ASSETS)/node_modules/uplot/dist/uPlot.min.css $(CONSOLE_VENDOR)/
	touch $@

console-assets: $(CONSOLE_VENDOR)/.copied

# The console's browser tests drive Debian's chromium through its chromedriver; installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi

run: prereqs install console-assets
	HF_HUB_OFFLINE=1 $(BIN)/kgrec up --port $(PORT) --import amazon-beauty --train

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Validates docker-compose.yml without a Docker engine (`docker compose config`, or Debian's docker-compose).
compose-check:
	tools/compose-config.sh

test: prereqs install lint-deps console-assets browser-deps lint compose-check
	HF_HUB_OFFLINE=1 $(BIN)/pytest

clean:
	rm -rf $(VENV) $(LINT_DIR)/node_modules $(CONSOLE_ASSETS)/node_modules $(CONSOLE_VENDOR) var
