# socketreactor: two commands set everything up on a fresh machine.
#   make bench   the connection-scaling benchmark (the project's main job)
#   make test    create .venv, install the project with its test extra, run pytest

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: test test-faults lint bench bench-quick bench-setup demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# one stamp per extra, redone when the metadata changes
$(VENV)/.stamp-%: setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[$*]'
	touch $@

test: $(VENV)/.stamp-test
	$(PY) -m pytest

# the fault suite with its long variants (100 000-connection soak and storms)
test-faults: $(VENV)/.stamp-test
	REACTOR_LONG_FAULTS=1 $(PY) -m pytest tests/faults

lint: $(VENV)/.stamp-lint
	$(PY) -m ruff check reactor handlers tests bench examples
	$(PY) -m mypy

demo: $(VENV)/.stamp-test
	$(PY) -m bench.demo

LOADGEN := bench/bin/loadgen

$(LOADGEN): bench/loadgen.c
	mkdir -p bench/bin
	$(CC) -O2 -Wall -Wextra -pthread -o $@ bench/loadgen.c

# the floor the benchmark measures the event loops against: a minimal C epoll echo server
EPOLL_ECHO := bench/bin/epoll_echo

$(EPOLL_ECHO): bench/epoll_echo.c
	mkdir -p bench/bin
	$(CC) -O2 -Wall -Wextra -o $@ bench/epoll_echo.c

bench-setup:
	sh bench/setup.sh

# the benchmark: about 13 minutes, then the TLS and Sun RPC figures (about 2 minutes each,
# their own sections of the report; a missing tool skips them with the reason); writes
# bench/RESULTS.md and bench/plots/
bench: $(VENV)/.stamp-bench $(LOADGEN) $(EPOLL_ECHO) bench-setup
	$(PY) -m bench.run
	-$(PY) -m bench.tls
	-$(PY) -m bench.rpc

# the targets' workloads once, then TLS and Sun RPC once (about 3 minutes in all);
# writes bench/out/RESULTS-quick.md
bench-quick: $(VENV)/.stamp-bench $(LOADGEN) $(EPOLL_ECHO) bench-setup
	$(PY) -m bench.run --quick
	-$(PY) -m bench.tls --reps 1 --duration 1 --results bench/out/RESULTS-quick.md
	-$(PY) -m bench.rpc --reps 1 --duration 1 --results bench/out/RESULTS-quick.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
