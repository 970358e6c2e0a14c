#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, unit, and the
# privileged tiers (integration, security) that need root and real kernel
# features. Safe to run again. Extra arguments go to pytest.
#
#   sudo scripts/test.sh
#   sudo scripts/test.sh -k oom
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
"$ROOT/scripts/setup.sh"
PY=$ROOT/.venv/bin/python

if [ "$(id -u)" -ne 0 ] && [ -z "${NEUROFLOW_UNPRIVILEGED_OK:-}" ]; then
  echo "scripts/test.sh: the integration and security tiers need root (namespaces, cgroups)." >&2
  echo "Run: sudo $0   (or set NEUROFLOW_UNPRIVILEGED_OK=1 to run only what works unprivileged)" >&2
  exit 1
fi

echo "== lint"
"$PY" -m ruff check .
echo "== protocol code is current"
"$PY" proto/generate.py --check
echo "== tests"
exec "$PY" -m pytest "$@"
