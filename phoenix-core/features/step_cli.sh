#!/bin/sh
# step_cli: the step CLI, bootstrapped against the internal CA at PHOENIX_CA_URL.
#
# The step-cli package comes from Smallstep's download site; PHOENIX_SMALLSTEP_URL replaces the directory it
# is fetched from (a mirror, or a local file:// for tests: a directory holding `step-cli_<arch>.deb`).
# Needs the trusted_ca feature first: the CA is pinned by the fingerprint of the root it installed.
set -eu

export DEBIAN_FRONTEND=noninteractive
url="${PHOENIX_CA_URL:?the step_cli feature needs PHOENIX_CA_URL (bootstrap_ca_url)}"
packages="${PHOENIX_SMALLSTEP_URL:-https://dl.smallstep.com/cli/docs-cli-install/latest}"
if ! command -v step >/dev/null 2>&1; then
    arch="$(dpkg --print-architecture)"
    curl -fsSL "${packages}/step-cli_${arch}.deb" -o /tmp/step-cli.deb
    apt-get install -y -q /tmp/step-cli.deb
    rm -f /tmp/step-cli.deb
fi
fingerprint="$(step certificate fingerprint /usr/local/share/ca-certificates/phoenix-root-ca.crt)"
step ca bootstrap --ca-url "${url}" --fingerprint "${fingerprint}" --force
