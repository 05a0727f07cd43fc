# make demo: install into .venv, then run the demo search (budget 100).
# make test: install into .venv, then run the default test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUDGET ?= 100

.PHONY: demo test test-all install clean

demo: $(STAMP)
	$(BIN)/autocompress search --budget $(BUDGET)

test: $(STAMP)
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
