"""The egress proxy and ``context.http`` against local loopback servers (no sandbox).

The proxy runs for real on a Unix socket in tmp; the destinations are asyncio
servers on 127.0.0.1. Only DNS failures and slow DNS use a stand-in resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from neuroflow.sdk.http import SANDBOX_SOCKET, AllowEntry, AllowEntryError, EgressHttp, make_client, parse_allow_entry
from neuroflow.sdk.manifest import ManifestError, load_manifest
from neuroflow.sdk.types import AgentError
from neuroflow.supervisor.config import ConfigError, parse_config
from neuroflow.supervisor.egress import Allowlist, EgressProxy, is_public
from neuroflow.supervisor.sandbox.mounts import EGRESS_DIR

# -- the allowlist grammar ----------------------------------------------------------------


@pytest.mark.parametrize(("text", "entry"), [
    ("example.com", AllowEntry("example.com", (80, 443))),
    ("Example.COM.", AllowEntry("example.com", (80, 443))),
    ("example.com:8443", AllowEntry("example.com", (8443,))),
    ("*.example.com", AllowEntry("example.com", (80, 443), wildcard=True)),
    ("*.example.com:8080", AllowEntry("example.com", (8080,), wildcard=True)),
    ("127.0.0.1:8080", AllowEntry("127.0.0.1", (8080,), address=True)),
    ("[::1]:8080", AllowEntry("::1", (8080,), address=True)),
    ("localhost:9", AllowEntry("localhost", (9,))),
])
def test_grammar_accepts(text: str, entry: AllowEntry) -> None:
    assert parse_allow_entry(text) == entry


@pytest.mark.parametrize(("text", "message"), [
    ("", "expected a non-empty string"),
    ("https://example.com", "no scheme, path or user"),
    ("example.com/path", "no scheme, path or user"),
    ("example.com:0", "port from 1 to 65535"),
    ("example.com:99999", "port from 1 to 65535"),
    ("example.com:http", "port from 1 to 65535"),
    ("127.0.0.1", "an address entry needs a port"),
    ("::1:80", "with brackets"),
    ("[::1]", "IPv6 entry like"),
    ("[nope]:80", "not an IPv6 address"),
    ("*", "may only stand alone"),
    ("*.com", "at least two labels"),
    ("a.*.example.com", "'*' may only stand alone"),
    ("exa_mple.com", "not a valid host name"),
    ("-bad.example.com", "not a valid host name"),
    ("1.2.3", "neither a host name nor an IPv4 address"),
])
def test_grammar_rejects(text: str, message: str) -> None:
    with pytest.raises(AllowEntryError, match=message):
        parse_allow_entry(text)


def test_matching() -> None:
    allow = Allowlist(["example.com", "*.api.test:8443", "127.0.0.1:8080", "[::1]:81"])
    assert allow.allows("example.com", 443) and allow.allows("example.com", 80)
    assert not allow.allows("example.com", 8443)
    assert not allow.allows("www.example.com", 443)  # a plain entry does not cover subdomains
    assert allow.allows("a.api.test", 8443) and allow.allows("a.b.api.test", 8443)
    assert not allow.allows("api.test", 8443)  # a wildcard does not cover the domain itself
    assert not allow.allows("evilapi.test", 8443)
    assert allow.allows("127.0.0.1", 8080) and not allow.allows("127.0.0.1", 8081)
    assert allow.allows("::1", 81)
    assert allow.names_address("127.0.0.1", 8080) and not allow.names_address("example.com", 80)
    assert not Allowlist([])


def test_public_addresses() -> None:
    for private in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.169.254", "100.64.0.1",
                    "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"):
        assert not is_public(private), private
    assert is_public("93.184.216.34") and is_public("2606:2800:220:1::1")


# -- the manifest ------------------------------------------------------------------------

HEAD = "name: x\nversion: '1'\nentry: a:B\n"


@pytest.mark.parametrize("network", ["[example.com, '127.0.0.1:8080']",
                                     "{allow: [example.com, '127.0.0.1:8080']}"])
def test_manifest_network_forms(tmp_path: Path, network: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(HEAD + f"network: {network}\n")
    assert load_manifest(path).network == ("example.com", "127.0.0.1:8080")


@pytest.mark.parametrize(("network", "message"), [
    ("[example.com, 'http://x.com']", r"network\[1\]: expected 'host'"),
    ("{allow: ['127.0.0.1']}", r"network.allow\[0\]: an address entry needs a port"),
    ("{deny: [x.com]}", "network.deny: unknown key"),
    ("example.com", "network: expected a list"),
])
def test_manifest_bad_network(tmp_path: Path, network: str, message: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(HEAD + f"network: {network}\n")
    with pytest.raises(ManifestError, match=message) as info:
        load_manifest(path)
    assert str(info.value).startswith(str(path))


def test_config_keys() -> None:
    config = parse_config({"egress_connect_timeout": "2s", "egress_idle_timeout": "500ms",
                           "egress_max_connections": 3}, "x.yaml")
    assert (config.egress_connect_timeout, config.egress_idle_timeout, config.egress_max_connections) == (2, 0.5, 3)
    with pytest.raises(ConfigError, match=r"x\.yaml: egress_max_connections"):
        parse_config({"egress_max_connections": 0}, "x.yaml")


def test_sandbox_path_agrees() -> None:
    assert os.path.dirname(SANDBOX_SOCKET) == EGRESS_DIR


def test_http_without_allowlist() -> None:
    with pytest.raises(AgentError, match="egress_disabled: agent calc has no network allowlist") as info:
        EgressHttp("calc", "").client()
    assert info.value.code == "egress_disabled"


# -- the proxy against loopback servers ------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def http_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal HTTP/1.1 server: answers each request with its request line; honours ``Connection: close``."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0]
            body = b"hello from loopback: " + line
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            if b"\r\nconnection: close\r\n" in head.lower():
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def serve(handler: Handler = http_handler, ssl_ctx: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@contextlib.asynccontextmanager
async def proxy(tmp_path: Path, allow: list[str], **kwargs: Any) -> AsyncIterator[EgressProxy]:
    kwargs.setdefault("uid", os.getuid())
    kwargs.setdefault("gid", os.getgid())
    p = EgressProxy("netuser", allow, tmp_path / "egress" / "egress.sock", **kwargs)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


async def raw(p: EgressProxy, request: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(p.socket_path))
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_through_tunnel_and_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="neuroflow.egress")

    async def main() -> None:
        async with serve() as port, proxy(tmp_path, [f"127.0.0.1:{port}"], peer_name=lambda pid: "w7") as p:
            mode = os.stat(p.socket_path).st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
            assert stat.S_IMODE(os.stat(p.socket_path.parent).st_mode) == 0o750
            async with make_client(str(p.socket_path)) as client:
                r1 = await client.get(f"http://127.0.0.1:{port}/one")
                r2 = await client.get(f"http://127.0.0.1:{port}/two")  # same tunnel, kept alive
            assert r1.status_code == 200 and r1.text == "hello from loopback: GET /one HTTP/1.1"
            assert r2.text.endswith("GET /two HTTP/1.1")
            stats = p.stats()
        assert stats["connections"] == 1 and stats["allowed"] == 1 and stats["bytes_down"] > 0
        assert not p.socket_path.exists() and not p.socket_path.parent.exists()

    asyncio.run(main())
    [rec] = [r for r in caplog.records if r.msg == "egress connection"]
    assert rec.allowed is True and rec.dest.startswith("127.0.0.1:") and rec.address == "127.0.0.1"  # type: ignore[attr-defined]
    assert rec.worker == "w7" and rec.pid == os.getpid()  # type: ignore[attr-defined]
    assert rec.connect_ms is not None and rec.connect_ms >= 0 and rec.bytes_up > 0  # type: ignore[attr-defined]


def test_https_through_tunnel(tmp_path: Path) -> None:
    """TLS runs end to end inside the CONNECT tunnel (the proxy only sees ciphertext)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        async with serve(ssl_ctx=server_ctx) as port, proxy(tmp_path, [f"127.0.0.1:{port}"]) as p:
            async with make_client(str(p.socket_path), verify=client_ctx) as client:
                r = await client.get(f"https://127.0.0.1:{port}/secure")
            assert r.text == "hello from loopback: GET /secure HTTP/1.1"
            assert p.stats()["bytes_up"] > 200  # a TLS handshake went through

    asyncio.run(main())


