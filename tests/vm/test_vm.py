"""The VM tier: one boot of a fresh Debian 12 VM (cgroup v2, kprobes, systemd,
kernel headers) running tests/vm/job.sh — the privileged suites, the README's
two commands as a new user types them, and the systemd units for real.

One boot serves every check below (a boot costs ~40 s of emulation). Set
NEUROFLOW_SKIP_VM=<reason> to skip it (the job itself does, inside the VM);
under CI a VM that cannot run is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CHECKS = [
    "cgroup-v2-controllers",
    "readme-test-command",
    "readme-run-command",
    "units-active",
    "units-serve",
    "units-cgroup-delegation",
    "units-worker-limits",
    "units-stop-drains",
    "units-stop-cleans-cgroups",
    "units-crash-restart",
    "units-gateway-exposure-le-2",
]
SKIP = os.environ.get("NEUROFLOW_SKIP_VM")
pytestmark = [pytest.mark.vm, pytest.mark.skipif(bool(SKIP), reason=f"NEUROFLOW_SKIP_VM: {SKIP}")]


@pytest.fixture(scope="module")
def vm_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if os.geteuid() != 0:
        pytest.fail("the VM tier needs root (debootstrap, QEMU's 9p shares); run scripts/test.sh as root")
    log = Path(os.environ.get("NEUROFLOW_VM_LOG", tmp_path_factory.mktemp("vm") / "console.log"))
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.run(["bash", str(HERE / "run.sh"), str(HERE / "job.sh"), "4200"],
                              stdout=out, stderr=subprocess.STDOUT, timeout=4500)
    text = log.read_text(errors="replace")
    results = dict(re.findall(r"^VM-RESULT (\S+) (PASS|FAIL)", text, re.MULTILINE))
    if proc.returncode == 2 or not results:
        pytest.fail(f"the test VM could not run (exit {proc.returncode}); console log {log}:\n{text[-4000:]}")
    results["_log"] = str(log)
    results["_tail"] = text[-6000:]
    results["_wall"] = f"{time.monotonic() - started:.0f}"
    return results


@pytest.mark.timeout(4500)
@pytest.mark.parametrize("check", CHECKS)
def test_vm(vm_run: dict[str, str], check: str) -> None:
    assert vm_run.get(check) == "PASS", (
        f"VM check {check}: {vm_run.get(check, 'did not run')} (wall {vm_run['_wall']} s, "
        f"console log {vm_run['_log']}):\n{vm_run['_tail']}"
    )
