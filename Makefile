# labelloop: the commands a user and CI run. `make help` lists them.
SHELL := bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.installed
LS := infra/labelstudio/labelstudio.sh

# Python may cache bytecode here (an environment that sets PYTHONDONTWRITEBYTECODE makes every
# run compile the project and pytest rewrite every test module again: seconds per command)
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help install lock test test-fast check lint format typecheck imports nats demo demo-news labelstudio labelstudio-install labelstudio-stop bench soak compose-test docs clean

help: ## Show the commands
	@grep -E '^[a-z-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-20s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	[ -x $(UV) ] || $(BIN)/pip install --quiet uv
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -c constraints.txt -e ".[console,dev,bench]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install labelloop with its dev and bench dependencies (idempotent)

lock: ## Re-pin constraints.txt from the current .venv (after changing pyproject.toml)
	{ echo "# Exact versions the project was tested with: \`make install\` installs with these as constraints."
	  echo "# Regenerate with \`make lock\` after changing dependencies in pyproject.toml."
	  $(UV) pip freeze --python $(BIN)/python | grep -vE '^(-e |labelloop==|uv==|py-spy==)'; } > constraints.txt

labelstudio-install: ## Install Label Studio 1.23 into its own cached venv (~1 GB, once)
	bash $(LS) install

test: install labelstudio-install ## Run the whole test suite (unit, integration with real NATS and Label Studio, e2e)
	$(BIN)/pytest

test-fast: install ## Unit tests only (no sockets, no ML experiments: seconds)
	$(BIN)/pytest tests/unit -q -m "not slow"

lint: install ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install ## mypy (strict)
	$(BIN)/mypy

imports: install ## Import contracts: pure domain modules, no service imports another
	$(BIN)/lint-imports

check: lint typecheck imports test ## Everything CI checks: lint, types, import contracts, tests

nats: install ## Run the embedded NATS server (JetStream, store in .nats/)
	$(BIN)/labelloop nats

demo: install ## The main job: a whole active-learning campaign on the embedded default
	$(BIN)/labelloop demo

demo-news: install ## The same campaign on text: the BBC's news articles by section
	$(BIN)/labelloop demo --project examples/news/project.yaml

labelstudio: install labelstudio-install ## Start a local Label Studio for people (prints URL and credentials file); LABEL_STUDIO_MEDIA_DIR=DIR serves the media files under DIR
	bash $(LS) start --dir .labelstudio --port $${LABEL_STUDIO_PORT:-8080} $${LABEL_STUDIO_MEDIA_DIR:+--media-dir "$$LABEL_STUDIO_MEDIA_DIR"}

labelstudio-stop: ## Stop the local Label Studio
	bash $(LS) stop --dir .labelstudio

bench: install ## Benchmarks against the anchor libraries (writes bench/results/)
	$(BIN)/python bench/run.py

soak: install ## Soak: 10M items, then 10,000 batches through the six services (bench/README.md); SOAK_ARGS="--items 100000 --batches 200" quick, SOAK_ARGS=--flood the 1M-item flood test
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

compose-test: install ## docker-compose.yml for real on this machine's Docker engine: stand-in images, a campaign, a NATS node stopped (root, ~15 min; not in make test)
	bash infra/docker/compose-test.sh

docs: install ## AsyncAPI specs into docs/asyncapi/, README's event table, infra/nats/accounts.conf
	$(BIN)/labelloop docs --out docs/asyncapi --readme README.md --accounts infra/nats/accounts.conf

clean: ## Remove caches and local run state (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis runs exports .nats
