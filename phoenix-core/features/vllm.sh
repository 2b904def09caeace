#!/bin/sh
# vllm: a vLLM OpenAI-compatible server configured from vllm_engine_config (in /var/lib/phoenix/guest.json).
#
# vLLM is installed from PyPI into /opt/vllm; PHOENIX_VLLM_PACKAGE replaces what pip installs (a pinned
# requirement such as `vllm==0.8.5`, or a local wheel for tests: any wheel that provides a `vllm` command).
# On a node with systemd the service is started; without systemd running it is enabled for the next boot
# only, and the script says so.
set -eu

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends jq python3-venv
if [ ! -x /opt/vllm/bin/vllm ]; then
    python3 -m venv /opt/vllm
    /opt/vllm/bin/pip install --quiet "${PHOENIX_VLLM_PACKAGE:-vllm}"
fi
config=/var/lib/phoenix/guest.json
model="$(jq -r '.vllm_engine_config.ModelConfig.model // empty' "${config}")"
if [ -z "${model}" ]; then
    echo "vllm_engine_config.ModelConfig.model is not set" >&2
    exit 1
fi
port="$(jq -r '.vllm_engine_config.ServerConfig.port // 8000' "${config}")"
cat > /etc/systemd/system/vllm.service <<UNIT
[Unit]
Description=vLLM server for ${model}
After=network-online.target

[Service]
ExecStart=/opt/vllm/bin/vllm serve ${model} --host 0.0.0.0 --port ${port}
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now vllm
else
    systemctl enable vllm
    echo "no systemd running here: vllm.service is enabled for the next boot, not started"
fi
