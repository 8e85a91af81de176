# ddpgrad: `make train` runs the example on 4 MPI ranks, `make test` runs the whole suite.
# Both create .venv and install what they need on a machine with nothing but Python >= 3.10.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
NP     ?= 4
MPI_SIZES ?= 1 2 3 4
# One BLAS thread per rank: ranks must not fight over cores (see launch/README.md).
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

STAMP := $(VENV)/.installed
# `make train` installs only what training needs (MPI, the progress bar): 49 -> 27 s cold, measured.
TRAIN_STAMP := $(if $(wildcard $(STAMP)),$(STAMP),$(VENV)/.installed-train)

.PHONY: install train test test-unit test-mpi test-cluster test-packaging bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[mpi,test,examples,plot]"
	touch $(STAMP)

$(VENV)/.installed-train: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[mpi,examples]"
	touch $@

install: $(STAMP)

train: $(TRAIN_STAMP)
	$(BIN)/python launch/ddprun.py -n $(NP) examples/train_mlp.py $(ARGS)

test: test-unit test-mpi test-cluster

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests --ignore=tests/mpi --ignore=tests/test_simcluster.py

# Each MPI run has an outer deadline so that a hang fails in minutes instead of stalling CI.
test-mpi: $(STAMP)
	@for n in $(MPI_SIZES); do \
	  echo "== tests/mpi on $$n rank(s)"; \
	  timeout -k 10 600 $(BIN)/mpiexec -n $$n $(BIN)/python -m pytest --with-mpi -x -q \
	    -p no:cacheprovider -o timeout_method=thread --timeout 240 tests/mpi || exit 1; \
	done
	@echo "== tests/mpi DDP and 16-bit sums on 2 ranks with the progress thread (DDPGRAD_PROGRESS_THREAD=1)"
	DDPGRAD_PROGRESS_THREAD=1 timeout -k 10 300 $(BIN)/mpiexec -n 2 $(BIN)/python -m pytest --with-mpi -x -q \
	    -p no:cacheprovider -o timeout_method=thread --timeout 240 tests/mpi/test_ddp.py tests/mpi/test_comm_hooks_mpi.py

# The MPI suite's DDP and failure cases across simulated nodes (network namespaces, root only:
# skipped with the reason otherwise), on 2 nodes x 1 rank and 2 x 2; see launch/simcluster.py.
test-cluster: $(STAMP)
	timeout -k 10 300 $(BIN)/python -m pytest -q -rs -p no:cacheprovider --timeout 240 tests/test_simcluster.py

# The wheel, built from the sdist, in a fresh venv: `ddprun -n 2` of a script outside the clone,
# and the sdist's own tests (about 30 s, so not part of `make test`).
test-packaging: $(STAMP)
	DDPGRAD_TEST_PACKAGING=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_packaging.py

# PyTorch (CPU build, pinned: the wheel on the CI machine's disk) is a benchmark/test-only oracle.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet torch==2.13.0 threadpoolctl
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
