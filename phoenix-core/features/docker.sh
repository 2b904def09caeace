#!/bin/sh
# docker: Docker Engine and the compose plugin from Docker's own repository.
set -eu

export DEBIAN_FRONTEND=noninteractive
# shellcheck source=/dev/null
. /etc/os-release
distribution="${ID}"
keyring=/etc/apt/keyrings/docker.asc

apt-get update -q
apt-get install -y -q --no-install-recommends ca-certificates curl
install -m 0755 -d /etc/apt/keyrings
if [ ! -s "${keyring}" ]; then
    curl -fsSL "https://download.docker.com/linux/${distribution}/gpg" -o "${keyring}"
    chmod a+r "${keyring}"
fi
echo "deb [arch=$(dpkg --print-architecture) signed-by=${keyring}] https://download.docker.com/linux/${distribution} ${VERSION_CODENAME} stable" \
    > /etc/apt/sources.list.d/docker.list
apt-get update -q
apt-get install -y -q docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin
systemctl enable --now docker 2>/dev/null || true
docker version --format '{{.Server.Version}}'
