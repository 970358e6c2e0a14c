#!/usr/bin/env bash
# Install NeuroFlow on this host as systemd services; safe to run again.
#
#   sudo scripts/install.sh              # install and start neuroflow.target
#   sudo scripts/install.sh --no-start   # install only
#
# Code:    /opt/neuroflow/venv (a virtualenv with NeuroFlow and its dependencies)
# Config:  /etc/neuroflow/supervisor.yaml, agents in /etc/neuroflow/agents/
# State:   /var/lib/neuroflow (releases, sandbox roots), socket /run/neuroflow/
# Units:   /etc/systemd/system/neuroflow{.target,-supervisor,-gateway,-ebpf}.service
# Logs:    journalctl -u neuroflow-supervisor -u neuroflow-gateway
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/opt/neuroflow
START=1
[ "${1:-}" = "--no-start" ] && START=0
[ "$(id -u)" -eq 0 ] || { echo "scripts/install.sh: run as root: sudo $0" >&2; exit 1; }
log() { printf '\033[1m[install]\033[0m %s\n' "$*" >&2; }

NEUROFLOW_DEBS_ONLY=runtime "$ROOT/scripts/setup.sh"

log "virtualenv $PREFIX/venv"
mkdir -p "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || /usr/bin/python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install -q --upgrade pip
"$PREFIX/venv/bin/python" -m pip install -q --upgrade "$ROOT"
install -m 0644 "$ROOT/README.md" "$PREFIX/README.md"
log "routing model into $PREFIX/venv/share/neuroflow/models"
"$PREFIX/venv/bin/python" -m neuroflow.router.e5export "$PREFIX/venv/share/neuroflow/models" >/dev/null

log "users, folders and units"
install -D -m 0644 "$ROOT/systemd/neuroflow.sysusers" /etc/sysusers.d/neuroflow.conf
install -D -m 0644 "$ROOT/systemd/neuroflow.tmpfiles" /etc/tmpfiles.d/neuroflow.conf
systemd-sysusers /etc/sysusers.d/neuroflow.conf
systemd-tmpfiles --create /etc/tmpfiles.d/neuroflow.conf
for unit in neuroflow.target neuroflow-supervisor.service neuroflow-gateway.service neuroflow-ebpf.service; do
  install -m 0644 "$ROOT/systemd/$unit" "/etc/systemd/system/$unit"
done
[ -f /etc/neuroflow/supervisor.yaml ] || install -m 0644 "$ROOT/deploy/supervisor.yaml" /etc/neuroflow/supervisor.yaml
if [ -z "$(ls -A /etc/neuroflow/agents)" ]; then
  log "example agents into /etc/neuroflow/agents"
  cp -r "$ROOT/examples/." /etc/neuroflow/agents/
fi
systemctl daemon-reload
systemctl enable neuroflow.target neuroflow-supervisor.service neuroflow-gateway.service neuroflow-ebpf.service >/dev/null 2>&1
if [ "$START" = 1 ]; then
  systemctl restart neuroflow.target
  log "started: systemctl status neuroflow.target; curl -s localhost:8080/readyz"
fi
