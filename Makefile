# fedrx: one-command setup + run. Each target creates .venv if missing and installs
# torch==2.13.0 (CPU build) FIRST, then the project with its dev extra.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedrx-installed
RUN ?= runs/demo

.PHONY: setup demo simulate test test-all lint clean

$(STAMP): pyproject.toml setup.py secagg/_bitpack_native.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	rm -rf $(RUN)
	COLUMNS=140 $(BIN)/fedrx demo grpc --out $(RUN)

simulate: $(STAMP)
	COLUMNS=140 $(BIN)/fedrx simulate --data mimic3-demo --hospitals 3 --rounds 10 --local-epochs 5 --protection mask --centralized --out runs/simulate

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP) lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
