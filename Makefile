# Two commands set everything up on a fresh machine:
#   make demo   builds a dataset from the built-in demo images
#   make test   runs the whole test suite (CI runs it through .ci/run, then the fast tier on Python 3.13)
# For development, `make test-fast` runs the pure-logic and single-process tests (about a minute).
# Each creates .venv on first use and installs the pinned dependencies (constraints.txt).
# Another interpreter gets its own venv: make test-fast PYTHON=python3.13 VENV=.venv313
#   make versions      prints the Python / Beam / TensorFlow of $(VENV)
#   make flink-venv    the Flink job server's Beam in .venv-flink (launch/flink_sdk_venv.sh)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip  # not bin/pip: a copied venv's scripts keep the shebang of the original
STAMP  := $(VENV)/.installed
DEMO   ?= demo

.PHONY: venv demo test test-fast lint bench clean versions flink-venv

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
	$(PY) tests/versions.py "make test ($(VENV))"
	VENV=$(VENV) bash tests/run_all.sh

versions: $(STAMP)
	$(PY) tests/versions.py "$(VENV)"

flink-venv: $(STAMP)
	BASE_PYTHON=$(PY) bash launch/flink_sdk_venv.sh

# No Flink, no GCS emulator, no fresh venvs, no child-process or multi-process builds (marker `slow`).
test-fast: $(STAMP)
	$(PY) tests/versions.py "make test-fast ($(VENV))"
	VENV=$(VENV) bash tests/run_all.sh -m "not slow and not flink and not gcs" tests/transforms tests/reader tests/tools tests/pipeline

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .venv-flink $(DEMO) .pytest_cache
