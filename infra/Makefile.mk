# Health Predict AWS infrastructure (AWS CDK, Python) - see docs/infrastructure.md.
#
# Included by the main Makefile (`include infra/Makefile.mk`) and usable alone:
#   make -f infra/Makefile.mk infra-synth
#
# Offline, no AWS account needed:  infra-synth  infra-lint  infra-checkov  infra-test  infra-cost
# (infra-tools, which infra-checkov and infra-test need, installs checkov from the package index)
# Real AWS (credentials, Node.js for npx, HEALTHPREDICT_INFRA_ADMIN_CIDR):
#                                   infra-up  infra-stop  infra-down
# Settings come from infra/cdk.json, overridden by HEALTHPREDICT_INFRA_* variables, e.g.
#   HEALTHPREDICT_INFRA_ADMIN_CIDR=203.0.113.7/32 make infra-up

# Where this file lives, whatever directory make runs from.
INFRA_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

PYTHON ?= .venv/bin/python
# Recipes cd into $(INFRA_DIR), so a relative interpreter path must become absolute.
INFRA_PYTHON = $(if $(findstring /,$(PYTHON)),$(abspath $(PYTHON)),$(PYTHON))
# The CDK CLI from npm; only infra-up needs it.
CDK ?= npx --yes aws-cdk@2
INFRA_CDK_ARGS ?=
INFRA_COST_ARGS ?=
INFRA_STACK ?= $(or $(HEALTHPREDICT_INFRA_STACK_NAME),HealthPredict)
INFRA_REGION ?= $(or $(HEALTHPREDICT_INFRA_REGION),us-east-1)
# jsii prints an end-of-life banner for Node 20 on every run.
INFRA_ENV = JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION=1

.PHONY: infra-synth infra-lint infra-checkov infra-tools infra-tools-lock infra-test infra-cost \
	infra-up infra-stop infra-down

# The app refuses to run without an admin CIDR. For an offline synth only, an unset one
# becomes TEST-NET-1 (192.0.2.0/24, RFC 5737), which reaches nobody; infra-up gets no
# such default.
INFRA_SYNTH_CIDR = 192.0.2.0/24

infra-synth: ## Synthesize the CloudFormation template into infra/cdk.out (offline)
	@if [ -z "$$HEALTHPREDICT_INFRA_ADMIN_CIDR" ]; then \
		echo "infra-synth: HEALTHPREDICT_INFRA_ADMIN_CIDR unset, using placeholder $(INFRA_SYNTH_CIDR)"; fi
	cd $(INFRA_DIR) && $(INFRA_ENV) CDK_OUTDIR=cdk.out \
		HEALTHPREDICT_INFRA_ADMIN_CIDR=$${HEALTHPREDICT_INFRA_ADMIN_CIDR:-$(INFRA_SYNTH_CIDR)} \
		$(INFRA_PYTHON) app.py

infra-lint: infra-synth ## cfn-lint the synthesized template
	$(INFRA_PYTHON) -c "import sys; from cfnlint.runner import main; sys.exit(main())" \
		$(INFRA_DIR)/cdk.out/$(INFRA_STACK).template.json

# checkov runs from a venv of its own: its pins cannot resolve together with
# requirements/lock.txt (see infra/checkov.in). Exact versions: infra/checkov-lock.txt.
# Reinstalled only when the lock changes, like the project venv.
UV ?= .venv/bin/uv
CHECKOV_VENV ?= .venv/tools/checkov
CHECKOV = $(CHECKOV_VENV)/bin/checkov
CHECKOV_LOCK := $(INFRA_DIR)/checkov-lock.txt
CHECKOV_INSTALLED = $(CHECKOV_VENV)/.installed-$(shell sha256sum $(CHECKOV_LOCK) 2>/dev/null | cut -c1-12)

infra-tools: $(CHECKOV_INSTALLED) ## Install checkov (pinned) into its own venv, .venv/tools/checkov

# Included by the main Makefile, the project venv (which brings uv) comes first, also
# under make -j; used alone, the recipe says what is missing.
$(CHECKOV_INSTALLED): $(CHECKOV_LOCK) | $(INSTALLED)
	@test -x $(UV) || { echo "infra-tools: $(UV) missing, run 'make install' first"; exit 1; }
	@test -x $(CHECKOV_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(CHECKOV_VENV)
	$(UV) pip install --quiet --python $(CHECKOV_VENV)/bin/python -r $(CHECKOV_LOCK)
	@rm -f $(CHECKOV_VENV)/.installed-* && touch $@

infra-tools-lock: ## Re-resolve infra/checkov-lock.txt from infra/checkov.in
	$(UV) pip compile $(INFRA_DIR)/checkov.in --python-version 3.11 --quiet \
		--custom-compile-command "make infra-tools-lock" -o $(CHECKOV_LOCK)

# Every check must pass or be skipped in the CDK code with a written reason
# (resource metadata "checkov": {"skip": [...]}); see docs/infrastructure.md. Offline:
# --skip-download keeps checkov from calling its vendor's platform.
infra-checkov: infra-synth infra-tools ## checkov on the synthesized template (fails on any finding)
	$(CHECKOV) --framework cloudformation --skip-download --compact --quiet \
		-f $(INFRA_DIR)/cdk.out/$(INFRA_STACK).template.json

infra-test: infra-tools ## Infrastructure tests: template assertions, cfn-lint, checkov, moto deployment (offline)
	$(INFRA_ENV) HEALTHPREDICT_CHECKOV=$(abspath $(CHECKOV)) $(PYTHON) -m pytest tests/infra -m infra

infra-cost: ## Estimated monthly cost of the stack as configured (infra/prices.yaml)
	cd $(INFRA_DIR) && $(INFRA_PYTHON) -m healthpredict_infra.cost $(INFRA_COST_ARGS)

infra-up: ## Deploy to AWS with the CDK CLI (no bootstrap stack needed)
	cd $(INFRA_DIR) && $(INFRA_ENV) $(CDK) deploy --app "$(INFRA_PYTHON) app.py" $(INFRA_CDK_ARGS)
	@echo "Running costs money: 'make infra-stop' pauses it, 'make infra-down' removes everything."

infra-stop: ## Stop the instance only (disk, bucket and images keep billing)
	cd $(INFRA_DIR) && $(INFRA_PYTHON) -m healthpredict_infra.teardown --stop-only \
		--stack-name $(INFRA_STACK) --region $(INFRA_REGION)

# Stops the instance, deletes the stack, empties (all versions) and deletes the retained
# bucket and repository, then lists anything left; fails if something is. Asks to type
# the stack name unless YES=1.
infra-down: ## Tear everything down, data included (asks for confirmation)
	cd $(INFRA_DIR) && $(INFRA_PYTHON) -m healthpredict_infra.teardown \
		--stack-name $(INFRA_STACK) --region $(INFRA_REGION) $(if $(YES),--yes)
