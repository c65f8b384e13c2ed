# rlcv: two commands do everything: `make reproduce` and `make test` (each runs `setup` first).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= cpu
SEED ?= 0
FROM_SCRATCH ?= 0
STAMP := $(VENV)/.installed

.PHONY: help setup pretrain reproduce test unit-test notebook-test lint lab bench freeze clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

# The venv is rebuilt only when the dependency files change (the stamp is older than them).
$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e '.[dev,lab]'
	# panopticapi-lite pins numpy<2 but runs on numpy 2, which jax needs: install it without deps.
	$(PY) -m pip install --quiet --no-deps panopticapi-lite==0.2.0
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install everything (idempotent)

reproduce: setup  ## run every notebook of notebooks/manifest.toml with PRESET (default cpu), then figures/results.json and RESULTS.md
	$(PY) -m rlcv_lib.reproduce run --preset $(PRESET) --seed $(SEED) $(if $(filter 1,$(FROM_SCRATCH)),--from-scratch,)

# In order: the encoder first (the others start from it), a UViM stage I before its stage II.
TASKS ?= scenes_encoder detection captioning colorization:stage1 colorization:stage2 \
	panoptic:stage1

pretrain: setup  ## MLE-pretrain (resumable) and ship checkpoints/<task>[-<stage>]-$(PRESET) for each of TASKS (task or task:stage)
	@set -e; for t in $(TASKS); do \
	  case $$t in *:*) s="--stage $${t#*:}"; t=$${t%%:*};; *) s="";; esac; \
	  $(PY) -m rlcv_lib pretrain $$t $(PRESET) $$s && $(PY) -m rlcv_lib ship $$t $(PRESET) $$s; \
	done

test: setup  ## lint, unit tests, then every notebook in the smoke preset (nbval), then their declared outputs
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory unit-test
	$(MAKE) --no-print-directory notebook-test

# Two workers (pytest-xdist), each test file on one of them (its module fixtures built once):
# JAX's compiles and the Python between small ops use one core each. PYTEST_WORKERS=0: serial.
PYTEST_WORKERS ?= 2
# The tests (and the smoke notebooks' kernels) share JAX's persistent compilation cache: the same
# small programs are compiled in many test files. Keyed by program, JAX version and flags, so a
# stale entry is never used; `make clean` removes it. Only the test targets use it: the times
# `make reproduce` reports are cold-compile times.
TEST_ENV := JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.cache/jax JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.2
unit-test: setup
	$(TEST_ENV) $(PY) -m pytest -q $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile) tests

# papermill injects the smoke parameters into copies under a temporary dir (prepare-only), nbval
# executes the copies (each notebook on one worker: its cells share a kernel), then a test checks
# that each notebook wrote what the manifest declares.
notebook-test: setup
	@d=$$(mktemp -d -t rlcv-nb-XXXXXX) && echo "smoke notebooks in $$d" && \
	$(PY) -m rlcv_lib.reproduce prepare --preset smoke --out $$d && \
	(cd $$d && $(TEST_ENV) $(abspath $(PY)) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
	  $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile) --rootdir $$d prepared/) && \
	RLCV_NOTEBOOK_OUTPUTS=$$d $(PY) -m pytest -q tests/check_notebook_outputs.py && rm -rf $$d

lint: setup  ## ruff
	$(VENV)/bin/ruff check rlcv_lib tests benchmarks notebooks/*.py

# Jupyter refuses to run as root unless told; containers and Colab-like machines often are root.
lab: setup  ## open the notebooks in JupyterLab
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root,) notebooks/

bench: setup  ## speed and memory benchmarks (tables on stdout, benchmarks/results.json)
	@set -e; for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b; done

freeze: setup  ## rewrite requirements/constraints.txt from the venv
	{ head -n 2 requirements/constraints.txt; $(PY) -m pip freeze | grep -v -iE '^(-e|rlcv|panopticapi-lite)'; } \
	  > requirements/constraints.new && mv requirements/constraints.new requirements/constraints.txt

clean:  ## remove runs/, caches and the venv (figures/ is kept: it holds committed results)
	rm -rf runs .pytest_cache .ruff_cache .hypothesis .cache $(VENV) build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
