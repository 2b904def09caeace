#!/bin/sh
# nvidia: the NVIDIA user-space driver matching the host's kernel driver, without kernel modules.
#
# PHOENIX_NVIDIA_RUNFILE_URL names the runfile (an https:// address, or file:// for a local copy); the host
# driver version must match it. The runfile is run with `--no-kernel-module`, so only the user-space half
# is installed; `nvidia-smi` must then answer.
set -eu

export DEBIAN_FRONTEND=noninteractive
url="${PHOENIX_NVIDIA_RUNFILE_URL:?the nvidia feature needs PHOENIX_NVIDIA_RUNFILE_URL}"
runfile=/tmp/nvidia-driver.run

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "nvidia-smi already works: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)"
    exit 0
fi
apt-get update -q
apt-get install -y -q --no-install-recommends curl kmod
curl -fsSL "${url}" -o "${runfile}"
sh "${runfile}" --silent --no-kernel-module --no-questions --ui=none
rm -f "${runfile}"
nvidia-smi
