#!/bin/sh
# traefik: the Traefik reverse proxy with a file provider that the sync step writes to.
set -eu

version="${PHOENIX_TRAEFIK_VERSION:-v3.3.4}"
arch="$(dpkg --print-architecture)"
if ! /usr/local/bin/traefik version 2>/dev/null | grep -q "${version#v}"; then
    curl -fsSL "https://github.com/traefik/traefik/releases/download/${version}/traefik_${version}_linux_${arch}.tar.gz" \
        -o /tmp/traefik.tar.gz
    tar -xzf /tmp/traefik.tar.gz -C /usr/local/bin traefik
    rm -f /tmp/traefik.tar.gz
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
systemctl daemon-reload
systemctl enable --now traefik
