# `make demo` and `make test` do all set-up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
PYTEST_ARGS ?= -n 3  # more workers than cores: many tests wait on their subprocesses (2 cores: 490 s at -n 2, 345 s at -n 3, 347 s at -n 4)
# test-latest: the newest releases setup.py's ranges admit. JAX >= 0.11 needs Python >= 3.12.
# No torch there: PyPI has no CPU build of torch 2.13.0 for Python 3.12 (a CUDA build is several
# GB), so the PyTorch parity and export tests run in `make test` only.
PYTHON_LATEST ?= $(shell for p in python3.12 python3.13 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[23]*/bin/python3 \
	2>/dev/null); do $$p -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && { echo $$p; break; }; done)
VENV_LATEST ?= .venv-latest
PY_LATEST := $(VENV_LATEST)/bin/python
LATEST_TESTS ?= tests/attention_test.py tests/sharding_test.py tests/checkpoint_test.py tests/train_test.py \
	tests/data_test.py tests/sampling_test.py tests/plan_test.py tests/device_test.py

# Bytecode is written on first import (the lock installs without it: only what runs is
# compiled). Container images often turn writing off (PYTHONDONTWRITEBYTECODE=1); then every
# test subprocess compiles jax, torch and the rest from source again (measured: make test on
# a fresh clone 9m08s with it, the subprocess tests 1.5-2x slower).
export PYTHONDONTWRITEBYTECODE :=

LOGDIR ?= workdirs
.PHONY: test test-latest demo tensorboard clean

$(PY):
	python3 -m venv $(VENV)

# The lock first (exact versions), then the project itself without resolving again;
# pip check: the lock satisfies setup.py's ranges.
$(STAMP): setup.py $(LOCK) | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -r $(LOCK)  # no .pyc of every file: only what runs is compiled
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: $(STAMP)
	$(PY) -m llada_jax.demo

# tensorboard is the `tensorboard` extra of setup.py, not in the lock: installed on first use.
tensorboard: $(STAMP)
	$(PY) -c 'import tensorboard' 2>/dev/null || $(PY) -m pip install -q -e '.[tensorboard]'
	$(VENV)/bin/tensorboard --logdir $(LOGDIR)

$(VENV_LATEST)/.installed: setup.py
	@test -n "$(PYTHON_LATEST)" || { echo "error: test-latest needs Python >= 3.12 (JAX >= 0.11): set PYTHON_LATEST"; exit 1; }
	$(PYTHON_LATEST) -m venv $(VENV_LATEST)
	$(PY_LATEST) -m pip install -q --upgrade pip
	$(PY_LATEST) -m pip install -q --upgrade --upgrade-strategy eager -e '.[test]'
	$(PY_LATEST) -m pip list --format=freeze | grep -iE '^(jax|jaxlib|flax|optax|orbax-checkpoint|grain|numpy)=='
	touch $@

test-latest: $(VENV_LATEST)/.installed
	$(PY_LATEST) -m pytest -q $(PYTEST_ARGS) $(LATEST_TESTS)

clean:
	rm -rf $(VENV) $(VENV_LATEST) build *.egg-info
