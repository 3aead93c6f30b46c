# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The venv's bin first on PATH: onnx2tf calls the `onnxsim` command by name.
RUN := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python

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

test: install
	$(RUN) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
