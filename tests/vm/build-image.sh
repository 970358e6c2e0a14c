#!/usr/bin/env bash
# Build the test VM's Debian 12 image from Debian's packages alone.
#
#   tests/vm/build-image.sh OUT_DIR
#
# Writes OUT_DIR/{rootfs.qcow2,vmlinuz,initrd.img}. The harness (tests/vm/run.sh)
# caches OUT_DIR keyed by a hash of this file, so any change here rebuilds.
# The image is what a fresh host has (kernel with matching headers, systemd,
# python3, BCC) and nothing of NeuroFlow: the README's commands install the rest.
set -euo pipefail

OUT=${1:?usage: build-image.sh OUT_DIR}
MIRROR=${NEUROFLOW_VM_MIRROR:-http://deb.debian.org/debian}
SIZE=${NEUROFLOW_VM_DISK:-8G}
PACKAGES=(
  systemd-sysv dbus udev linux-image-amd64 linux-headers-amd64 initramfs-tools
  python3 python3-bpfcc ca-certificates curl sudo iproute2 procps kmod less
  e2fsprogs
)

work=$(mktemp -d /var/tmp/neuroflow-vm-build.XXXXXX)
cleanup() {
  for m in proc sys dev; do umount -l "$work/root/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
root=$work/root

echo "[build-image] debootstrap bookworm from $MIRROR" >&2
debootstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -30 "$work/debootstrap.log" >&2; exit 1; }

cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
echo neuroflow-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost neuroflow-vm\n::1 localhost\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$root/etc/fstab"
# QEMU's user-mode network: DHCP on the virtio NIC, DNS at 10.0.2.3.
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en*\n[Network]\nDHCP=ipv4\n' >"$root/etc/systemd/network/10-qemu.network"
printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"
chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
chroot "$root" systemctl mask getty@tty1.service serial-getty@ttyS0.service >/dev/null 2>&1
chroot "$root" passwd -d root >/dev/null
# 9p for the shared checkout, loaded at boot.
printf '9p\n9pnet_virtio\n' >"$root/etc/modules-load.d/9p.conf"

# The test runner: mounts the shares, runs the script the host put there, powers off.
install -m 0755 /dev/stdin "$root/usr/local/sbin/neuroflow-vm-run" <<'RUNNER'
#!/bin/bash
mkdir -p /mnt/src /mnt/out
mount -t 9p -o trans=virtio,version=9p2000.L,ro src /mnt/src
mount -t 9p -o trans=virtio,version=9p2000.L out /mnt/out
echo "NEUROFLOW-VM booted in $(cut -d' ' -f1 /proc/uptime) s" >/dev/ttyS0
bash /mnt/out/job.sh >/dev/ttyS0 2>&1
echo $? >/mnt/out/exit-code
sync
systemctl poweroff --no-block
RUNNER
cat >"$root/etc/systemd/system/neuroflow-vm-run.service" <<'UNIT'
[Unit]
Description=Run the NeuroFlow VM test job
After=network-online.target systemd-networkd-wait-online.service
Wants=network-online.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/neuroflow-vm-run
StandardOutput=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable neuroflow-vm-run.service systemd-networkd-wait-online.service >/dev/null 2>&1

kver=$(basename "$(ls -d "$root"/lib/modules/* | head -1)")
mkdir -p "$OUT"
cp "$root/boot/vmlinuz-$kver" "$OUT/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$OUT/initrd.img"
chmod 0644 "$OUT/vmlinuz" "$OUT/initrd.img"
rm -rf "$root/var/cache/apt/archives"/*.deb
echo "[build-image] making the ext4 image ($SIZE, kernel $kver)" >&2
truncate -s "$SIZE" "$work/rootfs.raw"
mkfs.ext4 -q -F -L root -d "$root" "$work/rootfs.raw"
qemu-img convert -O qcow2 "$work/rootfs.raw" "$OUT/rootfs.qcow2"
echo "$kver" >"$OUT/kernel-version"
echo "[build-image] done: $OUT" >&2
