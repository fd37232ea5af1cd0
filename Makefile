# kgrec: two commands. `make run` serves the API on 127.0.0.1:8000; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LINT_DIR := tools/cypher-lint
STAMP := $(VENV)/.installed

.PHONY: run test install lint-deps lint compose-check clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

$(LINT_DIR)/node_modules/.package-lock.json: $(LINT_DIR)/package.json $(LINT_DIR)/package-lock.json
	cd $(LINT_DIR) && npm ci --no-audit --no-fund --loglevel=error

lint-deps: $(LINT_DIR)/node_modules/.package-lock.json

run: install
	HF_HUB_OFFLINE=1 $(BIN)/kgrec up --port 8000 --import amazon-beauty --train

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Validates docker-compose.yml without a Docker engine (`docker compose config`, or Debian's docker-compose).
compose-check:
	tools/compose-config.sh

test: install lint-deps lint compose-check
	HF_HUB_OFFLINE=1 $(BIN)/pytest

clean:
	rm -rf $(VENV) $(LINT_DIR)/node_modules var
