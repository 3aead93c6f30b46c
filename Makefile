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

# Passive OpenMP waits: tests and benchmarks run PyTorch beside TensorFlow / LiteRT in one process, and
# PyTorch's idle OpenMP workers otherwise spin and starve the other runtime's threads on 2 cores.
PASSIVE := OMP_WAIT_POLICY=passive

test: install
	$(PASSIVE) $(RUN) -m pytest -q

# Speed, memory and size figures into BENCHMARKS.md (about 6 minutes on 2 cores once bench/.work/ is built).
bench: install
	$(PASSIVE) $(RUN) -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info
