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

demo: install
	$(RUN) -m torch_tsm.train --output models/demo

test: install
	$(RUN) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
