#!/bin/sh
# base_setup: locale, time zone, base packages and unattended security upgrades.
# Reads nothing but the environment Phoenix sets (PHOENIX_TIMEZONE, optional); safe to run again. Everything
# comes from the distribution's own packages, so there is no download to point elsewhere.
set -eu

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
    ca-certificates curl gnupg jq less locales sudo tzdata unattended-upgrades vim-tiny

if ! locale -a 2>/dev/null | grep -qi '^en_US.utf8$'; then
    sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
    locale-gen
fi
update-locale LANG=en_US.UTF-8

if [ -n "${PHOENIX_TIMEZONE:-}" ] && [ -e "/usr/share/zoneinfo/${PHOENIX_TIMEZONE}" ]; then
    ln -sf "/usr/share/zoneinfo/${PHOENIX_TIMEZONE}" /etc/localtime
    echo "${PHOENIX_TIMEZONE}" > /etc/timezone
fi

cat > /etc/apt/apt.conf.d/20auto-upgrades <<'CONF'
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
CONF
