#!/usr/bin/env bash
# The connector's dependencies on an x86_64 Debian, Ubuntu or Amazon Linux 2023 machine: the modern equivalent of
# the documentation's x86_64.sh. Run with --help for the options, --dry-run to see what it would do.
set -euo pipefail
# shellcheck source=install/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_NAME=install/x86_64.sh
PLATFORM_DESCRIPTION="x86_64 Debian, Ubuntu or Amazon Linux 2023"
ACCEPTED_ARCHES=(x86_64 amd64)
SUPPORTED_OS_IDS=(debian ubuntu amzn)
SUPPORTED_OS_DESCRIPTION="Debian, Ubuntu and Amazon Linux"
# The PyPI mxnet 1.9.1 wheel bundles libgfortran.so.3 and OpenBLAS; it links the system's OpenMP and C++ runtime.
# opencv-python-headless needs no X libraries (the documented libsm6/libxext6/libxrender1 were for opencv-python).
APT_PACKAGES=(libgomp1 libstdc++6)
DNF_PACKAGES=(libgomp libstdc++)
PLATFORM_NOTES="
MXNet comes from PyPI (mxnet 1.9.1, CPU build with MKL-DNN)."

platform_checks() { :; }

main_install "$@"
