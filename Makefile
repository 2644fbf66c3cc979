# The two set-up commands (README): `make demo` and `make test`. Both create .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean ui browser-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/journeys demo

# Two workers (this machine has 2 cores); --dist loadfile keeps a file's module-scoped project on one worker.
test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile

# The Dagster UI (asset graph, runs, schedule, checks) on the embedded default database; Dagster's own
# storage is .dagster_home/ (ignored by git), configured by dagster.yaml. JOURNEYS_DB=... to use another file.
ui: $(STAMP)
	mkdir -p .dagster_home
	ln -sf ../dagster.yaml .dagster_home/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster dev -m orchestration.definitions

# Headless Chromium for tests/browser (skipped without it); Debian or Ubuntu.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-deps:
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver

clean:
	rm -rf $(VENV) warehouse dbt_project/target dbt_project/logs

# Benchmark: the engine's full and incremental runs against a hand-written DuckDB baseline (bench/RESULTS.md).
# make bench [USERS=20000|SIZE=...] [JOURNEYS=20] [ACTIONS=execute|skip] [MATURE=1] [REPEAT=1]; lists run every
# case and the growth, e.g. make bench USERS=100000,1000000 JOURNEYS=10,100 ACTIONS=skip
# MATURE=1: per case, the plain rules and the same journeys with the SPEC §9 constructs, and the ratio (bench/pair.py)
.PHONY: bench
SIZE ?= 20000
USERS ?= $(SIZE)
JOURNEYS ?= 20
ACTIONS ?= execute
REPEAT ?= 1
MATURE ?=
bench: $(STAMP)
	$(BIN)/python -m bench.run --users $(USERS) --journeys $(JOURNEYS) --actions $(ACTIONS) --repeat $(REPEAT) $(if $(filter 1 yes true,$(MATURE)),--mature)

# Slow tests (marked `slow`: the whole crash matrix, the bigger property tests, YAML bombs); `make test` skips them.
.PHONY: test-slow
test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow
