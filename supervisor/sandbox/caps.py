"""Privileges: become the agent's unprivileged uid with no capabilities at all.

Order matters: the bounding set can only be dropped while CAP_SETPCAP is held
(before setuid), and the parent-death signal is cleared by the kernel on every
credential change, so it is set again afterwards (see prctl(2), PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

import prctl

_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


def drop_privileges(uid: int, gid: int) -> None:
    """Drop every capability, then switch to ``uid``/``gid`` with no groups."""
    if uid == 0 or gid == 0:
        raise ValueError("a sandbox must never run as uid or gid 0")
    libc = ctypes.CDLL(None, use_errno=True)
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last_cap + 1):  # includes caps newer than python-prctl knows
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_CAPBSET_DROP, {cap}): {os.strerror(err)}")
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # without keepcaps this clears permitted/effective
    prctl.set_no_new_privs(True)
    prctl.set_pdeathsig(signal.SIGKILL)
    check_unprivileged(uid)


def check_unprivileged(uid: int) -> None:
    """Refuse to go on unless the kernel agrees we hold nothing."""
    lines = Path("/proc/self/status").read_text().splitlines()
    status = dict(line.split(":", 1) for line in lines if ":" in line)
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        if int(status.get(field, "0").strip(), 16) != 0:
            raise RuntimeError(f"{field} is {status[field].strip()} after dropping privileges")
    if status.get("NoNewPrivs", "1").strip() != "1":
        raise RuntimeError("no_new_privs is not set")
    if os.getresuid() != (uid, uid, uid):
        raise RuntimeError(f"uids are {os.getresuid()} after setresuid({uid})")
