# govlake — two commands: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEOPLE ?= 2000
# the demo delivers today's data, so its first screen (govlake status) is green on the day it runs
DATE ?= $(shell date +%F)

.PHONY: venv demo test test-all airflow clean lint cluster cluster-down models

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt docker/constraints-deploy.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo ">> installing govlake and pinned dependencies into $(VENV) (about a minute)"
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -c docker/constraints-deploy.txt -e ".[dev]"
	@touch $(STAMP)

demo: venv
	@eval "$$($(BIN)/govlake env)" && $(BIN)/govlake demo --people $(PEOPLE) --date $(DATE)

# every file generated from the source YAML (models, dbt vars, GX suites): govlake scaffold
models: venv
	@eval "$$($(BIN)/govlake env)" && $(BIN)/govlake scaffold

test: venv
	@eval "$$($(BIN)/govlake env)" && $(BIN)/python -m pytest tests

test-all: venv
	@eval "$$($(BIN)/govlake env)" && $(BIN)/python -m pytest tests -m ''

airflow: venv
	@export PATH="$(abspath $(BIN)):$$PATH" && eval "$$($(BIN)/govlake env)" && $(BIN)/govlake airflow-init && \
	  echo ">> Airflow UI on http://localhost:8080 — login: admin, password in $$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated" && \
	  $(BIN)/airflow standalone

# the docker-compose deployment as local processes (postgres, redis, CeleryExecutor airflow); docs/deployment.md
cluster: venv
	@eval "$$($(BIN)/govlake env)" && $(BIN)/govlake cluster up && $(BIN)/govlake cluster status

cluster-down: venv
	@eval "$$($(BIN)/govlake env)" && $(BIN)/govlake cluster down

clean:
	rm -rf .work lake dbt_project/target dbt_project/logs
