#!/usr/bin/env bash
# The connector on a Raspberry Pi (armv7l: Raspberry Pi OS / Debian Bookworm or Trixie, 32-bit). PyPI has no
# armv7l wheel of MXNet, numpy, OpenCV or ONNX Runtime, so the engine comes from the distribution's archive:
# python3-numpy and python3-opencv (cv2.dnn serves the converted ONNX model) and, where the archive has it
# (Debian Trixie), python3-onnxruntime. The venv is made with --system-site-packages to see them; ggic's wheel
# and its pure-Python dependencies come from PyPI. Run with --help for the options, --dry-run to see what it does.
set -euo pipefail
# shellcheck source=install/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=install/arm.sh
source "$(dirname "${BASH_SOURCE[0]}")/arm.sh"

SCRIPT_NAME=install/armv7l.sh
PLATFORM_DESCRIPTION="a Raspberry Pi (armv7l) with Raspberry Pi OS or Debian (Bookworm, Trixie)"
ACCEPTED_ARCHES=(armv7l armv8l)
SUPPORTED_OS_IDS=(raspbian debian)
SUPPORTED_OS_DESCRIPTION="Raspberry Pi OS and Debian (Bookworm, Trixie)"
NEED_SYSTEM_SITE_PACKAGES=1
ARM_EXTRA_USAGE="" ARM_EXTRA_OPTIONS=""
PLATFORM_NOTES="
Engines: ONNX Runtime where the archive has python3-onnxruntime (Debian Trixie), else OpenCV's cv2.dnn
(python3-opencv); \`ggic run\` picks the first that imports. MXNet does not exist for armv7l."

arm_packages() {
    APT_PACKAGES=(ca-certificates python3 python3-venv python3-numpy python3-opencv)
    DISTRIBUTION_PYTHON_PACKAGES=(numpy opencv-python-headless opencv-python onnxruntime)
    if apt_has python3-onnxruntime; then
        APT_PACKAGES+=(python3-onnxruntime)
    else
        say "the archive has no python3-onnxruntime (Debian has it from Trixie on): OpenCV's cv2.dnn will serve"
    fi
    PIP_ENGINE_PACKAGES=()
    # The documentation's advice: pip unpacking packages can exhaust a Pi's memory and hang it.
    local memory_kb swap_kb
    memory_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)
    swap_kb=$(awk '/^SwapTotal:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)
    if (((${memory_kb:-0} + ${swap_kb:-0}) < 1024 * 1024)); then
        warn "only $(((${memory_kb:-0} + ${swap_kb:-0}) / 1024)) MiB of memory and swap: raise CONF_SWAPSIZE in /etc/dphys-swapfile (e.g. 1024), then: sudo /etc/init.d/dphys-swapfile restart"
    fi
}

arm_checks() {
    "$VENV/bin/python" -c 'import cv2; cv2.dnn.readNetFromONNX' ||
        die "OpenCV in $VENV has no cv2.dnn: apt-get install --reinstall python3-opencv"
}

arm_install "$@"
