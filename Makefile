# The README's two commands: `make run` (one fit) and `make test`.
# Each creates the virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BASE   := $(VENV)/.installed-base
DEV    := $(VENV)/.installed-dev
PIP    := $(PY) -m pip install --quiet -c constraints.txt

.PHONY: run test test-fast test-eager bench clean-venv

# The last step compiles kanode's C++ CPU kernels now (the KAN layer, the fused
# solve of a training window, the L-BFGS recursion: a few minutes, once per
# machine) rather than inside the first fit that needs them.
$(BASE): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	$(PY) -c "from kanode.nn import _native; _native.kernel(); from kanode import window; window.available(); from kanode.optim.lbfgs import TWO_LOOP; TWO_LOOP.get()"
	touch $@

$(DEV): $(BASE)
	$(PIP) -e '.[dev,ray]'
	touch $@

run: $(BASE)
	$(PY) -m kanode.fit $(ARGS)

# One pytest worker per core (pytest-xdist; each worker runs torch on one thread).
XDIST  ?= -n auto --dist worksteal

test: $(DEV)
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(DEV)
	$(PY) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# The layer, optimiser, trainer and polish tests again with kanode's C++ kernels switched
# off: the PyTorch paths that machines without g++ (or with KANODE_NATIVE=0) run.
test-eager: $(DEV)
	KANODE_NATIVE=0 $(PY) -m pytest $(XDIST) tests/kanode/nn tests/kanode/test_optim.py tests/kanode/test_train.py tests/kanode/test_polish.py $(PYTEST_ARGS)

bench: $(BASE)
	$(PY) experiments/bench_layers.py
	$(PY) experiments/bench_ode.py
	$(PY) experiments/bench_engine.py

clean-venv:
	rm -rf $(VENV)
