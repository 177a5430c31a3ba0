# One environment per dependency list, outside the clone, so repeated runs reuse it.
PYTHON ?= python3
REQS   := requirements/base.txt requirements/dev.txt
KEY    := $(shell cat $(REQS) | sha256sum | cut -c1-12)
VENV   ?= $(HOME)/.cache/lscape/venv-$(KEY)
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lscape-complete

# The benchmark's own environment: lscape plus the peers it is compared with (never in the main venv).
BENCH_REQS  := requirements/base.txt requirements/bench.txt
BENCH_KEY   := $(shell cat $(BENCH_REQS) | sha256sum | cut -c1-12)
BENCH_VENV  ?= $(HOME)/.cache/lscape/bench-$(BENCH_KEY)
BENCH_BIN   := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.lscape-complete

.PHONY: venv demo test test-slow lint typecheck check samples bench report-check clean-venv

$(STAMP):  # keyed by the hash of $(REQS) in its path: a changed list means a new venv
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/base.txt -r requirements/dev.txt
	touch $(STAMP)

venv: $(STAMP)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .

# The main job end to end on the offline default data (see README).
demo: venv
	PATH=$(BIN):$$PATH bash examples/pipeline.sh

# Render the demo's report (else one of sample_checkpoints/) in headless Chromium at 1280 and 800 px;
# installs Debian's chromium if missing. Look at report-check/report-*.png (not part of `make test`).
report-check: venv
	PATH=$(BIN):$$PATH bash scripts/report_check.sh

test: venv
	$(BIN)/python -m pytest -m "not slow" -q -n auto --dist worksteal  # one worker per core (xdist); worksteal evens out the long tests at the end

test-slow: venv
	$(BIN)/python -m pytest -m slow -q

lint: venv
	$(BIN)/ruff check lscape_cli tests benchmarks scripts
	$(BIN)/ruff format --check lscape_cli tests benchmarks scripts

# mypy over the package ([tool.mypy] in pyproject.toml: --strict on lscape_cli.core).
typecheck: venv
	$(BIN)/mypy

# What CI runs: the tests, then lint and types.
check: test lint typecheck

samples: venv
	PATH=$(BIN):$$PATH bash scripts/make_samples.sh

$(BENCH_STAMP):  # keyed by the hash of $(BENCH_REQS)
	rm -rf $(BENCH_VENV)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/pip install --quiet --upgrade pip
	$(BENCH_BIN)/pip install --quiet -r requirements/bench.txt
	touch $(BENCH_STAMP)

# lscape against its peers, same model and data, one process: probe (docs/benchmarks.md), slice, connect, train and GGN (docs/bench-*.md).
bench: $(BENCH_STAMP)
	$(BENCH_BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BENCH_BIN)/python benchmarks/bench_probe.py --write docs/benchmarks.md
	$(BENCH_BIN)/python benchmarks/bench_slice.py --threads 1,2 --write docs/bench-slice.md
	$(BENCH_BIN)/python benchmarks/bench_connect.py --write docs/bench-connect.md
	$(BENCH_BIN)/python benchmarks/bench_train.py --write docs/bench-train.md
	$(BENCH_BIN)/python benchmarks/bench_ggn.py --write docs/bench-ggn.md

clean-venv:
	rm -rf $(VENV)
