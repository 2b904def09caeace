#!/bin/sh
# step_ca: the Step-CA certificate authority, initialised once and run as a service.
set -eu

export DEBIAN_FRONTEND=noninteractive
name="${PHOENIX_CA_NAME:-Phoenix Internal CA}"
dns="${PHOENIX_CA_DNS:?the step_ca feature needs PHOENIX_CA_DNS}"
provisioner="${PHOENIX_CA_PROVISIONER:-admin}"
arch="$(dpkg --print-architecture)"

for package in step-cli step-ca; do
    if ! dpkg -s "${package}" >/dev/null 2>&1; then
        curl -fsSL "https://dl.smallstep.com/gh-release/certificates/docs-ca-install/latest/${package}_${arch}.deb" \
            -o "/tmp/${package}.deb"
        apt-get install -y -q "/tmp/${package}.deb"
        rm -f "/tmp/${package}.deb"
    fi
done

export STEPPATH=/etc/step-ca
if [ ! -f "${STEPPATH}/config/ca.json" ]; then
    mkdir -p "${STEPPATH}"
    umask 077
    head -c 32 /dev/urandom | base64 > "${STEPPATH}/password.txt"
    step ca init --name "${name}" --dns "${dns}" --address ":9000" --provisioner "${provisioner}" \
        --password-file "${STEPPATH}/password.txt" --acme
fi
cat > /etc/systemd/system/step-ca.service <<UNIT
[Unit]
Description=Step-CA
After=network-online.target

[Service]
Environment=STEPPATH=${STEPPATH}
ExecStart=/usr/bin/step-ca ${STEPPATH}/config/ca.json --password-file ${STEPPATH}/password.txt
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now step-ca
