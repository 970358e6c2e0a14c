"""Network egress for agents: the allowlist grammar and ``context.http``.

A worker has no network (its namespace holds only ``lo`` and seccomp refuses
every socket family but ``AF_UNIX``). The supervisor runs an egress proxy for
each agent whose ``agent.yaml`` has a network allowlist and mounts its Unix
socket into the sandbox at :data:`SANDBOX_SOCKET`. ``context.http`` is an
``httpx.AsyncClient`` whose every connection is a ``CONNECT host:port`` tunnel
through that socket, so plain HTTP, TLS and HTTP/1.1 work unchanged on top and
the worker never resolves a name itself.

The allowlist grammar (``network: [...]`` or ``network: {allow: [...]}``):

==========================  =================================================
``example.com``             that host, ports 80 and 443
``example.com:8443``        that host, that port only
``*.example.com``           any subdomain (``a.example.com``, ``a.b.example.com``),
                            not ``example.com`` itself; ports 80 and 443
``*.example.com:8443``      any subdomain, that port
``127.0.0.1:8080``          that IPv4 address, that port (a port is required)
``[::1]:8080``              that IPv6 address, that port
==========================  =================================================

Host names are matched case-insensitively, a trailing dot ignored. A name is
never matched by an address entry or the other way round. A *name* that
resolves to a loopback, private, link-local or otherwise non-public address is
refused (an SSRF guard), unless an address entry names that address and port
literally.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # httpx is imported lazily: idle workers never pay for it
    import httpx

#: Where the proxy's socket appears inside the sandbox.
SANDBOX_SOCKET = "/run/neuroflow/egress.sock"
#: Ports a host entry without an explicit port allows.
DEFAULT_PORTS = (80, 443)

_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_MAX_HEAD = 16 * 1024


class AllowEntryError(ValueError):
    """An allowlist entry that does not follow the grammar above."""


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """One parsed allowlist entry."""

    #: The host name (lower case, no trailing dot, without ``*.``) or the address in canonical form.
    host: str
    #: Ports this entry allows.
    ports: tuple[int, ...]
    #: ``*.host``: subdomains of ``host`` only.
    wildcard: bool = False
    #: ``host`` is an IP address literal.
    address: bool = False

    def matches(self, host: str, port: int) -> bool:
        """Does ``host:port`` (host already normalised by :func:`normalise_host`) fall under this entry?"""
        if port not in self.ports:
            return False
        if self.address:
            return host == self.host
        if _is_address(host):
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.address and ":" in self.host else self.host
        host = "*." + host if self.wildcard else host
        return host if self.ports == DEFAULT_PORTS and not self.address else f"{host}:{self.ports[0]}"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def normalise_host(host: str) -> str:
    """Lower-case a host name and drop a trailing dot; put an address in canonical form."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.rstrip(".")


