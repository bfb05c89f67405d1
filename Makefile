# Two entry points a newcomer needs: `make run` (install + the main pipeline on the embedded
# default model) and `make test` (install + both test tiers). Installs into ./.venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-unit system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the local CPU build; an unpinned torch pulls GBs of CUDA wheels
	$(BIN)/pip install --quiet torch==2.13.0
	# llama-cpp-python compiles from source the first time (~10 min on 2 cores), then pip caches it
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# System packages the tests need beyond the venv (openssh-server for the remote-profiling test):
# apt-get if root/sudo. Only `make test` needs them; `make run` does not.
system-deps:
	sh scripts/system-deps.sh

install: $(STAMP)

# The main job: build the embedded default model for this machine (--resume: a second run reuses
# finished stages), then show what was built.
run: install
	$(BIN)/edgeprune build --target host --out dist/host --resume
	cat dist/host/report.md

test: install system-deps
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m unit -q
