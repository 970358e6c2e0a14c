"""What the kernel maps hold at one moment, as plain data (no BCC types): rendered by
``metrics.py``, summarised per agent for ``/status`` and ``nfctl top``.

Histograms are log2: slot ``s`` counts values in ``[2**s, 2**(s + 1))``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

AF_INET = 2


@dataclass(frozen=True)
class Dest:
    """A TCP destination as the kernel saw it."""

    family: int
    addr: bytes
    port: int

    def __str__(self) -> str:
        if self.family == AF_INET:
            return f"{ipaddress.IPv4Address(self.addr[:4])}:{self.port}"
        return f"[{ipaddress.IPv6Address(self.addr[:16])}]:{self.port}"


@dataclass
class Hist:
    """A log2 histogram with its sum (in the unit of the values)."""

    slots: dict[int, int] = field(default_factory=dict)
    total: int = 0

    @property
    def count(self) -> int:
        return sum(self.slots.values())

    def add(self, slot: int, n: int) -> None:
        self.slots[slot] = self.slots.get(slot, 0) + n

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (``None`` when empty)."""
        count = self.count
        if not count:
            return None
        rank, seen = q * count, 0
        for slot in sorted(self.slots):
            seen += self.slots[slot]
            if seen >= rank:
                return float(2 ** (slot + 1))
        return float(2 ** (max(self.slots) + 1))

    def minus(self, older: Hist | None) -> Hist:
        if older is None:
            return Hist(dict(self.slots), self.total)
        slots = {s: n - older.slots.get(s, 0) for s, n in self.slots.items() if n - older.slots.get(s, 0) > 0}
        return Hist(slots, self.total - older.total)


@dataclass
class Snapshot:
    """Cumulative counters read from every probe's maps (agent = index into the registry)."""

    ts: float = 0.0
    syscalls: dict[tuple[int, int], int] = field(default_factory=dict)         # (agent, nr) -> count
    syscall_latency: dict[tuple[int, int], Hist] = field(default_factory=dict)  # ns
    connect: dict[tuple[int, Dest], Hist] = field(default_factory=dict)         # ns
    connect_failed: dict[tuple[int, Dest], int] = field(default_factory=dict)
    srtt: dict[tuple[int, Dest], Hist] = field(default_factory=dict)            # us
    proc: dict[tuple[int, str], int] = field(default_factory=dict)              # (agent, fork|exec|exit)
    lost: dict[str, int] = field(default_factory=dict)                          # probe -> count
    map_full: dict[str, int] = field(default_factory=dict)
    run_ns: dict[str, int] = field(default_factory=dict)                        # probe -> kernel run time
    run_cnt: dict[str, int] = field(default_factory=dict)

    def agent_syscalls(self, agent: int) -> int:
        return sum(n for (a, _), n in self.syscalls.items() if a == agent)

    def agent_connects(self, agent: int) -> Hist:
        merged = Hist()
        for (a, _), hist in self.connect.items():
            if a == agent:
                for slot, n in hist.slots.items():
                    merged.add(slot, n)
                merged.total += hist.total
        return merged
