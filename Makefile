# The two commands a user needs (see README.md): `make reproduce` and `make test`.
# Each sets itself up: it creates .venv (Python 3.10+) and installs the package with pinned dependencies when missing.
# (Users need none of this: `pip install gradual_opt` needs torch alone. The development pins live in constraints.txt.)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test reproduce export clean readme docs bench check-install dist
install: $(STAMP)

$(STAMP): setup.py settings.ini constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ is needed (PYTHON=python3.x make ...)"'
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,fastai]"
	@touch $(STAMP)

## the main job: run the figure notebooks, collect PNGs + CSV tables + summary.md in results/
reproduce: $(STAMP)
	$(BIN)/python tools/reproduce.py $(ARGS)

## the tests: export in sync, notebooks clean, README in sync, every notebook runs, pytest suite
test: $(STAMP)
	bash tools/test.sh

export: $(STAMP)
	$(BIN)/nbdev_export

clean: $(STAMP)
	$(BIN)/nbdev_clean

readme: $(STAMP)
	$(BIN)/python tools/make_readme.py

## offline docs site (no quarto needed): _site_offline/index.html; installs pandoc/chromium/npm packages if missing
docs: $(STAMP)
	bash tools/install_docs_deps.sh
	$(BIN)/python tools/build_docs.py

## step-time benchmark (90_performance): every optimizer's default and fused step over its floor, 4 large and 2,500 small tensors,
## 2 and 1 threads, transforms on fused SGD, peak memory, compile times -> results/perf/bench_cpu* (about 10 min on an idle
## 2-core CPU; ARGS=--quick: seconds; ARGS="--out nbs/perf": the run the report notebook shows; GPU: bash tools/gpu_check.sh)
bench: $(STAMP)
	$(BIN)/python tools/benchmark.py $(ARGS)

## what a user gets: build sdist + wheel, install each in a fresh venv (torch only), import time, newest fastai (~4 min)
check-install: $(STAMP)
	$(BIN)/python tools/check_install.py $(ARGS)

## sdist and wheel in dist/
dist: $(STAMP)
	$(BIN)/python -m build
