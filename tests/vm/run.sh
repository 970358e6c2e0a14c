#!/usr/bin/env bash
# Boot the test VM once and run a job script inside it.
#
#   tests/vm/run.sh JOB.sh [TIMEOUT_SECONDS]
#
# The image (tests/vm/build-image.sh) is cached outside the repository in
# $NEUROFLOW_VM_CACHE (default /var/cache/neuroflow-vm), keyed by a hash of
# the build script. Each run boots a throw-away copy-on-write overlay of it,
# shares this checkout read-only (9p tag "src", mounted at /mnt/src) and a
# fresh output folder read-write (tag "out", /mnt/out, where JOB.sh is
# copied as job.sh). The guest runs job.sh as root on boot, writes its exit
# status to /mnt/out/exit-code and powers off; its console is printed here.
# Networking is QEMU's user mode: the guest reaches what this host reaches.
# KVM is used when it can boot the guest's kernel; otherwise software
# emulation (TCG), which is what the development VMs need (DESIGN.md).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
JOB=${1:?usage: run.sh JOB.sh [TIMEOUT_SECONDS]}
TIMEOUT=${2:-3600}
CACHE=${NEUROFLOW_VM_CACHE:-/var/cache/neuroflow-vm}
log() { printf '\033[1m[vm]\033[0m %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "needs root (debootstrap, 9p shares)"; exit 2; }
need=()
for pkg in qemu-system-x86 qemu-utils debootstrap e2fsprogs; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi
command -v qemu-system-x86_64 >/dev/null || { log "FAIL: qemu-system-x86_64 is not available"; exit 2; }

key=$(sha256sum "$HERE/build-image.sh" | cut -c1-16)
image=$CACHE/$key
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ ! -f "$image/rootfs.qcow2" ]; then
  log "building the image (cache $image)"
  started=$(date +%s)
  rm -rf "$image.tmp"
  "$HERE/build-image.sh" "$image.tmp"
  mv "$image.tmp" "$image"
  echo "$(( $(date +%s) - started ))" >"$image/build-seconds"
  log "image built in $(cat "$image/build-seconds") s"
  # Keep only this image: older ones are for older build scripts.
  find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
fi
flock -u 9

run=$(mktemp -d /var/tmp/neuroflow-vm-run.XXXXXX)
trap 'rm -rf "$run"' EXIT
mkdir "$run/out"
install -m 0755 "$JOB" "$run/out/job.sh"
# What a fresh clone would hold: the tracked files (as they are in this tree).
git -C "$ROOT" ls-files >"$run/out/files.txt" 2>/dev/null || (cd "$ROOT" && find . -type f ! -path './.git/*' ! -path './.venv/*' ! -path './var/*') >"$run/out/files.txt"
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$run/out/host-ca.crt"
qemu-img create -q -f qcow2 -b "$image/rootfs.qcow2" -F qcow2 "$run/overlay.qcow2"

accel=tcg
cpu=max
if [ -w /dev/kvm ] && [ -z "${NEUROFLOW_VM_NO_KVM:-}" ]; then
  # Probe once per image: does KVM get the guest's kernel as far as its panic
  # for a missing root (a few seconds), or not at all?
  if [ ! -f "$image/kvm-ok" ] && [ ! -f "$image/kvm-no" ]; then
    if (timeout 60 qemu-system-x86_64 -accel kvm -cpu host -m 512 -kernel "$image/vmlinuz" \
        -append "console=ttyS0 panic=-1 root=/dev/nonexistent" -no-reboot -display none \
        -serial "file:$run/kvm-probe.log" -monitor none) >/dev/null 2>&1 \
        && grep -q "Kernel panic" "$run/kvm-probe.log"; then
      touch "$image/kvm-ok"
    else
      touch "$image/kvm-no"
    fi
  fi
  [ -f "$image/kvm-ok" ] && { accel=kvm; cpu=host; }
fi
log "booting ($accel) with job $(basename "$JOB"), timeout ${TIMEOUT}s"

started=$(date +%s)
set +e
timeout --foreground "$TIMEOUT" qemu-system-x86_64 \
  -machine q35 -accel "$accel" -cpu "$cpu" -smp 2 -m "${NEUROFLOW_VM_MEMORY:-4096}" \
  -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 quiet" \
  -drive "file=$run/overlay.qcow2,if=virtio,format=qcow2" \
  -virtfs "local,path=$ROOT,mount_tag=src,security_model=none,readonly=on" \
  -virtfs "local,path=$run/out,mount_tag=out,security_model=passthrough" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
  -display none -serial stdio -monitor none -no-reboot </dev/null
qemu_rc=$?
set -e
log "VM ran $(( $(date +%s) - started )) s (qemu exit $qemu_rc)"
[ $qemu_rc -eq 124 ] && { log "FAIL: the VM did not finish within ${TIMEOUT}s"; exit 1; }
[ -f "$run/out/exit-code" ] || { log "FAIL: the job did not report an exit status"; exit 1; }
exit "$(cat "$run/out/exit-code")"
