# make demo: install into .venv, then run the demo search (budget 100).
# make test: install into .venv, then run the test suite CI runs (all but slow tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUDGET ?= 100

.PHONY: demo test test-fast test-all install clean

demo: $(STAMP)
	$(BIN)/autocompress search --budget $(BUDGET)

test: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

test-fast: $(STAMP)
	$(BIN)/pytest -q

test-all: $(STAMP)
	$(BIN)/pytest -q -m ""

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
