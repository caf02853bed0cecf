# The README's two commands: `make run` (one fit) and `make test`.
# Each creates the virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BASE   := $(VENV)/.installed-base
DEV    := $(VENV)/.installed-dev
PIP    := $(PY) -m pip install --quiet -c constraints.txt

.PHONY: run test test-fast test-eager bench clean-venv

# The last step compiles the fused CPU kernel of the KAN layer now (about a
# minute, once per machine) rather than inside the first fit that needs it.
$(BASE): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	$(PY) -c "from kanode.nn import _native; _native.kernel()"
	touch $@

$(DEV): $(BASE)
	$(PIP) -e '.[dev,ray]'
	touch $@

run: $(BASE)
	$(PY) -m kanode.fit $(ARGS)

test: $(DEV)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(DEV)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The layer tests again with the fused kernel switched off: the PyTorch path
# that machines without g++ (or with KANODE_NATIVE=0) run.
test-eager: $(DEV)
	KANODE_NATIVE=0 $(PY) -m pytest tests/kanode/nn $(PYTEST_ARGS)

bench: $(BASE)
	$(PY) experiments/bench_layers.py
	$(PY) experiments/bench_ode.py

clean-venv:
	rm -rf $(VENV)
