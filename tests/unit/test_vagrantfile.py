"""`vagrant validate` on the Vagrantfile (Debian's vagrant + vagrant-libvirt, no VM started)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def vagrant(tmp_path: Path) -> dict[str, str]:
    if shutil.which("vagrant") is None:
        if os.environ.get("CI"):
            pytest.fail("vagrant is not installed: scripts/setup.sh installs it when run as root")
        pytest.skip("vagrant is not installed (scripts/setup.sh installs Debian's vagrant as root)")
    return {**os.environ, "VAGRANT_CWD": str(ROOT), "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"),
            "VAGRANT_HOME": str(tmp_path / "home"), "VAGRANT_CHECKPOINT_DISABLE": "1"}


def test_vagrantfile_validates_for_libvirt(vagrant: dict[str, str]) -> None:
    out = subprocess.run(["vagrant", "validate"], env={**vagrant, "VAGRANT_DEFAULT_PROVIDER": "libvirt"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "validated successfully" in out.stdout, out.stdout + out.stderr


def test_vagrantfile_validates_without_a_provider(vagrant: dict[str, str]) -> None:
    out = subprocess.run(["vagrant", "validate", "--ignore-provider"], env=vagrant,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "validated successfully" in out.stdout, out.stdout + out.stderr
