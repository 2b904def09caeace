#!/bin/sh
# step_ca: the Step-CA certificate authority, initialised once and run as a service.
#
# The step-cli and step-ca packages come from Smallstep's download site; PHOENIX_SMALLSTEP_URL replaces the
# directory they are fetched from (a mirror, or a local file:// for tests: a directory holding
# `step-cli_<arch>.deb` and `step-ca_<arch>.deb`). On a node with systemd the service is started; without
# systemd running it is enabled for the next boot only, and the script says so.
set -eu

export DEBIAN_FRONTEND=noninteractive
name="${PHOENIX_CA_NAME:-Phoenix Internal CA}"
dns="${PHOENIX_CA_DNS:?the step_ca feature needs PHOENIX_CA_DNS}"
provisioner="${PHOENIX_CA_PROVISIONER:-admin}"
arch="$(dpkg --print-architecture)"
packages="${PHOENIX_SMALLSTEP_URL:-https://dl.smallstep.com/gh-release/certificates/docs-ca-install/latest}"

for package in step-cli step-ca; do
    if ! dpkg -s "${package}" >/dev/null 2>&1; then
        curl -fsSL "${packages}/${package}_${arch}.deb" \
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
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now step-ca
else
    systemctl enable step-ca
    echo "no systemd running here: step-ca.service is enabled for the next boot, not started"
fi
