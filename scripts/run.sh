#!/usr/bin/env bash
# Set up (if needed) and run NeuroFlow in the foreground: the supervisor, the
# gateway and the example agents, with state in ./var. Safe to run again.
#
#   sudo scripts/run.sh                  # gateway on 127.0.0.1:8080
#   NEUROFLOW_PORT=9000 sudo scripts/run.sh
#
# Ctrl-C stops both processes cleanly (requests drain, cgroups are removed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${NEUROFLOW_STATE:-$ROOT/var}
LISTEN=${NEUROFLOW_LISTEN:-127.0.0.1:${NEUROFLOW_PORT:-8080}}
AGENTS=${NEUROFLOW_AGENTS:-$ROOT/examples}
SOCKET=$STATE/run/supervisor.sock

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/run.sh: run as root (the supervisor creates cgroups and namespaces): sudo $0" >&2
  exit 1
fi
"$ROOT/scripts/setup.sh"
BIN=$ROOT/.venv/bin

# The gateway drops to this unprivileged user; the socket is group-accessible to it.
if ! id neuroflow >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin neuroflow
fi

mkdir -p "$STATE/run"
pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

# Under systemd the supervisor gets a delegated scope of its own: on cgroup v2
# it may only enable controllers for a cgroup that holds no other process.
SCOPE=()
[ -d /run/systemd/system ] && SCOPE=(systemd-run --scope --quiet --collect -p Delegate=yes --unit="neuroflow-dev-$$")
"${SCOPE[@]}" "$BIN/neuroflow-supervisor" --state-dir "$STATE" --agents "$AGENTS" --socket "$SOCKET" \
  --socket-group neuroflow --instance dev 2>>"$STATE/supervisor.log" &
pids+=($!)
for _ in $(seq 1 300); do
  "$BIN/nfctl" --socket "$SOCKET" --timeout 1 status >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "supervisor failed to start; see $STATE/supervisor.log" >&2; tail -5 "$STATE/supervisor.log" >&2; exit 1; }
  sleep 0.1
done

"$BIN/neuroflow-gateway" --listen "$LISTEN" --supervisor "$SOCKET" --user neuroflow \
  --default-agent echo --route-log "$STATE/route-log.jsonl" \
  2>>"$STATE/gateway.log" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://$LISTEN/readyz" >/dev/null 2>&1 && break
  kill -0 "${pids[1]}" 2>/dev/null || { echo "gateway failed to start; see $STATE/gateway.log" >&2; tail -5 "$STATE/gateway.log" >&2; exit 1; }
  sleep 0.1
done

"$BIN/nfctl" --socket "$SOCKET" agents
cat <<MSG

NeuroFlow is running (Ctrl-C to stop).
  gateway     http://$LISTEN
  supervisor  $SOCKET   (nfctl --socket $SOCKET status)
  logs        $STATE/supervisor.log  $STATE/gateway.log

Try:
  curl -s http://$LISTEN/v1/agents/echo/invoke -d '{"input": "hello"}'
  curl -s http://$LISTEN/v1/agents/calc/invoke -d '{"input": "(2 + 3) * 7"}'
  curl -s http://$LISTEN/v1/route -d '{"query": "计算 3 加 5 乘 2"}'
MSG
wait -n "${pids[@]}"
echo "a NeuroFlow process exited; stopping" >&2
