# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv on first use.

# Python 3.11, 3.12 or 3.13 (requires-python in pyproject.toml). PYTHON=... chooses; otherwise the first
# of these that runs and is a supported version: python3.11 (what CI tests), python3.12, python3.13, python3.
SUPPORTED := 3.11, 3.12 or 3.13
SUPPORTED_CHECK := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))
ifeq ($(origin PYTHON),undefined)
PYTHON := $(firstword $(foreach p,python3.11 python3.12 python3.13 python3,$(shell $(p) -c '$(SUPPORTED_CHECK)' >/dev/null 2>&1 && echo $(p))))
endif
VENV ?= .venv
BIN := $(VENV)/bin
RUN := $(BIN)/python
EXTRAS ?= dev,bench

.PHONY: demo test docs test-avx2 wheel-check bench bench-compare full-size-parity fixture-model install clean

$(BIN)/python:
	@if [ -z "$(PYTHON)" ]; then \
		echo "No supported Python found: this project needs Python $(SUPPORTED); tried python3.11, python3.12, python3.13 and python3." >&2; \
		echo "Install one, or name it: make $(or $(MAKECMDGOALS),demo) PYTHON=/path/to/python3.12" >&2; exit 1; \
	elif ! $(PYTHON) -c '$(SUPPORTED_CHECK)' >/dev/null 2>&1; then \
		echo "PYTHON=$(PYTHON) is not a working Python $(SUPPORTED): $$($(PYTHON) --version 2>&1 | head -1)" >&2; exit 1; \
	fi
	@echo "creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $@

# LiteRT.js for tsm-web's page, at the exact versions of runtime/web_page/package.json, from npm into its
# git-ignored node_modules/ (the wheel ships it). Without npm the rest installs and works, and the browser
# tests skip, saying why.
LITERTJS := runtime/web_page/node_modules/.installed
$(LITERTJS): runtime/web_page/package.json
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix runtime/web_page --no-package-lock --no-audit --no-fund --omit=dev --loglevel=error && touch $@ \
			|| echo "npm install failed: tsm-web's page has no LiteRT.js and its browser tests skip" >&2; \
	else \
		echo "npm not found: tsm-web's page gets no LiteRT.js and its browser tests skip (Debian: apt-get install npm)" >&2; \
	fi

install: $(VENV)/.installed $(LITERTJS)

# Train a live model on the built-in data (the causal shift, trained on clips and on continuous video), convert it
# as a clip model and as a streaming model, uint8, each checked against PyTorch; the streaming model's letters on
# held-out continuous videos, and how to open it on a camera (tsm-web).
demo: install
	$(RUN) -m torch_tsm.train
	$(RUN) -m conversion.to_tflite
	$(RUN) -m conversion.to_tflite --streaming

# Passive OpenMP waits: tests and benchmarks run PyTorch beside TensorFlow / LiteRT in one process, and
# PyTorch's idle OpenMP workers otherwise spin and starve the other runtime's threads on 2 cores.
PASSIVE := OMP_WAIT_POLICY=passive

# ruff's lint and format checks first (seconds): `ruff format . && ruff check --fix .` applies them.
test: install
	$(BIN)/ruff check --quiet .
	$(BIN)/ruff format --check --quiet .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(PASSIVE) $(RUN) -m pytest -q

# The documentation site from docs/ and mkdocs.yml into site/ (make test builds it too, --strict: a broken link fails).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The part of the suite whose figures move with the CPU's arithmetic, again with PyTorch's three CPU libraries
# held to AVX2 (ATen's kernels, oneDNN's convolutions, MKL's matrix products): a short training run against its
# bounds, the tests' model and its conversions by both routes against their gates, and predict on a video.
# On an AVX-512 or AMX machine this runs the AVX2 machines' code paths too (CI runs it after make test; 5 minutes).
AVX2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
test-avx2: install
	$(AVX2) $(PASSIVE) $(RUN) -m pytest -q tests/test_training.py::test_short_training_run_learns tests/test_fixture_model.py \
		tests/test_conversion.py::test_model_card_holds_the_conversion_figures tests/test_predict.py

# The package as pip installs it, away from the source tree: builds the wheel, installs it into a venv
# that borrows $(VENV)'s dependencies, and runs every command from an empty folder (.ci/wheel-check).
wheel-check: install
	$(PASSIVE) bash .ci/wheel-check $(RUN)

# Speed, memory and size figures into BENCHMARKS.md (about 6 minutes on 2 cores once bench/.work/ is built).
bench: install
	$(PASSIVE) $(RUN) -m bench.run

# `make bench` with litert-torch's int8 model of the same weights beside ours (row 14), in a venv of its own:
# litert-torch is a bench-only yardstick (the `compare` extra) and downgrades the unpinned typing_extensions,
# so it never enters .venv, make test or CI.
bench-compare:
	$(MAKE) bench VENV=.venv-compare EXTRAS=dev,bench,compare

# Parity at the deployed size (224 px, width 1.0) on the built-in data. One causal model serves every route, as
# in the test suite: the default recipe at 64 px first, then fine-tuned at 224 px from that checkpoint; converted
# as a clip model and as a streaming model by both routes (each conversion checks its stages and exits non-zero
# on a miss); then conversion.parity runs every route again, the uint8 routes under the camera changes too.
# About 1 h 45 min on 2 cores (docs/parity.md).
FULL_SIZE_64 := --shift causal --width-mult 1.0 --output models/full-64
FULL_SIZE := --shift causal --width-mult 1.0 --image-size 224 --pretrained models/full-64/best.ckpt \
	--synthetic-clips 640 200 --max-epochs 3 --batch-size 8 --lr 1e-3 --warmup-epochs 0.25 --output models/full-224
full-size-parity: install
	$(PASSIVE) $(RUN) -m torch_tsm.train $(FULL_SIZE_64)
	$(PASSIVE) $(RUN) -m torch_tsm.train $(FULL_SIZE)
	$(PASSIVE) $(RUN) -m conversion.to_tflite --checkpoint models/full-224/best.ckpt --route onnx
	$(PASSIVE) $(RUN) -m conversion.to_tflite --checkpoint models/full-224/best.ckpt --route keras
	$(PASSIVE) $(RUN) -m conversion.to_tflite --checkpoint models/full-224/best.ckpt --streaming --calibration-clips 64 --route onnx
	$(PASSIVE) $(RUN) -m conversion.to_tflite --checkpoint models/full-224/best.ckpt --streaming --calibration-clips 64 --route keras
	$(PASSIVE) $(RUN) -m conversion.parity models/full-224

# The tests' trained model (tests/fixture_model.py): trains it again with its recipe, checks it, and rewrites
# tests/data/causal-demo.pt (about 14 minutes on 2 cores). Commit the new file with the change that needed it.
fixture-model: install
	$(PASSIVE) $(RUN) -m tests.fixture_model

clean:
	rm -rf $(VENV) build dist site *.egg-info runtime/web_page/node_modules
