# `make demo` and `make test` do all set-up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -n 2  # two workers: the suite is bound by single-threaded XLA compiles

.PHONY: test demo clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): setup.py | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,torch]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: $(STAMP)
	$(PY) -m llada_jax.demo

clean:
	rm -rf $(VENV) build *.egg-info
