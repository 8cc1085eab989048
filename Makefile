# socketreactor: two commands set everything up on a fresh machine.
#   make bench   the connection-scaling benchmark (the project's main job)
#   make test    create .venv, install the project with its test extra, run pytest

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test test-faults lint bench bench-quick demo clean venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) setup.cfg pyproject.toml
	rm -f $(VENV)/.installed-*
	$(PY) -m pip install --quiet -e '.[test,bench,lint]'
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check reactor handlers tests bench
	$(PY) -m mypy

demo: $(STAMP)
	$(PY) -m bench.demo

bench: demo

bench-quick: demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
