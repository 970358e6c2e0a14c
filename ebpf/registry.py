"""Which worker is which: agent indices for the kernel maps and the live workers' pids and cgroup ids.

Agent indices are handed out once per daemon lifetime and never reused, so the
cumulative counters in the kernel maps never mix two agents.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Worker:
    agent: str
    version: str
    worker_id: str
    pid: int
    cgroup_id: int


class Registry:
    """Agents by index and the workers being watched."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self.workers: dict[tuple[str, str], Worker] = {}  # (agent, worker id) -> worker

    def index(self, agent: str) -> int:
        if agent not in self._index:
            self._index[agent] = len(self.names)
            self.names.append(agent)
        return self._index[agent]

    def name(self, index: int) -> str:
        return self.names[index] if 0 <= index < len(self.names) else f"agent#{index}"

    def add(self, worker: Worker) -> Worker | None:
        """Record a worker; return the one it replaces under the same key, if any."""
        self.index(worker.agent)
        key = (worker.agent, worker.worker_id)
        old = self.workers.get(key)
        self.workers[key] = worker
        return old

    def remove(self, agent: str, worker_id: str) -> Worker | None:
        return self.workers.pop((agent, worker_id), None)

    def clear(self) -> list[Worker]:
        gone = list(self.workers.values())
        self.workers.clear()
        return gone

    def usage(self, agent: str, proc: Path = Path("/proc")) -> tuple[float, int, int]:
        """(CPU seconds, resident bytes, live workers) of an agent's workers, from /proc."""
        cpu, rss, alive = 0.0, 0, 0
        for worker in self.workers.values():
            if worker.agent != agent:
                continue
            try:
                stat = (proc / str(worker.pid) / "stat").read_text()
                statm = (proc / str(worker.pid) / "statm").read_text().split()
            except OSError:  # the worker just exited
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            cpu += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
            rss += int(statm[1]) * PAGE
            alive += 1
        return cpu, rss, alive
