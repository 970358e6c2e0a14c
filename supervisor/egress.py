"""The egress proxy: an agent's only way out of its network namespace.

One proxy per pool of an agent whose ``agent.yaml`` has a network allowlist
(none at all for the others). It listens on a Unix socket in a per-pool host
directory, bind-mounted read-only into the sandbox at ``/run/neuroflow``
(connect(2) on a socket needs write permission on the socket inode, which a
read-only mount does not take away: the kernel checks ``MS_RDONLY`` only for
regular files, directories and symlinks, see ``sb_permission`` in fs/namei.c).
The socket is ``0600`` and owned by the agent's uid; the proxy also checks the
peer's uid from ``SO_PEERCRED``.

Two request forms, HTTP/1.1:

* ``CONNECT host:port`` — a tunnel (HTTPS, or plain TCP), answered
  ``200 Connection established`` and then spliced both ways;
* an absolute-form plain-HTTP request (``GET http://host:port/path``),
  forwarded in origin form with ``Connection: close`` (one request per
  connection).

The proxy resolves names itself (``loop.getaddrinfo``); the sandbox has no DNS.
The SSRF guard: a *name* whose addresses are loopback, private, link-local,
multicast or otherwise not globally routable is refused, unless an address
entry of the allowlist names that address and port literally; addresses that
pass are tried in order. Every connection is logged as one JSON line and
counted (:meth:`EgressProxy.stats`). Refusals carry a stable code both in the
body and in an ``X-NeuroFlow-Error`` header:

=======  ======================  ==============================================
status   code                    when
=======  ======================  ==============================================
400      ``egress_bad_request``  not CONNECT nor an absolute ``http://`` URL
403      ``egress_denied``       not in the allowlist, SSRF guard, wrong peer uid
502      ``egress_failed``       DNS failure, connection refused or reset
503      ``egress_busy``         the agent has ``egress_max_connections`` open
504      ``egress_timeout``      DNS + connect took longer than the connect timeout
=======  ======================  ==============================================
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from neuroflow.sdk.http import AllowEntry, normalise_host, parse_allow_entry

log = logging.getLogger("neuroflow.egress")

_MAX_HEAD = 16 * 1024
_CHUNK = 64 * 1024
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te",
                "trailer", "upgrade"}
_REASONS = {200: "Connection established", 400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}

Resolver = Callable[[str, int], Awaitable[list[str]]]


class EgressError(Exception):
    """A refused or failed connection: an HTTP status, a stable code and a sentence."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Allowlist:
    """An agent's parsed ``network.allow`` entries."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries: tuple[AllowEntry, ...] = tuple(parse_allow_entry(e) for e in entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def allows(self, host: str, port: int) -> bool:
        """``host`` (normalised) and ``port`` match an entry."""
        return any(entry.matches(host, port) for entry in self.entries)

    def names_address(self, address: str, port: int) -> bool:
        """An address entry names exactly ``address:port`` (lifts the SSRF guard for it)."""
        return any(e.address and e.matches(address, port) for e in self.entries)


def is_public(address: str) -> bool:
    """Globally routable unicast: not loopback, private, link-local, multicast, reserved or unspecified."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's resolver (``getaddrinfo``), TCP addresses in the order it gives them."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen.setdefault(normalise_host(str(sockaddr[0])), None)
    return list(seen)


@dataclass
class _Connection:
    """What one log line says about one connection."""

    pid: int = 0
    uid: int = -1
    worker: str | None = None
    method: str = ""
    dest: str = ""
    address: str = ""
    allowed: bool = False
    code: str = ""
    reason: str = ""
    connect_ms: float | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    started: float = field(default_factory=time.monotonic)


