#!/bin/bash
# Makes Mesa's software OpenGL (llvmpipe) reachable through EGL for the WebGPU kernel tests: Dawn's
# OpenGL backend on a surfaceless EGL display gives a compatibility-mode WebGPU adapter on machines
# without a GPU (engine notes). As root, apt-get installs what is missing; SKIP_APT=1 never does.
set -euo pipefail
log() { echo "[webgpu-setup] $*" >&2; }
# shellcheck source=../apt-missing.sh
. "$(dirname "$0")/../apt-missing.sh"
missing=()
have_lib() { ldconfig -p | grep -q "$1"; }
have_lib 'libEGL.so ' || missing+=(libegl-dev)
have_lib 'libEGL_mesa.so.0' || missing+=(libegl-mesa0)
ls /usr/lib/x86_64-linux-gnu/dri/swrast_dri.so /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1 || missing+=(libgl1-mesa-dri)
apt_install_missing ${missing[@]+"${missing[@]}"}
