"""rlimits: a per-process backstop behind the cgroup limits.

Hard limits can only be lowered (this VM lacks CAP_SYS_RESOURCE to raise
them), so every value is clamped to the current hard limit.
"""

from __future__ import annotations

import resource

#: Fixed for every sandbox: no core dumps (they could leak request data).
BASE_LIMITS = {
    resource.RLIMIT_CORE: 0,
    resource.RLIMIT_NOFILE: 1024,
    resource.RLIMIT_FSIZE: 64 * 1024 * 1024,
}


def _lower(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def address_space_for(memory: int | None) -> int:
    """RLIMIT_AS behind a memory limit: virtual size runs well above resident
    size (thread stacks, malloc arenas, mapped libraries), so leave room and
    let the cgroup do the precise accounting."""
    return max(4 * memory, memory + (1 << 30)) if memory else 0


def apply_base(address_space: int = 0) -> None:
    for which, value in BASE_LIMITS.items():
        _lower(which, value)
    if address_space:
        _lower(resource.RLIMIT_AS, address_space)


def apply_cpu_seconds(seconds: int | None) -> None:
    """CPU time for one worker's lifetime: SIGXCPU at the soft limit, SIGKILL 1 s later."""
    if not seconds:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    new_hard = seconds + 1 if hard == resource.RLIM_INFINITY else min(seconds + 1, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (min(seconds, new_hard), new_hard))
