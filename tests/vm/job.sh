#!/bin/bash
# Runs as root inside the test VM (see run.sh): a fresh Debian 12 host with
# unified cgroup v2, kprobes, systemd and kernel headers. Each check prints
# "VM-RESULT <name> PASS|FAIL"; the exit status is the number of failures.
set -u
export DEBIAN_FRONTEND=noninteractive
[ -f /mnt/out/host-ca.crt ] && export PIP_CERT=/mnt/out/host-ca.crt
failures=0
result() {  # result NAME STATUS [DETAIL]
  if [ "$2" = 0 ]; then echo "VM-RESULT $1 PASS ${3:-}"; else echo "VM-RESULT $1 FAIL ${3:-}"; failures=$((failures + 1)); fi
}
t0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - t0 ))s"; }

echo "=== host facts"
uname -r
echo "cgroup v2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
[ -f /sys/kernel/tracing/kprobe_events ] && echo "kprobes: available" || echo "kprobes: missing"
ls -d "/lib/modules/$(uname -r)/build" >/dev/null 2>&1 && echo "kernel headers: present"
grep -q "memory" /sys/fs/cgroup/cgroup.controllers; result cgroup-v2-controllers $?

# A fresh copy of the checkout, as a new user would have it.
mkdir -p /root/neuroflow
tar -C /mnt/src -cf - -T /mnt/out/files.txt | tar -C /root/neuroflow -xf -
cd /root/neuroflow

echo "=== README command 2: the test suite ($(elapsed))"
# The host runs the whole suite. Here, the README's test command runs the tiers
# this kind of host changes: cgroup v2 limits, kills and clean-up, the sandbox,
# sandbox events and WatchWorkers' cgroup ids, start/stop, and the eBPF probes
# on an older kernel's tracepoints (6.1's differ). Under software emulation one
# integration test takes ~15 s, so the whole suite (and the pure-computation "model" tests) would not
# fit CI's budget; the rest runs the same code paths on the host.
NEUROFLOW_SKIP_VM="inside the VM tier already" CI=true scripts/test.sh -p no:cacheprovider -m "not model" \
  tests/integration/test_end_to_end.py tests/integration/test_failures.py tests/integration/test_lifecycle.py \
  tests/integration/test_events.py tests/integration/test_ebpf.py tests/security/test_sandbox.py 2>&1 \
  | grep -v -e '^  ' -e '^!!' -e 'BuildBackendWarning' -e 'check.warn'
result readme-test-command "${PIPESTATUS[0]}" "($(elapsed))"

echo "=== README command 1: run the service ($(elapsed))"
scripts/run.sh > >(sed -u 's/^/[run.sh] /') 2>&1 &
runpid=$!
ok=1
for _ in $(seq 1 600); do
  curl -fsS -m 10 localhost:8080/readyz >/dev/null 2>&1 && { ok=0; break; }
  kill -0 $runpid 2>/dev/null || break
  sleep 0.5
done
out=$(curl -fsS localhost:8080/v1/agents/echo/invoke -d '{"input": "hello from the VM"}' || true)
echo "$out"
echo "$out" | grep -q '"output":"hello from the VM"' || ok=1
backend=$(.venv/bin/nfctl --socket var/run/supervisor.sock --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["cgroup"]["backend"])')
echo "cgroup backend: $backend"
[ "$backend" = v2 ] || ok=1
kill -TERM $runpid; wait $runpid  # (background jobs ignore SIGINT)
result readme-run-command $ok "(backend $backend, $(elapsed))"
[ $ok = 0 ] || tail -20 var/supervisor.log var/gateway.log

echo "=== systemd units ($(elapsed))"
scripts/install.sh
for _ in $(seq 1 600); do curl -fsS -m 10 localhost:8080/readyz >/dev/null 2>&1 && break; sleep 0.5; done
systemctl is-active neuroflow-supervisor.service neuroflow-gateway.service
systemctl is-active --quiet neuroflow-supervisor.service && systemctl is-active --quiet neuroflow-gateway.service
result units-active $?
curl -fsS -m 30 localhost:8080/v1/agents/calc/invoke -d '{"input": "6*7"}' | grep -q '"result": 42'
result units-serve $? || true
curl -sS -m 30 localhost:8080/readyz; echo
journalctl -u neuroflow-gateway -n 8 --no-pager

