#!/bin/sh
# trusted_ca: trust the internal Step-CA root certificate, fetched from PHOENIX_CA_URL.
#
# Fetches `${PHOENIX_CA_URL}/roots.pem` (the CA's own address: no outside download to point elsewhere) and adds it
# to the system trust store with update-ca-certificates. Needs curl and ca-certificates (base_setup installs them).
set -eu

url="${PHOENIX_CA_URL:?the trusted_ca feature needs PHOENIX_CA_URL (bootstrap_ca_url)}"
target=/usr/local/share/ca-certificates/phoenix-root-ca.crt

# The CA is not trusted yet, so its own certificate is fetched without verification and then pinned.
curl -fsSk "${url}/roots.pem" -o "${target}.new"
if ! grep -q 'BEGIN CERTIFICATE' "${target}.new"; then
    echo "no certificate at ${url}/roots.pem" >&2
    rm -f "${target}.new"
    exit 1
fi
mv "${target}.new" "${target}"
update-ca-certificates
