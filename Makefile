# Two commands matter: `make run` (the demo) and `make test` (the whole suite with real Kafka and Cassandra).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TESTBED := $(PY) -m metrictank.testbed
PYTEST_ARGS ?=

.PHONY: all install test unit run bench lint format clean testbed-up testbed-down reliability

all: test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml setup.py $(wildcard metrictank/*/_*.c)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed

# Unit and integration tests; the test bed (Kafka + Cassandra as local JVM processes) is started and always stopped.
test: $(VENV)/.installed
	$(TESTBED) run -- $(PY) -m pytest $(PYTEST_ARGS)

# Unit tests only: no Kafka or Cassandra.
unit: $(VENV)/.installed
	$(PY) -m pytest -m 'not integration' $(PYTEST_ARGS)

# Only the reliability scenarios (fault injection, exact read-back), then docs/reliability.md from their figures
# (JSON lines in $$METRICTANK_RELIABILITY_REPORT, default build/reliability-report.jsonl).
reliability: $(VENV)/.installed
	$(TESTBED) run -- $(PY) -m pytest tests/integration/test_reliability_*.py tests/integration/test_failover_lease*.py $(PYTEST_ARGS)
	$(PY) -m tests.integration.reliability_report

run: $(VENV)/.installed
	$(PY) -m metrictank.demo

bench: $(VENV)/.installed
	$(TESTBED) run -- $(PY) bench/run.py $(BENCH_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check metrictank tests bench scripts
	$(VENV)/bin/ruff format --check metrictank tests bench

format: $(VENV)/.installed
	$(VENV)/bin/ruff format metrictank tests bench
	$(VENV)/bin/ruff check --fix metrictank tests bench

testbed-up: $(VENV)/.installed
	$(TESTBED) up

testbed-down: $(VENV)/.installed
	$(TESTBED) down

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache metrictank/chunk/*.so
