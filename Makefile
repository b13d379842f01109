# asyncreceive: `make install` then `make test`.
VENV ?= .venv
PYTHON ?= python3
VPY := $(VENV)/bin/python
# lightningd runs plugin.py through `/usr/bin/env python3`: put the venv first on PATH for tests.
TESTENV := PATH=$(CURDIR)/$(VENV)/bin:$$PATH RUST=0
PYTEST_ARGS ?=
# integration and interop tests mostly wait on lightningd/bitcoind: two pytest-xdist workers halve the time
JOBS ?= 2
XDIST := -n $(JOBS) --dist worksteal

.PHONY: install install-postgres test test-postgres unit integration interop bench bench-scale fuzz fuzz-smoke demo clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

test: install
	$(TESTENV) $(VPY) -m pytest -rfEs $(XDIST) tests $(PYTEST_ARGS)

# the integration suite with lightningd's database (datastore included) in PostgreSQL: pyln-testing
# starts a throwaway server per test with initdb/postgres from `pg_config --bindir` (Debian package
# postgresql: `make install-postgres`, as root; psycopg2 from requirements-dev.txt).  PostgreSQL
# refuses to run as root: as root, the wrappers in .ci/pg-unprivileged run it as user nobody.
PG_WRAP := $(if $(filter 0,$(shell id -u)),$(CURDIR)/.ci/pg-unprivileged:,)

install-postgres:
	bash .ci/install-postgres

test-postgres: install
	PATH=$(PG_WRAP)$(CURDIR)/$(VENV)/bin:$$PATH RUST=0 TEST_DB_PROVIDER=postgres \
	  $(VPY) -m pytest -rfEs $(XDIST) tests/integration $(PYTEST_ARGS)

unit: install
	$(TESTENV) $(VPY) -m pytest -rfEs tests/unit $(PYTEST_ARGS)

integration: install
	$(TESTENV) $(VPY) -m pytest -rfEs $(XDIST) tests/integration $(PYTEST_ARGS)

# live tests against ldk-node (builds tests/interop/ldk once into ~/.cache/asyncreceive/ldk-target)
interop: install
	$(TESTENV) $(VPY) -m pytest -rfEs $(XDIST) tests/interop $(PYTEST_ARGS)

# BOLT 12 async receive on regtest, step by step (demo/demo.py: bitcoind + payer, server and recipient
# lightningd in a temporary directory, removed at the end); KEEP=1 leaves the nodes running
KEEP ?=
demo: install
	@$(VPY) demo/demo.py $(if $(filter 1 yes true,$(KEEP)),--keep)

bench: install
	$(TESTENV) $(VPY) -m pytest -q -s -p no:cacheprovider bench/bench_transport.py bench/bench_roles.py 2>&1 | grep -E '^BENCH|passed|failed|skipped|error'

# the static invoice server at scale (bench/bench_scale.py): one table, a column per step of SIZES
# filler clients x 10 slots (default 0, 1000 and N); DB=postgres: lightningd's PostgreSQL backend
N ?= 10000
SIZES ?= 0,1000,$(N)
DB ?= sqlite
BENCH_DB := $(if $(filter postgres,$(DB)),TEST_DB_PROVIDER=postgres,)

bench-scale: install
	PATH=$(if $(BENCH_DB),$(PG_WRAP),)$(CURDIR)/$(VENV)/bin:$$PATH RUST=0 $(BENCH_DB) SIZES=$(SIZES) \
	  $(VPY) -m pytest -q -s -p no:cacheprovider bench/bench_scale.py $(PYTEST_ARGS) 2>&1 | grep -aE '^BENCH|^E |^(FAILED|ERROR) |[0-9]+ (passed|failed|skipped|error)'

# coverage-guided fuzzing of every parser of network/lightningd input (fuzz/README.md); FUZZ_RUNS inputs
# per target, one target after another (FUZZ_JOBS at once); crashing inputs go to fuzz/crashes/
FUZZ_RUNS ?= 1000000
FUZZ_JOBS ?= 1

$(VENV)/.fuzz-installed: $(VENV)/.installed requirements-fuzz.txt
	$(VENV)/bin/pip install -q -r requirements-fuzz.txt
	touch $@

fuzz: $(VENV)/.fuzz-installed
	$(VPY) -m fuzz.run --runs $(FUZZ_RUNS) --jobs $(FUZZ_JOBS)

# a few seconds per target, through libFuzzer when atheris is installed (the unit test runs the same
# targets in-process: tests/unit/test_fuzz_smoke.py)
fuzz-smoke: $(VENV)/.fuzz-installed
	$(VPY) -m fuzz.run --runs 2000

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis fuzz/corpus fuzz/logs
