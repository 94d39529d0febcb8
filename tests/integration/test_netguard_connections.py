"""netguard's own connections (watcher/webhooks/netstream.py, netpool.py) against real
servers on 127.0.0.1: keep-alive reuse, a connection the server closed never reused,
the bound on connections, timeouts, and TLS on the native stream (SNI and the
certificate are the name's, the socket goes to the judged address)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpcore
import httpx
import pytest

from tests.integration.test_netguard_http import PUBLIC, Receiver, _certificates
from watcher.webhooks import netguard, netstream

DEV = netguard.Policy(production=False)
PROD = netguard.Policy(production=True)


class KeepAlive:
    """An HTTP/1.1 server that keeps each connection open for further requests (unless
    ``close_after`` answers were given on it) and answers after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0, close_after: int | None = None) -> None:
        self.delay, self.close_after = delay, close_after
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        answered = 0
        try:
            while self.close_after is None or answered < self.close_after:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.bodies.append(await reader.readexactly(length))
                await asyncio.sleep(self.delay)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def __aenter__(self) -> KeepAlive:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def keepalive() -> AsyncIterator[KeepAlive]:
    async with KeepAlive() as server:
        yield server


async def test_one_connection_carries_request_after_request(keepalive: KeepAlive) -> None:
    async with netguard.client(DEV, timeout=5.0) as http:
        for i in range(20):
            response = await http.post(keepalive.url, content=b"%d" % i)
            assert response.status_code == 200 and response.content == b"ok"
    assert keepalive.bodies == [b"%d" % i for i in range(20)]
    assert keepalive.connections == 1


async def test_concurrent_requests_are_bounded_by_max_connections() -> None:
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=10)
    async with (
        KeepAlive(delay=0.05) as server,
        netguard.client(DEV, timeout=5.0, limits=limits) as http,
    ):
        answers = await asyncio.gather(*(http.post(server.url, content=b"x") for _ in range(12)))
        assert all(a.status_code == 200 for a in answers)
        assert server.most_open <= 3 and server.connections == 3  # kept alive and reused
        assert len(server.bodies) == 12


async def test_a_connection_the_server_closed_is_not_reused() -> None:
    async with KeepAlive(close_after=1) as server, netguard.client(DEV, timeout=5.0) as http:
        for _ in range(5):
            assert (await http.post(server.url, content=b"x")).status_code == 200
            await asyncio.sleep(0.05)  # the server's close reaches us while the connection idles
    assert server.connections == 5 and len(server.bodies) == 5


async def test_a_request_cut_short_frees_its_connection_slot() -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    client = netguard.client(DEV, timeout=5.0, limits=limits)
    async with KeepAlive(delay=0.5) as slow, KeepAlive() as fast, client as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await http.post(slow.url, content=b"cut")
        # The one slot is free again, and the cut connection (mid-answer) is not
        # handed to the next request.
        assert (await http.post(fast.url, content=b"next")).status_code == 200
    assert fast.bodies == [b"next"]


async def test_waiting_for_a_connection_times_out_as_a_pool_timeout() -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(5.0, pool=0.1)
    async with (
        KeepAlive(delay=1.0) as slow,
        netguard.client(DEV, timeout=timeout, limits=limits) as http,
    ):
        first = asyncio.create_task(http.post(slow.url, content=b"1"))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await http.post(slow.url, content=b"2")
        assert (await first).status_code == 200


async def test_a_receiver_that_does_not_read_is_a_write_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def deaf(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w)  # never reads: the request cannot be sent

    server = await asyncio.start_server(deaf, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with netguard.client(DEV, timeout=httpx.Timeout(5.0, write=0.3)) as http:
            with pytest.raises(httpx.WriteTimeout):
                await http.post(f"http://127.0.0.1:{port}/", content=b"x" * 50_000_000)
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


async def test_nothing_listening_is_a_connect_error() -> None:
    async with KeepAlive() as server:
        url = server.url
    async with netguard.client(DEV, timeout=5.0) as http:
        with pytest.raises(httpx.ConnectError):
            await http.post(url, content=b"x")


async def test_tls_on_the_native_stream_checks_the_name_not_the_address(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path, "hooks.example.com")
    server = Receiver()
    server.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.tls.load_cert_chain(cert, key)
    names: list[str | None] = []

    def sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    server.tls.sni_callback = sni
    await server.start()
    dialled: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> Sequence[str]:
        return [PUBLIC]

    async def connect(ip: str, port: int, limit: float | None) -> httpcore.AsyncNetworkStream:
        dialled.append((ip, port))  # what would have been dialled; loopback is
        return await netstream.connect("127.0.0.1", server.port, limit)

    trust = ssl.create_default_context(cafile=str(ca))
    try:
        async with netguard.client(
            PROD, timeout=5.0, resolver=resolve, connect=connect, verify=trust
        ) as http:
            answer = await http.post("https://hooks.example.com/usdc", content=b"{}")
            assert answer.is_success and answer.content == b"ok"
            with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|match"):
                await http.post("https://other.example.com/usdc", content=b"{}")
        assert names[0] == "hooks.example.com"
        assert dialled == [(PUBLIC, 443), (PUBLIC, 443)]
        assert server.requests == [("POST /usdc HTTP/1.1", b"{}")]
    finally:
        await server.stop()


async def test_a_url_passed_once_is_still_dialled_only_to_judged_addresses(
    keepalive: KeepAlive,
) -> None:
    """check_url's answer is remembered per URL; the name's addresses are not: each new
    connection judges what the resolver answers now."""
    port = keepalive.url.split(":")[2].split("/")[0]
    answers = [["127.0.0.1"], ["10.0.0.1"]]

    async def resolve(host: str, p: int) -> Sequence[str]:
        return answers.pop(0)

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=0)  # dial each time
    url = f"http://hooks.example.com:{port}/hook"
    async with netguard.client(DEV, timeout=5.0, resolver=resolve, limits=limits) as http:
        assert (await http.post(url, content=b"1")).status_code == 200
        with pytest.raises(netguard.Refused, match="private"):
            await http.post(url, content=b"2")
        for _ in range(2):  # a refused URL is refused every time
            with pytest.raises(netguard.Refused, match="metadata"):
                await http.post("http://169.254.169.254/latest", content=b"3")
    assert keepalive.bodies == [b"1"]
