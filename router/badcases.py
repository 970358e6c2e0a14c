"""The bad-case log: one JSON line per low-confidence decision, for later tuning.

Each line: ``{"ts", "query", "chosen", "confidence", "threshold", "model",
"candidates": [{"agent", "score"}, ...]}`` (``ts`` in ISO 8601, UTC).
Lines are appended with a single ``write(2)`` on an ``O_APPEND`` descriptor,
so several threads or processes can share one file without interleaving.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neuroflow.router.errors import RouterError

_TAIL_BLOCK = 64 * 1024


class BadCaseLog:
    """Appends records to a JSONL file, opened once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise RouterError(f"bad-case log {self.path}: {exc.strerror}") from exc
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        """Write one record; a failing write is dropped (routing must not fail because of its log)."""
        line = json.dumps({"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), **record},
                          ensure_ascii=False) + "\n"
        with self._lock:
            if self._fd < 0:
                return
            with contextlib.suppress(OSError):
                os.write(self._fd, line.encode("utf-8"))

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_bad_cases(path: Path, limit: int = 50) -> list[dict[str, Any]]:
    """The last ``limit`` records of a bad-case log, oldest first (for ``nfctl route-log``).

    A missing file gives ``[]``; lines that are not JSON objects (a torn last
    line, manual edits) are skipped. Reads only the end of a large file.
    """
    if limit <= 0:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            data = b""
            pos = end
            while pos > 0 and data.count(b"\n") <= limit:
                step = min(_TAIL_BLOCK, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RouterError(f"bad-case log {path}: {exc.strerror}") from exc
    lines = data.split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first line may be cut
    out: list[dict[str, Any]] = []
    for raw in lines:
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out[-limit:]
