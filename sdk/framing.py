"""Length-prefixed frames: a 4-byte big-endian length, then that many bytes.

Both sides of a worker's pipes use this: the supervisor and the worker harness.
The decoder never trusts a length it has not checked against its limit, so a
garbage byte stream fails fast with :class:`FrameError` instead of making the
reader wait for (or allocate) gigabytes.
"""

from __future__ import annotations

import struct
from typing import Protocol

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 16 * 1024 * 1024


class FrameError(Exception):
    """A frame that cannot be accepted: over the size limit, or truncated."""


class _Message(Protocol):
    def SerializeToString(self) -> bytes: ...


def encode(message: _Message) -> bytes:
    """Serialize a protobuf message into one frame."""
    body = message.SerializeToString()
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole frames back."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every frame body completed by it, in order."""
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        size = len(buf)
        while size - pos >= 4:
            (length,) = HEADER.unpack_from(buf, pos)
            if length > self.max_frame:
                raise FrameError(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame} bytes"
                )
            end = pos + 4 + length
            if end > size:
                break
            frames.append(bytes(buf[pos + 4 : end]))
            pos = end
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buf)


def read_frame(fd: int, max_frame: int = DEFAULT_MAX_FRAME) -> bytes | None:
    """Blocking read of one frame from a file descriptor; None on clean EOF."""
    import os

    header = _read_exact(os, fd, 4)
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    if length > max_frame:
        raise FrameError(f"frame of {length} bytes exceeds the limit of {max_frame} bytes")
    body = _read_exact(os, fd, length)
    if body is None:
        raise FrameError(f"stream ended inside a frame of {length} bytes")
    return body


def _read_exact(os_mod, fd: int, n: int) -> bytes | None:  # type: ignore[no-untyped-def]
    chunks = bytearray()
    while len(chunks) < n:
        chunk = os_mod.read(fd, n - len(chunks))
        if not chunk:
            if chunks:
                raise FrameError(f"stream ended after {len(chunks)} of {n} bytes")
            return None
        chunks += chunk
    return bytes(chunks)
