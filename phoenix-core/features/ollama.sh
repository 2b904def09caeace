#!/bin/sh
# ollama: the Ollama model server, listening on all interfaces.
set -eu

if ! command -v ollama >/dev/null 2>&1; then
    curl -fsSL https://ollama.com/install.sh -o /tmp/ollama-install.sh
    sh /tmp/ollama-install.sh
    rm -f /tmp/ollama-install.sh
fi
mkdir -p /etc/systemd/system/ollama.service.d
cat > /etc/systemd/system/ollama.service.d/listen.conf <<'UNIT'
[Service]
Environment=OLLAMA_HOST=0.0.0.0:11434
UNIT
systemctl daemon-reload
systemctl enable --now ollama
