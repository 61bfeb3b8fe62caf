# Two commands set everything up on a fresh machine:
#   make demo   builds a dataset from the built-in demo images
#   make test   runs the whole test suite (CI runs exactly this through .ci/run)
# Each creates .venv on first use and installs the pinned dependencies (constraints.txt).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
DEMO   ?= demo

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): setup.py reader/pyproject.toml reader/version.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cropshard demo-images $(DEMO)/images
	$(VENV)/bin/cropshard build --input '$(DEMO)/images/**' --output $(DEMO)/dataset --overwrite \
	    --crop center --size 128x128 --encoding raw --split train=0.8,validation=0.1,test=0.1
	$(VENV)/bin/cropshard inspect $(DEMO)/dataset

test: $(STAMP)
	bash tests/run_all.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
