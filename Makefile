# Two entry points a newcomer needs: `make run` (install + the main pipeline on the embedded
# default model) and `make test` (install + both test tiers). Installs into ./.venv, at the exact
# versions of requirements.lock: a fresh machine gets what CI tested.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
LATEST := .venv-latest
TOOLS  := .venv-tools

.PHONY: install run test test-unit test-latest lock system-deps

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the local CPU build; an unpinned torch pulls GBs of CUDA wheels
	$(BIN)/pip install --quiet -c $(LOCK) torch==2.13.0
	# llama-cpp-python compiles from source the first time (~10 min on 2 cores), then pip caches it
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[test]'
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

# The unit tier on the newest versions pyproject.toml allows (not the lock), in a venv of its own,
# upgraded on every run: a new upstream release breaks this target before it breaks a user.
test-latest:
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade pip
	$(LATEST)/bin/pip install --quiet torch==2.13.0
	$(LATEST)/bin/pip install --quiet --upgrade --upgrade-strategy eager -e '.[test]'
	$(LATEST)/bin/python scripts/lock_drift.py $(LOCK)
	$(LATEST)/bin/python -m pytest -m unit -q

# Regenerate requirements.lock from pyproject.toml with uv's resolver (pins already in the lock
# are kept where pyproject allows them; `make lock LOCK_FLAGS=--upgrade` moves every pin to the
# newest allowed version). Commit the result.
LOCK_FLAGS ?=
lock:
	test -x $(TOOLS)/bin/uv || ($(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install --quiet uv==0.13.9)
	$(TOOLS)/bin/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 \
		--no-config --custom-compile-command "make lock" $(LOCK_FLAGS) -o $(LOCK)
