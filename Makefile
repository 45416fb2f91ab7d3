# brandguard developer commands. Every target sets up the virtual environment first.
#   make demo   - build a demo catalogue from real logos, index it with the shipped model, scan, report
#   make test   - the fast test suite (what CI runs)
#   make test-all - every test, slow ones included
#   make train  - retrain the shipped default model (CPU, bounded time), export, calibrate
#   make bench  - benchmarks; results in bench_out/results.json and docs/BENCHMARKS.md
#   make ablation - what each training ingredient adds; docs/ABLATION.md
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := data,train,serve,scale,bench,dev
TRAIN_MINUTES ?= 90
PHOTOS ?= ../shared/data/clothing-photos

.PHONY: setup browser demo test test-all train calibrate ablation bench bench-quick bench-http clean

setup: $(STAMP)

# Reinstall whenever pyproject.toml changes. torch/torchvision are pinned and come from local wheels.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps 'rapidocr-onnxruntime==1.4.4'
	@touch $(STAMP)

# The review-page test drives a real headless Chromium (Debian's); install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else echo "chromium not found: the browser test will be skipped" >&2; fi; }

demo: setup
	$(BIN)/brandguard demo --out demo_out

# pytest exit 5 means "no tests collected": a broken suite, not a pass.
test: setup browser
	@set +e; $(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

test-all: setup browser
	@set +e; $(BIN)/python -m pytest -m ""; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# Retrain the shipped model from scratch: train (bounded CPU time), export with the parity check,
# build the corpus if missing, store a score background (train-split distractors), calibrate on val.
train: setup
	$(BIN)/python -m brandguard.training.train --out runs/default --minutes $(TRAIN_MINUTES) --input-size 128 \
		--dim 256 $(if $(wildcard $(PHOTOS)),--photos $(PHOTOS),)
	$(BIN)/python -m brandguard.training.export --ckpt runs/default/ckpt.pt --dest brandguard/assets/default_bundle
	$(MAKE) calibrate

calibrate: setup
	@test -d data_cache/corpus_std/val || $(BIN)/brandguard corpus --size standard --out data_cache/corpus_std \
		$(if $(wildcard $(PHOTOS)),--photos $(PHOTOS),)
	$(BIN)/brandguard background --bundle brandguard/assets/default_bundle --split data_cache/corpus_std/train
	$(BIN)/brandguard calibrate --bundle brandguard/assets/default_bundle --split data_cache/corpus_std/val \
		--report-split data_cache/corpus_std/test

# Training ablation: each ingredient of the recipe switched off (or on) at a fixed step budget,
# scored on the test split -> bench_out/ablation/results.json + docs/ABLATION.md (~45 min on 2 cores).
ablation: setup
	$(BIN)/python benchmarks/ablation.py $(if $(wildcard runs/long/bundle27),--length-bundles runs/long/bundle27,)

# Speed benchmarks: medians over repeats, ratios against the decode-only limit.
bench: setup
	$(BIN)/python benchmarks/run.py --out bench_out --doc-figures docs/bench $(if $(wildcard $(PHOTOS)),--photos $(PHOTOS),)

bench-quick: setup
	$(BIN)/python benchmarks/run.py --quick --out bench_out_quick --no-doc

# HTTP service under load on loopback: 1/8/32 clients, 2x overload, recovery -> bench_out/http.json;
# then the flood (large 16-bit PNG batches + slow uploads while a normal client checks, ~50 s) -> bench_out/flood.json
bench-http: setup
	$(BIN)/python benchmarks/http_load.py --out bench_out/http.json
	$(BIN)/python benchmarks/flood.py --out bench_out/flood.json

clean:
	rm -rf demo_out runs build dist *.egg-info .pytest_cache
