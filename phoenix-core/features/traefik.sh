#!/bin/sh
# traefik: the Traefik reverse proxy with a file provider that the sync step writes to.
#
# The release tarball comes from GitHub (PHOENIX_TRAEFIK_VERSION, default v3.3.4); PHOENIX_TRAEFIK_URL
# replaces its address (a mirror, or a local file:// for tests: any tar.gz with a `traefik` binary at its
# top that answers `traefik version` with the version). On a node with systemd the service is enabled and
# started; without systemd running it is enabled for the next boot only, and the script says so.
set -eu

version="${PHOENIX_TRAEFIK_VERSION:-v3.3.4}"
arch="$(dpkg --print-architecture)"
url="${PHOENIX_TRAEFIK_URL:-https://github.com/traefik/traefik/releases/download/${version}/traefik_${version}_linux_${arch}.tar.gz}"
if ! /usr/local/bin/traefik version 2>/dev/null | grep -q "${version#v}"; then
    curl -fsSL "${url}" -o /tmp/traefik.tar.gz
    tar -xzf /tmp/traefik.tar.gz -C /usr/local/bin traefik
    rm -f /tmp/traefik.tar.gz
    /usr/local/bin/traefik version
fi
mkdir -p /etc/traefik/dynamic
if [ ! -f /etc/traefik/traefik.yml ]; then
    cat > /etc/traefik/traefik.yml <<'YAML'
entryPoints:
  web:
    address: ":80"
  websecure:
    address: ":443"
providers:
  file:
    directory: /etc/traefik/dynamic
    watch: true
YAML
fi
cat > /etc/systemd/system/traefik.service <<'UNIT'
[Unit]
Description=Traefik
After=network-online.target

[Service]
ExecStart=/usr/local/bin/traefik --configFile=/etc/traefik/traefik.yml
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now traefik
else
    systemctl enable traefik
    echo "no systemd running here: traefik.service is enabled for the next boot, not started"
fi
