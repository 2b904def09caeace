#!/bin/sh
# docker: Docker Engine and compose, started and answering.
#
# By default both come from the distribution's own packages (Debian and Ubuntu ship `docker.io` and
# `docker-compose`). With PHOENIX_DOCKER_SOURCE=docker they come from Docker's repository instead
# (download.docker.com: docker-ce and the compose plugin); PHOENIX_DOCKER_REPOSITORY_URL overrides that
# repository's address (a mirror). On a node with systemd the engine is enabled and started as a service;
# without systemd (a container whose init is not systemd) dockerd is started in the background, logging to
# /var/log/dockerd.log, unless it already answers. An existing /etc/docker/daemon.json is left as it is.
set -eu

export DEBIAN_FRONTEND=noninteractive
source="${PHOENIX_DOCKER_SOURCE:-distribution}"

case "${source}" in
distribution)
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends docker.io docker-compose ca-certificates iptables
    fi
    ;;
docker)
    # shellcheck source=/dev/null
    . /etc/os-release
    repository="${PHOENIX_DOCKER_REPOSITORY_URL:-https://download.docker.com/linux/${ID}}"
    keyring=/etc/apt/keyrings/docker.asc
    if ! dpkg -s docker-ce >/dev/null 2>&1; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends ca-certificates curl
        install -m 0755 -d /etc/apt/keyrings
        if [ ! -s "${keyring}" ]; then
            curl -fsSL "${repository}/gpg" -o "${keyring}"
            chmod a+r "${keyring}"
        fi
        echo "deb [arch=$(dpkg --print-architecture) signed-by=${keyring}] ${repository} ${VERSION_CODENAME} stable" \
            > /etc/apt/sources.list.d/docker.list
        apt-get update -q
        apt-get install -y -q docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin
    fi
    ;;
*)
    echo "PHOENIX_DOCKER_SOURCE must be \`distribution\` or \`docker\`, not \`${source}\`" >&2
    exit 1
    ;;
esac

engine=""
if [ -d /run/systemd/system ]; then
    systemctl enable --now docker
elif ! docker info >/dev/null 2>&1; then
    echo "no systemd here: starting dockerd in the background (log: /var/log/dockerd.log)"
    setsid dockerd </dev/null >>/var/log/dockerd.log 2>&1 &
    engine=$!
fi
waited=0
until docker info >/dev/null 2>&1; do
    # Gone, or a zombie this shell has not reaped: dockerd exited.
    if [ -n "${engine}" ] && { [ ! -r "/proc/${engine}/status" ] || grep -q '^State:[[:space:]]*Z' "/proc/${engine}/status"; }; then
        echo "dockerd exited before it answered; the end of its log:" >&2
        tail -n 20 /var/log/dockerd.log >&2
        exit 1
    fi
    if [ "${waited}" -ge 60 ]; then
        echo "the Docker engine did not answer within 60 s; the end of its log:" >&2
        tail -n 20 /var/log/dockerd.log >&2 2>/dev/null || true
        exit 1
    fi
    sleep 1
    waited=$((waited + 1))
done
docker version --format 'Docker Engine {{.Server.Version}}'