def test_refusals_surface_in_httpx(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve() as port, proxy(tmp_path, [f"127.0.0.1:{port}"]) as p:
            other = free_port()
            async with make_client(str(p.socket_path)) as client:
                with pytest.raises(httpx.ConnectError, match=rf"egress_denied: 127.0.0.1:{other} is not in agent "
                                                            r"netuser's network allowlist"):
                    await client.get(f"http://127.0.0.1:{other}/")
                with pytest.raises(httpx.ConnectError, match=r"egress_denied: example\.com:443"):
                    await client.get("https://example.com/")
            assert p.stats()["egress_denied"] == 2 and p.stats()["allowed"] == 0

    asyncio.run(main())


def test_denied_reply_format(tmp_path: Path) -> None:
    async def main() -> None:
        async with proxy(tmp_path, ["example.com"]) as p:
            data = await raw(p, b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403 Forbidden")
        msg = b"egress_denied: evil.test:443 is not in agent netuser's network allowlist"
        assert b"X-NeuroFlow-Error: " + msg in head and body == msg + b"\n"

    asyncio.run(main())


def test_absolute_form_http(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve() as port, proxy(tmp_path, [f"127.0.0.1:{port}"]) as p:
            data = await raw(p, f"GET http://127.0.0.1:{port}/abs?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                                f"Proxy-Connection: keep-alive\r\n\r\n".encode())
            assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"GET /abs?q=1 HTTP/1.1")
            bad = await raw(p, b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n")
            assert bad.startswith(b"HTTP/1.1 400") and b"egress_bad_request" in bad

    asyncio.run(main())


def test_ssrf_guard(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve() as port:
            async with proxy(tmp_path, [f"localhost:{port}"]) as p:
                data = await raw(p, f"CONNECT localhost:{port} HTTP/1.1\r\n\r\n".encode())
                assert data.startswith(b"HTTP/1.1 403") and b"resolves to non-public address 127.0.0.1" in data
            # Naming the address literally lifts the guard for that address and port.
            async with proxy(tmp_path, [f"localhost:{port}", f"127.0.0.1:{port}"]) as p:
                async with make_client(str(p.socket_path)) as client:
                    r = await client.get(f"http://localhost:{port}/named")
                assert r.text.endswith("GET /named HTTP/1.1")

    asyncio.run(main())


def test_dns_and_connect_failures(tmp_path: Path) -> None:
    async def no_dns(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def slow_dns(host: str, port: int) -> list[str]:
        await asyncio.sleep(5)
        return ["93.184.216.34"]

    async def main() -> None:
        closed = free_port()
        async with proxy(tmp_path, ["nowhere.test", f"127.0.0.1:{closed}"], resolver=no_dns) as p:
            data = await raw(p, b"CONNECT nowhere.test:443 HTTP/1.1\r\n\r\n")
            assert data.startswith(b"HTTP/1.1 502") and b"egress_failed: cannot resolve nowhere.test" in data
            data = await raw(p, f"CONNECT 127.0.0.1:{closed} HTTP/1.1\r\n\r\n".encode())
            assert data.startswith(b"HTTP/1.1 502") and b"Connection refused" in data
            async with make_client(str(p.socket_path)) as client:
                with pytest.raises(httpx.ConnectError, match=r"egress_failed: cannot connect to 127\.0\.0\.1"):
                    await client.get(f"http://127.0.0.1:{closed}/")
        async with proxy(tmp_path, ["slow.test"], resolver=slow_dns, connect_timeout=0.2) as p:
            data = await raw(p, b"CONNECT slow.test:443 HTTP/1.1\r\n\r\n")
            assert data.startswith(b"HTTP/1.1 504") and b"egress_timeout: no connection to slow.test:443" in data
            async with make_client(str(p.socket_path)) as client:
                with pytest.raises(httpx.ConnectTimeout, match="egress_timeout"):
                    await client.get("https://slow.test/")

    asyncio.run(main())


def test_every_upstream_attempt_is_reported_with_its_outcome(tmp_path: Path) -> None:
    seen: list[tuple[str, str, int, str]] = []

    def on_connect(conn: Any, started_ns: int, code: str) -> None:
        seen.append((conn.method, conn.dest, conn.pid, code))
        assert 0 < started_ns <= time.time_ns()
        if conn.dest.endswith(":1"):
            raise RuntimeError("a broken hook costs nothing but a log line")

    async def main() -> None:
        closed = free_port()
        async with serve() as port, proxy(tmp_path, [f"127.0.0.1:{port}", f"127.0.0.1:{closed}", "127.0.0.1:1"],
                                          on_connect=on_connect) as p:
            assert (await raw(p, f"CONNECT 127.0.0.1:{closed} HTTP/1.1\r\n\r\n".encode())).startswith(b"HTTP/1.1 502")
            assert (await raw(p, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 502")
            assert (await raw(p, b"CONNECT 10.0.0.1:80 HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 403")  # no attempt
            async with make_client(str(p.socket_path)) as client:
                assert (await client.get(f"http://127.0.0.1:{port}/x")).status_code == 200

    asyncio.run(main())
    assert [(m, d.rsplit(":", 1)[1] == "1", pid, code) for m, d, pid, code in seen] == [
        ("CONNECT", False, os.getpid(), "egress_failed"), ("CONNECT", True, os.getpid(), "egress_failed"),
        ("CONNECT", False, os.getpid(), "")]


def test_connection_cap_and_idle_timeout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="neuroflow.egress")

    async def main() -> None:
        async with serve() as port, proxy(tmp_path, [f"127.0.0.1:{port}"], max_connections=1,
                                          idle_timeout=0.5) as p:
            reader, writer = await asyncio.open_unix_connection(str(p.socket_path))
            writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            busy = await raw(p, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            assert busy.startswith(b"HTTP/1.1 503") and b"egress_busy" in busy
            # Nothing moves on the open tunnel: the proxy closes it after the idle timeout.
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()
            assert p.active == 0

    asyncio.run(main())
    codes = [r.code for r in caplog.records if r.msg == "egress connection"]  # type: ignore[attr-defined]
    assert sorted(codes) == ["egress_busy", "egress_idle"]


def test_peer_uid_is_checked(tmp_path: Path) -> None:
    async def main() -> None:
        async with proxy(tmp_path, ["example.com"], uid=os.getuid() + 4242, gid=os.getgid()) as p:
            data = await raw(p, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
            assert data.startswith(b"HTTP/1.1 403") and b"is not agent netuser's uid" in data

    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    asyncio.run(main())


def test_long_socket_path(tmp_path: Path) -> None:
    """sun_path holds 108 bytes; deeper state folders bind through /proc/self/fd."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)

    async def main() -> None:
        async with serve() as port, proxy(deep, [f"127.0.0.1:{port}"]) as p:
            assert len(str(p.socket_path)) > 108
            dirfd = os.open(p.socket_path.parent, os.O_PATH | os.O_DIRECTORY)
            try:
                short = f"/proc/self/fd/{dirfd}/egress.sock"
                async with make_client(short) as client:
                    r = await client.get(f"http://127.0.0.1:{port}/deep")
            finally:
                os.close(dirfd)
            assert r.status_code == 200

    asyncio.run(main())
