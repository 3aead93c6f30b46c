# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
RUN := $(BIN)/python

.PHONY: demo test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Train on the built-in data, then convert the new model and print its parity table.
demo: install
	$(RUN) -m torch_tsm.train
	$(RUN) -m conversion.to_tflite

# Passive OpenMP waits: the tests run PyTorch and TensorFlow in one process, and PyTorch's spinning
# OpenMP workers otherwise starve TensorFlow's threads (and the reverse) on a 2-core machine.
test: install
	OMP_WAIT_POLICY=passive $(RUN) -m pytest -q

# Speed, memory and size figures into BENCHMARKS.md (about 20 minutes on 2 cores).
bench: install
	$(RUN) -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info
