"""Syscall numbers to names, from the uapi ``unistd`` header of this architecture."""

from __future__ import annotations

import platform
import re
from functools import cache
from pathlib import Path

_UNISTD = {"x86_64": "x86_64-linux-gnu/asm/unistd_64.h", "aarch64": "asm-generic/unistd.h"}
_DEFINE = re.compile(r"^#define\s+__NR_(\w+)\s+(\d+)\s*$", re.MULTILINE)


def parse_unistd(text: str) -> dict[int, str]:
    """``#define __NR_read 0`` lines → ``{0: "read"}`` (later duplicates lose)."""
    table: dict[int, str] = {}
    for name, number in _DEFINE.findall(text):
        if name == "syscalls":  # __NR_syscalls is a count, not a call
            continue
        table.setdefault(int(number), name)
    return table


@cache
def syscall_table(machine: str | None = None, uapi_root: Path = Path("/usr/include")) -> dict[int, str]:
    """This host's syscall table; empty if the header is missing (names fall back to ``sys_<nr>``)."""
    rel = _UNISTD.get(machine or platform.machine())
    path = uapi_root / rel if rel else None
    if path is None or not path.is_file():
        return {}
    return parse_unistd(path.read_text())


def syscall_name(nr: int, table: dict[int, str] | None = None) -> str:
    table = syscall_table() if table is None else table
    return table.get(nr, f"sys_{nr}")
