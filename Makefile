# brandguard developer commands. Every target sets up the virtual environment first.
#   make demo   - build a demo catalogue from real logos, index it with the shipped model, scan, report
#   make test   - the fast test suite (what CI runs)
#   make test-all - every test, slow ones included
#   make train  - retrain the shipped default model (CPU, bounded time)
#   make bench  - benchmarks; results in bench_out/results.json and docs/BENCHMARKS.md
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := data,train,serve,scale,bench,dev
TRAIN_MINUTES ?= 15
PHOTOS ?= ../shared/data/clothing-photos

.PHONY: setup demo test test-all train bench bench-quick clean

setup: $(STAMP)

# Reinstall whenever pyproject.toml changes. torch/torchvision are pinned and come from local wheels.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $(STAMP)

demo: setup
	$(BIN)/brandguard demo --out demo_out

# pytest exit 5 means "no tests collected": a broken suite, not a pass.
test: setup
	@set +e; $(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

test-all: setup
	@set +e; $(BIN)/python -m pytest -m ""; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

train: setup
	$(BIN)/python -m brandguard.training.train --out runs/default --minutes $(TRAIN_MINUTES) \
		$(if $(wildcard $(PHOTOS)),--photos $(PHOTOS)/train,) --export core/assets/default_bundle

# Speed benchmarks: medians over repeats, ratios against the decode-only limit.
bench: setup
	$(BIN)/python benchmarks/run.py --out bench_out --doc-figures docs/bench $(if $(wildcard $(PHOTOS)),--photos $(PHOTOS),)

bench-quick: setup
	$(BIN)/python benchmarks/run.py --quick --out bench_out_quick --no-doc

clean:
	rm -rf demo_out runs build dist *.egg-info .pytest_cache
