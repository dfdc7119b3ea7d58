# safetransfer: `make demo` and `make test` set everything up from a fresh clone.
# torch is pinned and installed first: an unpinned torch pulls several GB of CUDA packages.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMPS := $(VENV)/.stamps
TORCH  := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup assets browser demo test test-slow check-results bench docs clean help

help:
	@echo "make demo       set up (venv, torch, package, offline assets), then the quick inheritance study (~7 min on 2 cores)"
	@echo "make test       set up, then run the test suite (the slow end-to-end tests are excluded)"
	@echo "make test-slow  the slow end-to-end tests on the real assets"
	@echo "make check-results  the committed benchmark results still match the configs in the repository"
	@echo "make bench      the benchmarks (writes benchmarks/results/*.json)"
	@echo "make docs       the results pages under docs/ from benchmarks/results/*.json (set-up only, no assets)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/torch: | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/package: pyproject.toml $(STAMPS)/torch
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test,ray]"
	@touch $@

setup: $(STAMPS)/package

# Always checked (quick when everything is there): apt needs root, npm needs npm.
assets: setup
	$(BIN)/safetransfer assets install

# The report's browser test (make test) needs Debian's chromium: root and apt-get, as Fashion-MNIST.
browser:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null 2>&1 || \
	{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	{ echo "the report's browser test needs chromium: sudo apt-get install -y chromium"; exit 1; }

demo: assets
	$(BIN)/safetransfer study --profile quick --out runs/demo

test: assets browser
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check --quiet --select I,F .
	@$(BIN)/python -m pytest -q -m "not slow and not results" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# Every figure under benchmarks/results was made by the config now in the repository: an edited
# config (or a new word-swap search version) means its figures must be made again.
check-results: setup
	@$(BIN)/python -m pytest -q -m results; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no results checks: failing"; exit 1; fi; exit $$rc

test-slow: assets
	@$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no slow tests: failing"; exit 1; fi; exit $$rc

MODELSCAN := .venv-modelscan/bin/modelscan

$(MODELSCAN):
	$(PYTHON) -m venv .venv-modelscan
	.venv-modelscan/bin/python -m pip install -q --disable-pip-version-check modelscan==0.8.8

bench: assets $(MODELSCAN)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test,ray,bench]"
	$(BIN)/python benchmarks/hostile_inputs.py --modelscan $(MODELSCAN)
	$(BIN)/python benchmarks/train_baselines.py
	$(BIN)/safetransfer badnets --data fashion-mnist --model small-cnn --out runs/badnets-fmnist --no-progress
	$(BIN)/python benchmarks/detect_vs_art.py --model runs/badnets-fmnist/poisoned/model

# The results pages: every figure read from benchmarks/results/*.json (tests/test_docs.py checks they are current).
docs: setup
	$(BIN)/python benchmarks/make_docs.py

clean:
	rm -rf $(VENV) .venv-modelscan runs .pytest_cache
