#!/usr/bin/env bash
# The connector on an NVIDIA Jetson (aarch64: JetPack's Ubuntu) or another 64-bit ARM board with Debian or Ubuntu
# (a Raspberry Pi 4/5 with 64-bit Raspberry Pi OS). PyPI's mxnet 1.9.1 aarch64 wheel cannot import (it needs Arm
# Performance Libraries it does not ship), so the engine is ONNX Runtime (PyPI's CPU build, or NVIDIA's build with
# the CUDA execution provider given with --onnxruntime-wheel), with OpenCV's cv2.dnn as the fallback.
# Run with --help for the options, --dry-run to see what it would do.
set -euo pipefail
# shellcheck source=install/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=install/arm.sh
source "$(dirname "${BASH_SOURCE[0]}")/arm.sh"

SCRIPT_NAME=install/nvidiajtx2.sh
PLATFORM_DESCRIPTION="an NVIDIA Jetson or another aarch64 board with Ubuntu or Debian"
ACCEPTED_ARCHES=(aarch64 arm64)
SUPPORTED_OS_IDS=(ubuntu debian)
SUPPORTED_OS_DESCRIPTION="Ubuntu (JetPack's L4T) and Debian"
NEED_SYSTEM_SITE_PACKAGES=0
ARM_EXTRA_USAGE=" [--onnxruntime-wheel FILE]"
ARM_EXTRA_OPTIONS="  --onnxruntime-wheel FILE  an ONNX Runtime build to use instead of PyPI's CPU one: on a Jetson, NVIDIA's
                  onnxruntime-gpu wheel for its JetPack, which has the CUDA execution provider (GPUAcceleration=GPU)
"
PLATFORM_NOTES="
Engines: ONNX Runtime (PyPI, CPU; or --onnxruntime-wheel for CUDA), OpenCV's cv2.dnn (opencv-python-headless)."

arm_packages() {
    APT_PACKAGES=(ca-certificates libgomp1 libstdc++6)
    if [[ -n $PYTHON ]]; then
        :
    elif [[ $OS_ID == ubuntu && $OS_VERSION_ID == 18.04 ]]; then
        # JetPack 4: python3 is 3.6; 3.8 comes from the universe repository
        APT_PACKAGES+=(python3.8 python3.8-venv) PYTHON=python3.8
    else
        APT_PACKAGES+=(python3 python3-venv)
    fi
    DISTRIBUTION_PYTHON_PACKAGES=()
    PIP_ENGINE_PACKAGES=(numpy opencv-python-headless)
    if [[ -n $ORT_WHEEL ]]; then
        DISTRIBUTION_PYTHON_PACKAGES=(onnxruntime)
    else
        PIP_ENGINE_PACKAGES+=(onnxruntime)
    fi
}

arm_checks() {
    local providers
    providers=$("$VENV/bin/python" -c 'import onnxruntime; print(" ".join(onnxruntime.get_available_providers()))') ||
        die "onnxruntime does not import in $VENV"
    say "ONNX Runtime execution providers: $providers"
    if [[ -e /etc/nv_tegra_release && $providers != *CUDAExecutionProvider* ]]; then
        warn "this Jetson's ONNX Runtime has no CUDAExecutionProvider: GPUAcceleration=GPU will refuse to start. For the GPU, rerun with --onnxruntime-wheel and NVIDIA's onnxruntime-gpu wheel for your JetPack"
    fi
}

arm_install "$@"
