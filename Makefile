# Two commands set everything up on a fresh machine:
#   make demo   builds a dataset from the built-in demo images
#   make test   runs the whole test suite (CI runs exactly this through .ci/run)
# For development, `make test-fast` runs the pure-logic and single-process tests (about a minute).
# Each creates .venv on first use and installs the pinned dependencies (constraints.txt).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
DEMO   ?= demo

.PHONY: venv demo test test-fast lint bench clean

venv: $(STAMP)

# One line per phase: the first install takes minutes and pip's own output is kept short.
$(STAMP): setup.py reader/pyproject.toml reader/version.py constraints.txt
	@echo "[make] 1/3 creating $(VENV) with $(PYTHON)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[make] 2/3 upgrading pip"
	@$(PIP) install --quiet --upgrade pip
	@echo "[make] 3/3 installing cropshard and its pinned dependencies (constraints.txt; a few minutes on a cold pip cache)"
	@$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	@echo "[make demo] generating the demo images in $(DEMO)/images"
	@$(VENV)/bin/cropshard demo-images $(DEMO)/images
	@echo "[make demo] building $(DEMO)/dataset"
	@$(VENV)/bin/cropshard build --input '$(DEMO)/images/**' --output $(DEMO)/dataset --overwrite \
	    --crop center --size 128x128 --encoding raw --split train=0.8,validation=0.1,test=0.1
	@echo "[make demo] inspecting $(DEMO)/dataset"
	@$(VENV)/bin/cropshard inspect $(DEMO)/dataset

test: $(STAMP)
	bash tests/run_all.sh

# No Flink, no GCS emulator, no fresh venvs, no child-process or multi-process builds (marker `slow`).
test-fast: $(STAMP)
	bash tests/run_all.sh -m "not slow and not flink and not gcs" tests/transforms tests/reader tests/tools tests/pipeline

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
