# organage: every target sets up what it needs (.venv) on first use.
# On Linux without a GPU, torch is installed first from the pinned CPU build, so the project install
# below never pulls CUDA wheels (pip finds the local CPU wheel where the machine provides one).
# GPU users: see README ("GPU route") -- create the conda env from environment.yml, or install a CUDA torch
# wheel into .venv before the first `make`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Extra pip arguments for torch, e.g. a CPU-only index on machines without a local CPU wheel (see README).
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed
PROFILE ?= quick
JOBS ?= 2

.PHONY: install browser reproduce test sync-check clean-check nbtest pytest docs lab bench bench-scale bench-gpu mutation export clean

install: $(STAMP)

$(STAMP): settings.ini setup.py pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (organage)" >/dev/null
	@touch $(STAMP)

## The paper on the embedded simulated cohort (quick profile, CPU): reports/quick/
reproduce: $(STAMP)
	$(BIN)/organage reproduce --profile $(PROFILE)

## Library/notebook sync, clean notebooks, inline notebook tests, then pytest.
test: $(STAMP) browser sync-check clean-check nbtest pytest

## Headless Chromium + ChromeDriver (Debian packages) for the docs-site test.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "== installing chromium and chromium-driver (Debian packages) for the docs test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

sync-check: $(STAMP)
	@echo "== nbdev_export leaves organage/ unchanged"
	@tmp=$$(mktemp -d) && cp -r organage $$tmp/before && $(BIN)/nbdev_export && \
	  if ! diff -r -x __pycache__ $$tmp/before organage >$$tmp/diff; then \
	    cat $$tmp/diff; cp -r $$tmp/before/. organage/; rm -rf $$tmp; \
	    echo "organage/ is out of sync with nbs/: run nbdev_export and commit"; exit 1; fi; rm -rf $$tmp
	@$(BIN)/python docs/readme.py --check

clean-check: $(STAMP)
	@echo "== notebooks are clean (nbdev_clean leaves no diff)"
	@tmp=$$(mktemp -d) && cp -r nbs $$tmp/before && $(BIN)/nbdev_clean && \
	  if ! diff -r $$tmp/before nbs >$$tmp/diff; then \
	    head -50 $$tmp/diff; cp -r $$tmp/before/. nbs/; rm -rf $$tmp; \
	    echo "notebooks are not clean: run nbdev_clean and commit"; exit 1; fi; rm -rf $$tmp

nbtest: $(STAMP)
	@echo "== nbdev_test (library notebooks; slow cells are covered in pytest)"
	$(BIN)/nbdev_test --n_workers $(JOBS)

pytest: $(STAMP)
	@echo "== pytest"
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile -q tests

export: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean && $(BIN)/python docs/readme.py

## Static documentation site into _docs/ (offline; Sphinx + myst-nb over nbdev-processed notebooks).
docs: $(STAMP)
	$(BIN)/python docs/build.py

## JupyterLab on the repository with the project's kernel.
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=. $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

## Benchmarks (speed, memory) into reports/bench/, at short default sizes (bench-scale: paper-sized cohorts; bench-gpu: the full profile, about an hour of one GPU).
bench: $(STAMP)
	@mkdir -p reports/bench
	@for b in $(filter-out bench/gpu_full.py,$(sort $(wildcard bench/[!_]*.py))); do echo "== $$b"; $(BIN)/python $$b || exit 1; done

## The cost curve at 1,200 / 6,000 / 30,000 subjects (SCALE="1200 6000 12000" to choose) and streaming at 10k-50k radiographs.
SCALE ?=
bench-scale: $(STAMP)
	@mkdir -p reports/bench
	$(BIN)/python bench/streaming.py --scale
	$(BIN)/python bench/scale.py $(if $(SCALE),--sizes $(SCALE),--scale)

## organage's full profile on a CUDA GPU (sized to about an hour; GPU_SUBJECTS=N to choose); without a GPU it records that and exits 0.
bench-gpu: $(STAMP)
	@mkdir -p reports/bench
	$(BIN)/python bench/gpu_full.py

## Mutation score of the statistics, calibration and split modules (minutes to hours; outside make test).
mutation: $(STAMP)
	@mkdir -p reports/bench
	$(BIN)/python bench/_mutation.py --jobs 2

clean:
	rm -rf _docs _proc reports/quick reports/full reports/bench