class EgressProxy:
    """The proxy for one pool: ``await start()``, ``await close()``, ``stats()``."""

    def __init__(self, agent: str, allow: Iterable[str], socket_path: Path, *, uid: int, gid: int,
                 connect_timeout: float = 10.0, idle_timeout: float = 60.0, max_connections: int = 64,
                 peer_name: Callable[[int], str | None] = lambda pid: None,
                 on_connect: Callable[[_Connection, int, str], None] = lambda conn, started_ns, code: None,
                 resolver: Resolver = system_resolver) -> None:
        self.agent = agent
        self.allowlist = Allowlist(allow)
        self.socket_path = Path(socket_path)
        self.uid = uid
        self.gid = gid
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.peer_name = peer_name
        #: Called after each connection attempt upstream (DNS and connect) with the
        #: connection, when the attempt started (time.time_ns) and "" or the error code.
        self.on_connect = on_connect
        self.resolver = resolver
        self.counters: collections.Counter[str] = collections.Counter(
            {"connections": 0, "allowed": 0, "bytes_up": 0, "bytes_down": 0})
        self.active = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Create the socket directory and socket (owned by the agent) and listen."""
        sock = await asyncio.to_thread(self._bind)
        self._server = await asyncio.start_unix_server(self._on_client, sock=sock, limit=_MAX_HEAD)
        log.info("egress proxy listening", extra={"agent": self.agent, "socket": str(self.socket_path),
                                                  "allow": [str(e) for e in self.allowlist.entries]})

    def _bind(self) -> socket.socket:
        folder = self.socket_path.parent
        folder.mkdir(parents=True, exist_ok=True)
        # Only the agent's group may enter the folder, only its uid may use the socket.
        os.chown(folder, -1, self.gid)
        os.chmod(folder, 0o750)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            path = str(self.socket_path)
            if len(os.fsencode(path)) < 100:
                sock.bind(path)
            else:  # sun_path holds 108 bytes: bind through the folder's /proc/self/fd link instead
                dirfd = os.open(folder, os.O_PATH | os.O_DIRECTORY)
                try:
                    sock.bind(f"/proc/self/fd/{dirfd}/{self.socket_path.name}")
                finally:
                    os.close(dirfd)
            os.chown(path, self.uid, self.gid)
            os.chmod(path, 0o600)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def close(self) -> None:
        """Stop listening, cut every open connection, remove the socket and its folder."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        with contextlib.suppress(OSError):
            self.socket_path.parent.rmdir()

    def stats(self) -> dict[str, Any]:
        """Counters since start: connections, active, allowed, refusals by code, bytes each way."""
        return {"agent": self.agent, "active": self.active, **{k: v for k, v in sorted(self.counters.items())}}

    # -- one connection ----------------------------------------------------------
    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Connection()
        self.counters["connections"] += 1
        self.active += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            conn.pid, conn.uid = _peer(writer)
            conn.worker = self.peer_name(conn.pid) if conn.pid else None
            upstream = await self._serve(conn, reader, writer)
        except EgressError as exc:
            conn.code, conn.reason = exc.code, exc.message
            self.counters[exc.code] += 1
            with contextlib.suppress(OSError):
                writer.write(_reply(exc.status, exc))
                await asyncio.wait_for(writer.drain(), 5)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
            conn.code = conn.code or "egress_closed"
            conn.reason = conn.reason or f"the connection ended early ({type(exc).__name__})"
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # close() cut it: end normally, since asyncio's stream callback calls
            # task.exception(), which would raise on a cancelled task.
            conn.code, conn.reason = conn.code or "egress_closed", "the proxy was closed"
        finally:
            self.active -= 1
            self._tasks.discard(task)
            for w in (writer, upstream):
                if w is not None:
                    w.close()
            self._log(conn)

    async def _serve(self, conn: _Connection, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> asyncio.StreamWriter | None:
        if self.uid >= 0 and conn.uid != self.uid:
            raise EgressError(403, "egress_denied", f"peer uid {conn.uid} is not agent {self.agent}'s uid {self.uid}")
        try:
            async with asyncio.timeout(self.idle_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise EgressError(400, "egress_bad_request", f"request head larger than {_MAX_HEAD} bytes") from None
        method, target, version, headers = _parse_head(head)
        conn.method = method
        if method == "CONNECT":
            host, port = _split_host_port(target, None)
            forward = b""
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                raise EgressError(400, "egress_bad_request",
                                  f"expected CONNECT host:port or an absolute http:// URL, got {method} "
                                  f"{_printable(target)}")
            try:
                port = url.port or 80
            except ValueError:
                raise EgressError(400, "egress_bad_request", f"bad port in {_printable(target)}") from None
            host = normalise_host(url.hostname)
            forward = _origin_form(method, url, version, headers)
        conn.dest = _hostport(host, port)
        if self.active > self.max_connections:
            raise EgressError(503, "egress_busy", f"agent {self.agent} already has {self.max_connections} "
                                                  "connections open (egress_max_connections)")
        if not self.allowlist.allows(host, port):
            raise EgressError(403, "egress_denied",
                              f"{conn.dest} is not in agent {self.agent}'s network allowlist")
        started, started_ns = time.perf_counter(), time.time_ns()  # uvloop's loop.time() has only ms resolution
        try:
            up_reader, upstream = await self._connect(conn, host, port)
        except EgressError as exc:
            self._connected(conn, started_ns, exc.code)
            raise
        conn.connect_ms = round((time.perf_counter() - started) * 1000, 3)
        self._connected(conn, started_ns, "")
        conn.allowed = True
        self.counters["allowed"] += 1
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.write(forward)
            await self._splice(conn, reader, writer, up_reader, upstream)
        except BaseException:
            upstream.close()
            raise
        return upstream

    def _connected(self, conn: _Connection, started_ns: int, code: str) -> None:
        try:
            self.on_connect(conn, started_ns, code)
        except Exception:  # telemetry must not cost the agent its connection
            log.exception("egress on_connect hook failed", extra={"agent": self.agent})

    async def _connect(self, conn: _Connection, host: str,
                       port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.connect_timeout):
                if _is_address(host):
                    addresses = [host]
                else:
                    try:
                        resolved = await self.resolver(host, port)
                    except OSError as exc:
                        raise EgressError(502, "egress_failed",
                                          f"cannot resolve {host}: {exc.strerror or exc}") from None
                    addresses = [a for a in resolved if is_public(a) or self.allowlist.names_address(a, port)]
                    if not addresses:
                        raise EgressError(403, "egress_denied",
                                          f"{conn.dest} resolves to non-public address "
                                          f"{', '.join(resolved) or 'nothing'}, which agent {self.agent}'s "
                                          "network allowlist does not name literally")
                errors = []
                for address in addresses:
                    conn.address = address
                    try:
                        return await asyncio.open_connection(address, port, limit=_CHUNK)
                    except OSError as exc:
                        errors.append(f"{_hostport(address, port)}: {os.strerror(exc.errno) if exc.errno else exc}")
                raise EgressError(502, "egress_failed", f"cannot connect to {conn.dest} ({'; '.join(errors)})")
        except TimeoutError:
            raise EgressError(504, "egress_timeout",
                              f"no connection to {conn.dest} within {self.connect_timeout:g} s "
                              "(egress_connect_timeout)") from None

    async def _splice(self, conn: _Connection, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter,
                      u_reader: asyncio.StreamReader, u_writer: asyncio.StreamWriter) -> None:
        """Copy both ways until both sides are done or nothing moved for ``idle_timeout``."""
        loop = asyncio.get_running_loop()
        last = [loop.time()]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, counter: str) -> None:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        data = await src.read(_CHUNK)
                        if data:
                            dst.write(data)
                            await dst.drain()
                except TimeoutError:
                    if loop.time() - last[0] < self.idle_timeout:
                        continue  # the other direction is busy
                    conn.code = "egress_idle"
                    conn.reason = f"nothing moved for {self.idle_timeout:g} s (egress_idle_timeout)"
                    for w in (c_writer, u_writer):
                        w.transport.abort()
                    return
                except ConnectionError:
                    return
                if not data:
                    if dst.can_write_eof() and not dst.is_closing():
                        with contextlib.suppress(OSError):
                            dst.write_eof()
                    return
                last[0] = loop.time()
                setattr(conn, counter, getattr(conn, counter) + len(data))
                self.counters[counter] += len(data)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(pipe(c_reader, u_writer, "bytes_up"))
            tg.create_task(pipe(u_reader, c_writer, "bytes_down"))

    def _log(self, conn: _Connection) -> None:
        if not conn.allowed and not conn.code:
            return  # a peer that connected and left without a request
        extra = {
            "agent": self.agent, "worker": conn.worker, "pid": conn.pid, "method": conn.method,
            "dest": conn.dest, "address": conn.address, "allowed": conn.allowed, "code": conn.code,
            "reason": conn.reason, "connect_ms": conn.connect_ms, "bytes_up": conn.bytes_up,
            "bytes_down": conn.bytes_down, "duration_ms": round((time.monotonic() - conn.started) * 1000, 2),
        }
        log.log(logging.INFO if conn.allowed else logging.WARNING, "egress connection", extra=extra)


# -- HTTP details -----------------------------------------------------------------------


def _peer(writer: asyncio.StreamWriter) -> tuple[int, int]:
    """The connecting process's pid (as the host sees it) and uid, from SO_PEERCRED."""
    sock = writer.get_extra_info("socket")
    try:
        pid, uid, _gid = _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size))
    except (OSError, AttributeError):
        return 0, -1
    return pid, uid


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise EgressError(400, "egress_bad_request", f"not an HTTP/1.x request line: {_printable(lines[0])}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise EgressError(400, "egress_bad_request", f"bad header line: {_printable(line)}")
        headers.append((name.strip(), value.strip()))
    return parts[0].upper(), parts[1], parts[2], headers


def _split_host_port(target: str, default: int | None) -> tuple[str, int]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = target.rpartition(":") if ":" in target else (target, "", "")
    if not port_text and default is not None:
        return normalise_host(host), default
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535 or not host:
        raise EgressError(400, "egress_bad_request", f"expected CONNECT host:port, got {_printable(target)}")
    return normalise_host(host), int(port_text)


def _origin_form(method: str, url: Any, version: str, headers: list[tuple[str, str]]) -> bytes:
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    kept = [(k, v) for k, v in headers if k.lower() not in _HOP_HEADERS]
    if not any(k.lower() == "host" for k, _ in kept):
        kept.insert(0, ("Host", url.netloc.rpartition("@")[2]))
    lines = [f"{method} {path} {version}", *(f"{k}: {v}" for k, v in kept), "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _reply(status: int, exc: EgressError) -> bytes:
    text = f"{exc.code}: {exc.message}"
    body = (text + "\n").encode()
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"X-NeuroFlow-Error: {_printable(text, 1000)}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


def _printable(text: str, limit: int = 200) -> str:
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
