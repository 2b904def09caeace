#!/bin/sh
# ollama: the Ollama model server, listening on all interfaces.
#
# Installed by Ollama's own install script from ollama.com; PHOENIX_OLLAMA_INSTALL_URL replaces its address
# (a mirror, or a local file:// for tests: any shell script that installs `ollama` on the PATH and its
# systemd unit). On a node with systemd the service is started; without systemd running it is enabled for
# the next boot only, and the script says so.
set -eu

installer="${PHOENIX_OLLAMA_INSTALL_URL:-https://ollama.com/install.sh}"
if ! command -v ollama >/dev/null 2>&1; then
    curl -fsSL "${installer}" -o /tmp/ollama-install.sh
    sh /tmp/ollama-install.sh
    rm -f /tmp/ollama-install.sh
fi
mkdir -p /etc/systemd/system/ollama.service.d
cat > /etc/systemd/system/ollama.service.d/listen.conf <<'UNIT'
[Service]
Environment=OLLAMA_HOST=0.0.0.0:11434
UNIT
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now ollama
else
    systemctl enable ollama
    echo "no systemd running here: ollama.service is enabled for the next boot, not started"
fi
