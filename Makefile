# One command each on a fresh machine: make demo | make test | make bench | make dev
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export ATTENDEE_PIPELINE_DATA_DIR ?= $(CURDIR)/.data
export DAGSTER_HOME ?= $(ATTENDEE_PIPELINE_DATA_DIR)/dagster_home

.PHONY: install demo test bench dev clean

$(STAMP): pyproject.toml setup.cfg
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/attendee-pipeline demo

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m attendee_pipeline.bench $(BENCH_ARGS)

# The Dagster UI on http://127.0.0.1:$(PORT) with the demo sandboxes running beside it
# (make dev PORT=3001 for another port); Ctrl-C stops everything it started.
PORT ?= 3000
dev: $(STAMP)
	$(BIN)/attendee-pipeline dev --port $(PORT)

clean:
	rm -rf .data $(VENV) *.egg-info
