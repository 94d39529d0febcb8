"""The guarded webhook client against real HTTP servers on loopback.

Only loopback (127.0.0.1, ::1) is ever reached: where a test needs a public or
private address, the resolver seam answers it and the connect seam records it, then
dials the loopback server (or refuses), so the test sees exactly what would have
been dialled."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpcore
import httpx
import pytest

from watcher.webhooks import netguard

PUBLIC = "93.184.215.14"


class Receiver:
    """A small HTTP/1.1 server on 127.0.0.1 that answers every request the same way and
    closes the connection (so each request dials afresh)."""

    def __init__(
        self, status: int = 200, headers: dict[str, str] | None = None, body: bytes = b"ok"
    ):
        self.status, self.headers, self.body = status, headers or {}, body
        self.requests: list[tuple[str, bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.tls: ssl.SSLContext | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, host: str = "127.0.0.1") -> Receiver:
        self.server = await asyncio.start_server(self._serve, host, 0, ssl=self.tls)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length)
            self.requests.append((lines[0], body))
            extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
            writer.write(
                f"HTTP/1.1 {self.status} X\r\ncontent-length: {len(self.body)}\r\n{extra}"
                "connection: close\r\n\r\n".encode()
                + self.body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


DEV = netguard.Policy(production=False)
PROD = netguard.Policy(production=True)


async def test_development_delivers_to_loopback(receiver: Receiver) -> None:
    async with netguard.client(DEV, timeout=5.0) as http:
        response = await http.post(f"http://127.0.0.1:{receiver.port}/hook", content=b'{"a":1}')
    assert response.status_code == 200 and response.content == b"ok"
    assert receiver.requests == [("POST /hook HTTP/1.1", b'{"a":1}')]


async def test_development_delivers_to_ipv6_loopback_in_any_spelling() -> None:
    v6 = await Receiver().start("::1")
    try:
        async with netguard.client(DEV, timeout=5.0) as http:
            assert (await http.get(f"http://[::1]:{v6.port}/")).status_code == 200
            with pytest.raises(netguard.Refused):
                await http.get(f"http://[::ffff:10.0.0.1]:{v6.port}/")
        assert v6.connections == 1
    finally:
        await v6.stop()


async def test_production_delivers_to_loopback_only_when_the_operator_lists_it(
    receiver: Receiver,
) -> None:
    url = f"http://127.0.0.1:{receiver.port}/hook"
    async with netguard.client(PROD, timeout=5.0) as http:
        with pytest.raises(netguard.Refused, match="loopback"):
            await http.post(url, content=b"{}")
    assert receiver.connections == 0  # not one packet
    listed = netguard.Policy(production=True, allow=(ipaddress.ip_network("127.0.0.1/32"),))
    async with netguard.client(listed, timeout=5.0) as http:
        assert (await http.post(url, content=b"{}")).status_code == 200
    assert receiver.connections == 1


async def test_a_redirect_is_answered_not_followed() -> None:
    target = await Receiver().start()
    redirect = await Receiver(302, {"location": f"http://127.0.0.1:{target.port}/"}).start()
    try:
        async with netguard.client(DEV, timeout=5.0) as http:
            response = await http.post(f"http://127.0.0.1:{redirect.port}/", content=b"{}")
        assert response.status_code == 302
        assert target.connections == 0
    finally:
        await redirect.stop()
        await target.stop()


async def test_a_rebind_cannot_swap_the_checked_address(receiver: Receiver) -> None:
    """The name answers a public address, then a private one: the first is dialled (here
    it leads to the loopback receiver), the second is refused before any dial."""
    answers = [[PUBLIC], ["10.0.0.1"], ["127.0.0.1", "169.254.169.254"]]
    dialled: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> Sequence[str]:
        return answers.pop(0)

    async def connect(ip: str, port: int, limit: float | None) -> httpcore.AsyncNetworkStream:
        dialled.append((ip, port))
        return await httpcore.AnyIOBackend().connect_tcp("127.0.0.1", receiver.port, limit)

    async with netguard.client(DEV, timeout=5.0, resolver=resolve, connect=connect) as http:
        first = await http.post("http://hooks.example.com:8080/usdc", content=b"1")
        with pytest.raises(netguard.Refused, match=r"10\.0\.0\.1 is private"):
            await http.post("http://hooks.example.com:8080/usdc", content=b"2")
        with pytest.raises(netguard.Refused, match="cloud metadata"):
            await http.post("http://hooks.example.com:8080/usdc", content=b"3")
    assert first.status_code == 200
    assert dialled == [(PUBLIC, 8080)]
    assert [body for _, body in receiver.requests] == [b"1"]


async def test_bodies_are_read_to_a_cap() -> None:
    big = await Receiver(body=b"x" * 200_000).start()
    try:
        async with netguard.client(DEV, timeout=5.0, body_cap=4096) as http:
            whole = await http.get(f"http://127.0.0.1:{big.port}/")
            assert len(whole.content) == 4096
            async with http.stream("POST", f"http://127.0.0.1:{big.port}/", content=b"{}") as r:
                assert await netguard.read_capped(r, 1024) == b"x" * 1024
                assert r.is_closed
    finally:
        await big.stop()


async def test_environment_proxies_are_not_used(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens on the discard port
    async with netguard.client(DEV, timeout=5.0) as http:
        assert (await http.get(f"http://127.0.0.1:{receiver.port}/")).status_code == 200


def _certificates(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``name`` signed by it (openssl, test only)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ca_key, ca, key, csr, cert = (tmp / n for n in ("ca.key", "ca.pem", "s.key", "s.csr", "s.pem"))
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=netguard test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={name}")  # fmt: skip
    ext = tmp / "ext.cnf"
    ext.write_text(f"subjectAltName=DNS:{name}\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


async def test_tls_checks_the_certificate_against_the_name_not_the_address(
    tmp_path: Path,
) -> None:
    """The socket goes to the checked address; SNI and the certificate are the name's."""
    ca, cert, key = _certificates(tmp_path, "hooks.example.com")
    server = Receiver()
    server.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.tls.load_cert_chain(cert, key)
    names: list[str | None] = []

    def sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        names.append(name)

    server.tls.sni_callback = sni
    await server.start()
    trust = ssl.create_default_context(cafile=str(ca))

    async def resolve(host: str, port: int) -> Sequence[str]:
        return [PUBLIC]

    async def connect(ip: str, port: int, limit: float | None) -> httpcore.AsyncNetworkStream:
        assert (ip, port) == (PUBLIC, 443)
        return await httpcore.AnyIOBackend().connect_tcp("127.0.0.1", server.port, limit)

    try:
        async with netguard.client(
            PROD, timeout=5.0, resolver=resolve, connect=connect, verify=trust
        ) as http:
            assert (await http.post("https://hooks.example.com/usdc", content=b"{}")).is_success
            with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|match"):
                await http.post("https://other.example.com/usdc", content=b"{}")
        assert names[0] == "hooks.example.com"
    finally:
        await server.stop()