svc=/sys/fs/cgroup/system.slice/neuroflow-supervisor.service
echo "subtree_control: $(cat $svc/cgroup.subtree_control)"
ls $svc $svc/neuroflow.default 2>/dev/null | head -20
grep -q memory $svc/cgroup.subtree_control && [ -n "$(ls -d $svc/neuroflow.default/echo.*/w* 2>/dev/null)" ] \
  && grep -q "$(systemctl show -p MainPID --value neuroflow-supervisor)" $svc/supervisor/cgroup.procs
result units-cgroup-delegation $?
w=$(ls -d $svc/neuroflow.default/echo.*/w1 | head -1)
echo "worker leaf $w: memory.max=$(cat $w/memory.max) cpu.max=$(cat $w/cpu.max) pids.max=$(cat $w/pids.max)"
[ "$(cat $w/memory.max)" = $((128 * 1024 * 1024)) ]
result units-worker-limits $?

# systemctl stop drains: a slow request started before the stop still succeeds.
mkdir -p /etc/neuroflow/agents/slow
cat >/etc/neuroflow/agents/slow/agent.yaml <<'YAML'
name: slow
version: "1.0"
entry: agent:Slow
YAML
cat >/etc/neuroflow/agents/slow/agent.py <<'PY'
import asyncio
from neuroflow.sdk import Agent, Response
class Slow(Agent):
    async def handle(self, request, context):
        await asyncio.sleep(float(request.input))
        return Response(output="finished")
PY
systemctl restart neuroflow.target
# Wait for the slow agent, and for neuroflow-ebpf to have compiled its probes: under emulation
# that takes LLVM ~20 s of both CPUs, and a request sent meanwhile may not even be read before
# the stop below (curl then saw an empty reply; this check is about draining, not about load).
for _ in $(seq 1 600); do
  curl -fsS -m 10 localhost:8080/readyz 2>/dev/null | grep -q slow \
    && curl -fsS -m 10 localhost:9466/healthz >/dev/null 2>&1 && break
  sleep 0.5
done
curl -sS -m 60 localhost:8080/v1/agents/slow/invoke -d '{"input": 3}' >/tmp/slow.out 2>&1 &
curlpid=$!
sleep 1
systemctl stop neuroflow-supervisor.service
wait $curlpid
cat /tmp/slow.out; echo
grep -q '"output":"finished"' /tmp/slow.out
ok=$?
[ $ok = 0 ] || journalctl -u neuroflow-gateway -u neuroflow-supervisor -n 30 --no-pager
result units-stop-drains $ok
[ -z "$(ls -d $svc/neuroflow.default 2>/dev/null)" ]
result units-stop-cleans-cgroups $?

# Crash -> restart.
systemctl start neuroflow.target
for _ in $(seq 1 600); do curl -fsS -m 10 localhost:8080/readyz >/dev/null 2>&1 && break; sleep 0.5; done
before=$(systemctl show -p MainPID --value neuroflow-supervisor)
kill -9 "$before"
ok=1
for _ in $(seq 1 600); do
  now=$(systemctl show -p MainPID --value neuroflow-supervisor)
  if [ "$now" != 0 ] && [ "$now" != "$before" ] && curl -fsS localhost:8080/v1/agents/echo/invoke -d '{"input": 1}' >/dev/null 2>&1; then ok=0; break; fi
  sleep 0.5
done
result units-crash-restart $ok "(pid $before -> $(systemctl show -p MainPID --value neuroflow-supervisor), restarts $(systemctl show -p NRestarts --value neuroflow-supervisor))"
journalctl -u neuroflow-supervisor -n 5 --no-pager

for unit in neuroflow-gateway neuroflow-supervisor; do
  score=$(systemd-analyze security "$unit.service" 2>/dev/null | tail -1)
  echo "$unit: $score"
done
systemd-analyze security neuroflow-gateway.service | tail -1 | grep -qE "level for neuroflow-gateway.service: (0|1|2\.0)"
result units-gateway-exposure-le-2 $?
systemctl stop neuroflow.target

echo "=== $failures failures ($(elapsed))"
exit $failures
