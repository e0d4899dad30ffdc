# fedrx: one-command setup + run. Each target creates .venv if missing and installs
# torch==2.13.0 (CPU build) FIRST, then the project with its dev extra.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedrx-installed
RUN ?= runs/demo
# ckks-threshold's OpenFHE worker: CPython 3.10 (OpenFHE's wheels do not load on 3.11 here)
HE_PY ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10.*/bin/python /root/.pyenv/versions/3.10.*/bin/python) $(shell command -v python3.10 2>/dev/null))
HE_VENV := .venv-he
HE_STAMP := $(HE_VENV)/.fedrx-he-installed
HE_DEP := $(if $(HE_PY),$(HE_STAMP),)

.PHONY: setup he-env demo simulate test test-all lint clean

$(STAMP): pyproject.toml setup.py secagg/_bitpack_native.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

$(HE_STAMP):
	@test -n "$(HE_PY)" || { echo "he-env: no CPython 3.10 found (set HE_PY=/path/to/python3.10)"; exit 1; }
	test -x $(HE_VENV)/bin/python || $(HE_PY) -m venv $(HE_VENV)
	$(HE_VENV)/bin/python -m pip install -q 'openfhe>=1.6.1'
	$(HE_VENV)/bin/python -c 'import openfhe'
	touch $(HE_STAMP)

he-env: $(HE_STAMP)

demo: $(STAMP)
	rm -rf $(RUN)
	COLUMNS=140 $(BIN)/fedrx demo grpc --out $(RUN)

simulate: $(STAMP)
	COLUMNS=140 $(BIN)/fedrx simulate --data mimic3-demo --hospitals 3 --rounds 10 --local-epochs 5 --protection mask --centralized --out runs/simulate

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) $(HE_DEP) lint
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP) $(HE_DEP) lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(HE_VENV) runs .pytest_cache .ruff_cache
