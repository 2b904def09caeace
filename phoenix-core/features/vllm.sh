#!/bin/sh
# vllm: a vLLM OpenAI-compatible server configured from vllm_engine_config (in /var/lib/phoenix/guest.json).
set -eu

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends jq python3-venv
if [ ! -x /opt/vllm/bin/vllm ]; then
    python3 -m venv /opt/vllm
    /opt/vllm/bin/pip install --quiet vllm
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
systemctl daemon-reload
systemctl enable --now vllm
