# Health Predict: the two quick-start commands are `make demo` and `make test`.
# Both create .venv on first use (Python 3.11), install the locked dependencies with uv,
# and are safe to run again: an install is redone only when pyproject.toml or the lock change.

SHELL := /bin/bash
PYTHON_BIN ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PYTHON := $(VENV)/bin/python
UV := $(VENV)/bin/uv
EXTRAS := hpo,monitoring,airflow,infra,dev
INSTALLED := $(VENV)/.installed-$(shell cat pyproject.toml requirements/lock.txt | sha256sum | cut -c1-12)

# The raw extract: this repository's CI keeps it beside the clone; elsewhere the public UCI
# download is used. Override with HEALTHPREDICT_DATA_SOURCE=<path or URL>.
SHARED_EXTRACT := ../shared/data/dataset_diabetes.zip
export HEALTHPREDICT_DATA_SOURCE ?= $(if $(wildcard $(SHARED_EXTRACT)),$(abspath $(SHARED_EXTRACT)),uci)

.PHONY: install demo test lint lock benchmark benchmark-search benchmark-load benchmark-loop benchmark-monitoring benchmark-drift benchmark-estimate benchmark-equity benchmark-scoring benchmark-trees deploy-validate clean help

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: $(INSTALLED) ## Create .venv and install the package with every extra (idempotent)

$(INSTALLED): pyproject.toml requirements/lock.txt
	@$(PYTHON_BIN) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]'
	@test -x $(PYTHON) || $(PYTHON_BIN) -m venv $(VENV)
	@test -x $(UV) || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	$(UV) pip install --quiet --python $(PYTHON) -e '.[$(EXTRAS)]' -c requirements/lock.txt
	@rm -f $(VENV)/.installed-* && touch $@

demo: install ## Prepare data, train, evaluate, register and print a summary
	$(VENV)/bin/healthpredict demo

test: install ## Run the whole test suite
	$(PYTHON) -m pytest

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check src tests benchmarks dags scripts
	$(VENV)/bin/ruff format --check src tests benchmarks dags scripts
	$(VENV)/bin/mypy src

lock: ## Re-resolve requirements/lock.txt from pyproject.toml
	$(UV) pip compile pyproject.toml --all-extras --python-version 3.11 --no-header --quiet -o requirements/lock.txt

benchmark: install ## Print the model-quality and training-time figures
	$(PYTHON) benchmarks/model_quality.py

benchmark-search: install ## Print the hyper-parameter search figures (about 3 minutes)
	$(PYTHON) benchmarks/search.py

benchmark-monitoring: install ## Print drift detection, retraining value and loop speed (about 15 minutes)
	$(PYTHON) benchmarks/monitoring.py

benchmark-drift: install benchmark-tools ## Print the field monitor's false-alarm rate and detection power against Evidently's preset and NannyML (about 10 minutes)
	$(PYTHON) benchmarks/drift.py

benchmark-estimate: install benchmark-tools ## Print the natural timeline's alarms per window and the label-free estimate's error, against NannyML's CBPE (about 4 minutes)
	$(PYTHON) benchmarks/estimate.py

benchmark-equity: install ## Print the equity monitor's figures: group alarms on the natural timeline, a one-group drift and the exchangeable control, time per window (about 2 minutes)
	$(PYTHON) benchmarks/equity.py

benchmark-loop: install ## Print the production loop's figures: the story through the service, a window from PostgreSQL, outcome ingestion
	$(PYTHON) benchmarks/production_loop.py

benchmark-load: install ## Print serving latency and throughput (runs the demo first if no model)
	@test -f data/mlflow.db || $(VENV)/bin/healthpredict demo
	$(PYTHON) benchmarks/load_service.py --data-dir data

benchmark-scoring: install ## Print the batch job's rows/s, its parts, its ratio to LightGBM's own predict, and on a two-node Ray cluster (runs the demo first if no model)
	@test -f data/mlflow.db || $(VENV)/bin/healthpredict demo
	$(PYTHON) benchmarks/scoring.py --data-dir data

benchmark-trees: install ## Print the compiled trees' rows/s against LightGBM's own predict, compile and cached-load times
	$(PYTHON) benchmarks/trees.py

deploy-validate: install ## Check compose file, Kubernetes overlays and Dockerfiles (no engine needed)
	$(PYTHON) -m pytest -q tests/deploy

clean: ## Remove the local data folder (prepared data, MLflow store) and caches
	rm -rf data .pytest_cache .mypy_cache .ruff_cache

.PHONY: images test-containers
images: install ## Build the service and Airflow images (Docker or podman; stand-in bases from Debian where the upstream ones cannot be pulled)
	$(VENV)/bin/healthpredict images build

test-containers: install ## Run the images for real: the service container, the Kind overlay under kube play, the compose stack, delivery push
	$(PYTHON) -m pytest -m containers -o addopts="-ra --strict-markers" tests

.PHONY: benchmark-containers
benchmark-containers: install ## Print the service image's build times, size, start to ready, and latency through the container
	$(PYTHON) benchmarks/containers.py

.PHONY: test-dags
test-dags: install ## DAG integrity and dag.test() runs of the training, monitoring and delivery DAGs
	$(PYTHON) -m pytest tests/orchestration -m "not integration"

include infra/Makefile.mk
include benchmarks/nannyml/Makefile.mk

.PHONY: walkthrough
walkthrough: install ## The story step by step, narrated; recorded to walkthrough/ (cast + screenshot)
	$(PYTHON) scripts/walkthrough.py
