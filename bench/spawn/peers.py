"""The two peers: a cold ``bwrap`` or ``firejail`` sandbox running a tiny Python handler.

Each spawn starts the sandbox tool with the real interpreter
(``os.path.realpath(sys.executable)``: a pyenv shim would add ~60 ms, see
DESIGN.md) running :data:`HANDLER`, which reads one JSON line on stdin and
answers one JSON line on stdout. The time measured is from just before
``Popen`` to the moment the whole answer line has been read: what a pool built
on these tools pays to bring up one worker and get its first reply.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass

#: The handler both peers run: one line of JSON in, one line of JSON out (stdlib only).
HANDLER = (
    "import json, sys\n"
    "request = json.loads(sys.stdin.readline())\n"
    "sys.stdout.write(json.dumps({'id': request['id'], 'output': request['input']}) + '\\n')\n"
    "sys.stdout.flush()\n"
)

PYTHON = os.path.realpath(sys.executable)
ANSWER_TIMEOUT_S = 10.0


class PeerError(RuntimeError):
    """A peer sandbox did not answer correctly; the message has its exit status and stderr."""


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    argv_prefix: tuple[str, ...]
    package: str  # the Debian package that provides the tool

    def argv(self) -> list[str]:
        return [*self.argv_prefix, PYTHON, "-c", HANDLER]


PEERS: dict[str, Peer] = {
    "bwrap": Peer(
        "bwrap",
        ("bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev",
         "--proc", "/proc", "--tmpfs", "/tmp"),
        "bubblewrap",
    ),
    "firejail": Peer("firejail", ("firejail", "--noprofile", "--net=none", "--quiet"), "firejail"),
}


def _read_line(fd: int, deadline: float) -> bytes:
    """Read from ``fd`` until a newline or EOF, giving up at ``deadline`` (perf_counter)."""
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.perf_counter()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def spawn_once(peer: Peer, seq: int) -> float:
    """Start one sandbox, send it one request, return ms until its answer arrived."""
    request = json.dumps({"id": seq, "input": f"spawn-{seq}"}).encode() + b"\n"
    started = time.perf_counter()
    proc = subprocess.Popen(peer.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(request)
        proc.stdin.flush()
        try:
            line = _read_line(proc.stdout.fileno(), started + ANSWER_TIMEOUT_S)
        except TimeoutError:
            raise PeerError(f"{peer.name}: no answer within {ANSWER_TIMEOUT_S:g} s") from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        proc.stdin.close()
        code = proc.wait(ANSWER_TIMEOUT_S)
        err = proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if code != 0 or reply != {"id": seq, "output": f"spawn-{seq}"}:
        raise PeerError(f"{peer.name}: exit status {code}, answer {line[:200]!r}, stderr: {err.strip()[-500:]}")
    return elapsed_ms
