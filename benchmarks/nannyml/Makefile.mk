# NannyML for the benchmarks (benchmarks/nannyml_bridge.py runs benchmarks/nannyml/run_nannyml.py
# with it), in a venv of its own, .venv/tools/nannyml: its pins cannot resolve together with
# requirements/lock.txt (see benchmarks/nannyml/requirements.in). Exact versions:
# benchmarks/nannyml/requirements-lock.txt. Reinstalled only when the lock changes.
#
# Included by the main Makefile (`include benchmarks/nannyml/Makefile.mk`) and usable alone:
#   make -f benchmarks/nannyml/Makefile.mk benchmark-tools

# Where this file lives, whatever directory make runs from.
NANNYML_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

PYTHON ?= .venv/bin/python
UV ?= .venv/bin/uv
NANNYML_VENV ?= .venv/tools/nannyml
NANNYML_LOCK := $(NANNYML_DIR)/requirements-lock.txt
NANNYML_INSTALLED = $(NANNYML_VENV)/.installed-$(shell sha256sum $(NANNYML_LOCK) 2>/dev/null | cut -c1-12)

.PHONY: benchmark-tools benchmark-tools-lock

benchmark-tools: $(NANNYML_INSTALLED) ## Install NannyML (pinned) into its own venv, .venv/tools/nannyml

# Included by the main Makefile, the project venv (which brings uv) comes first, also
# under make -j; used alone, the recipe says what is missing.
$(NANNYML_INSTALLED): $(NANNYML_LOCK) | $(INSTALLED)
	@test -x $(UV) || { echo "benchmark-tools: $(UV) missing, run 'make install' first"; exit 1; }
	@test -x $(NANNYML_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(NANNYML_VENV)
	$(UV) pip install --quiet --python $(NANNYML_VENV)/bin/python -r $(NANNYML_LOCK)
	@rm -f $(NANNYML_VENV)/.installed-* && touch $@

benchmark-tools-lock: ## Re-resolve benchmarks/nannyml/requirements-lock.txt from requirements.in
	$(UV) pip compile $(NANNYML_DIR)/requirements.in --python-version 3.11 --quiet \
		--custom-compile-command "make benchmark-tools-lock" -o $(NANNYML_LOCK)