def _parse_port(text: str, entry: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise AllowEntryError(f"expected a port from 1 to 65535 in {entry!r}, got {text!r}")
    return int(text)


def parse_allow_entry(entry: Any) -> AllowEntry:
    """Parse one allowlist entry; raise :class:`AllowEntryError` with what was expected."""
    if not isinstance(entry, str) or not entry.strip():
        raise AllowEntryError(f"expected a non-empty string like 'example.com' or 'example.com:8443', got {entry!r}")
    text = entry.strip().lower()
    if "/" in text or "@" in text or " " in text:
        raise AllowEntryError(f"expected 'host', 'host:port', '*.host' or 'ip:port' (no scheme, path or user), "
                              f"got {entry!r}")
    if text.startswith("["):  # [v6]:port
        close = text.find("]")
        if close < 0 or not text[close + 1:].startswith(":"):
            raise AllowEntryError(f"expected an IPv6 entry like '[::1]:8080', got {entry!r}")
        host, port_text = text[1:close], text[close + 2:]
        try:
            v6 = ipaddress.IPv6Address(host)
        except ValueError:
            raise AllowEntryError(f"{host!r} is not an IPv6 address in {entry!r}") from None
        return AllowEntry(str(v6), (_parse_port(port_text, entry),), address=True)
    if text.count(":") > 1:
        raise AllowEntryError(f"write an IPv6 address with brackets and a port, like '[::1]:8080', got {entry!r}")
    host, sep, port_text = text.partition(":")
    ports = (_parse_port(port_text, entry),) if sep else DEFAULT_PORTS
    try:
        addr = ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        if not sep:
            raise AllowEntryError(f"an address entry needs a port, like '{addr}:8080', got {entry!r}")
        return AllowEntry(str(addr), ports, address=True)
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    host = host.rstrip(".")
    labels = host.split(".")
    if "*" in host:
        raise AllowEntryError(f"'*' may only stand alone as the first label ('*.example.com'), got {entry!r}")
    if not host or not all(_LABEL_RE.match(label) for label in labels):
        raise AllowEntryError(f"{host!r} is not a valid host name in {entry!r}")
    if wildcard and len(labels) < 2:
        raise AllowEntryError(f"a wildcard must name a domain with at least two labels ('*.example.com'), "
                              f"got {entry!r}")
    if labels[-1].isdigit():
        raise AllowEntryError(f"{host!r} is neither a host name nor an IPv4 address in {entry!r}")
    return AllowEntry(host, ports, wildcard=wildcard)


# -- context.http -----------------------------------------------------------------


class EgressHttp:
    """One worker's egress client, created on first use and closed when the worker stops."""

    def __init__(self, agent: str, socket_path: str) -> None:
        self.agent = agent
        #: The proxy's socket inside the sandbox; empty when the agent has no allowlist.
        self.socket_path = socket_path
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        """The shared ``httpx.AsyncClient`` (raises ``AgentError('egress_disabled', ...)`` without a proxy)."""
        if self._client is None:
            if not self.socket_path:
                from .types import AgentError

                raise AgentError("egress_disabled",
                                 f"egress_disabled: agent {self.agent} has no network allowlist in agent.yaml")
            self._client = make_client(self.socket_path)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def preload() -> None:
    """Import httpx and the asyncio network backend now (the zygote does, for agents with an allowlist).

    Workers forked afterwards share the imported modules, so an agent's first
    ``context.http`` call does not pay the ~0.3 s import.
    """
    import anyio._backends._asyncio  # noqa: F401  (anyio imports its backend at first use)
    import httpcore._backends.anyio  # noqa: F401  (httpcore imports it only at the first connection)
    import httpx  # noqa: F401


def make_client(socket_path: str, verify: Any = True, **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that reaches every host through the egress proxy at ``socket_path``.

    httpx 0.28 has no public hook for a custom network backend, so the
    transport's connection pool (``AsyncHTTPTransport._pool``) is one built on
    :func:`proxy_backend`; the transport keeps its request
    conversion and the mapping of httpcore errors to httpx ones. ``verify``
    is httpx's (True, a CA bundle path or an ``ssl.SSLContext``); other
    keyword arguments go to ``httpx.AsyncClient``.
    """
    import httpcore
    import httpx

    class _EgressTransport(httpx.AsyncHTTPTransport):
        # Its methods only use ``self._pool``; skipping the base __init__ avoids
        # building (and discarding) an SSL context: ~0.1 s per client.
        def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:
            self._pool = pool

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    transport = _EgressTransport(httpcore.AsyncConnectionPool(
        # None: httpcore builds its default (certifi) context at the first https connection.
        ssl_context=None if verify is True else httpx.create_ssl_context(verify=verify, trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=proxy_backend(socket_path),
    ))
    kwargs.setdefault("timeout", httpx.Timeout(30.0, connect=15.0))
    return httpx.AsyncClient(transport=transport, trust_env=False, **kwargs)


def _backend_classes() -> tuple[type, type]:
    """Define the httpcore backend classes on first use (httpcore is imported lazily)."""
    import httpcore
    from httpcore import AsyncNetworkBackend, AsyncNetworkStream

    class _PrefixedStream(AsyncNetworkStream):
        """The tunnel: bytes read past the proxy's reply come first."""

        def __init__(self, inner: AsyncNetworkStream, prefix: bytes) -> None:
            self._inner = inner
            self._prefix = prefix

        async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            if self._prefix:
                data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
                return data
            return await self._inner.read(max_bytes, timeout)

        async def write(self, buffer: bytes, timeout: float | None = None) -> None:
            await self._inner.write(buffer, timeout)

        async def aclose(self) -> None:
            await self._inner.aclose()

        async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                            timeout: float | None = None) -> AsyncNetworkStream:
            if self._prefix:
                raise httpcore.ConnectError("egress_failed: the server spoke before the TLS handshake")
            return await self._inner.start_tls(ssl_context, server_hostname, timeout)

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class _ProxyBackend(AsyncNetworkBackend):
        def __init__(self, socket_path: str) -> None:
            from httpcore._backends.auto import AutoBackend

            self.socket_path = socket_path
            self._unix = AutoBackend()

        async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                              local_address: str | None = None, socket_options: Any = None) -> AsyncNetworkStream:
            try:
                stream = await self._unix.connect_unix_socket(self.socket_path, timeout=timeout)
            except (httpcore.ConnectError, OSError) as exc:
                raise httpcore.ConnectError(
                    f"egress_unavailable: cannot reach the egress proxy at {self.socket_path}: {exc}") from exc
            try:
                return await _tunnel(stream, host, port, timeout)
            except BaseException:
                await stream.aclose()
                raise

        async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                      socket_options: Any = None) -> AsyncNetworkStream:
            raise httpcore.ConnectError("egress_denied: Unix sockets are not reachable through the egress proxy")

        async def sleep(self, seconds: float) -> None:
            await self._unix.sleep(seconds)

    async def _tunnel(stream: AsyncNetworkStream, host: str, port: int,
                      timeout: float | None) -> AsyncNetworkStream:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        await stream.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode("ascii"), timeout)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.read(4096, timeout)
            if not chunk:
                raise httpcore.ConnectError(f"egress_failed: the egress proxy closed the connection to {target}")
            head += chunk
            if len(head) > _MAX_HEAD:
                raise httpcore.ConnectError("egress_failed: the egress proxy sent an oversized reply")
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status == 200:
            return _PrefixedStream(stream, rest) if rest else stream
        reason = next((line.split(":", 1)[1].strip() for line in lines[1:]
                       if line.lower().startswith("x-neuroflow-error:")), "")
        reason = reason or f"egress_failed: the egress proxy answered {lines[0]!r} for {target}"
        if status == 504:
            raise httpcore.ConnectTimeout(reason)
        raise httpcore.ConnectError(reason)

    return _ProxyBackend, _PrefixedStream


_BACKEND: type | None = None


def proxy_backend(socket_path: str) -> Any:
    """An ``httpcore.AsyncNetworkBackend`` whose ``connect_tcp`` tunnels through the proxy at ``socket_path``."""
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = _backend_classes()[0]
    return _BACKEND(socket_path)
