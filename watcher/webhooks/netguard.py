"""Where a webhook may go: never a way into the operator's own network.

A merchant gives us a URL and we POST to it from inside the operator's network, so
the URL is judged twice (docs/webhooks.md, "Where webhooks may go"):

- ``check_url`` when it is given (and again for every request the client sends):
  http(s) only, no credentials, a host, a port, a length cap, and a host that is
  an IP address in any spelling (``2130706433``, ``0177.0.0.1``, ``127.1``,
  ``::ffff:127.0.0.1``, ...) is judged at once;
- ``client`` at every connection: the name is resolved once, *every* address is
  judged, and the socket is opened to a judged address itself, so a DNS answer that
  changes between the check and the dial (a rebind) cannot reach anything new. TLS
  still checks the certificate against the name. Redirects are never followed and
  proxies from the environment are never used.

``Policy`` says what is allowed: public addresses; loopback too in development
(tests deliver to 127.0.0.1); and the operator's ``WATCHER_WEBHOOK_ALLOW_NETWORKS``.
The address tables are in ``netranges``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
import socket
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import httpcore
import httpx

from watcher import errors
from watcher.webhooks import netpool, netranges, netstream

if TYPE_CHECKING:
    from watcher import settings as settings_module

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses the name has; the default asks the system (getaddrinfo).
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
# (checked ip, port, connect timeout) -> an open stream; the default dials it.
Connect = Callable[[str, int, float | None], Awaitable[httpcore.AsyncNetworkStream]]

MAX_URL_LENGTH = 2048
# What a response body may ever be read to, whatever the caller does (a receiver
# cannot make us buffer a gigabyte); read_capped reads less for the stored snippet.
BODY_CAP = 64 * 1024
# Addresses dialled per connection, in the resolver's order (all are judged first).
MAX_DIALS = 4
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's own
ALLOW_VARIABLE = "WATCHER_WEBHOOK_ALLOW_NETWORKS"
PASSED_URLS = 1024  # URLs remembered as passed by check_url, per client

# Characters URL parsers disagree about (a backslash is a slash to a browser, not to us).
_AMBIGUOUS = re.compile(r"[\x00-\x20\x7f\\]")


class Refused(errors.WatcherError):
    """This webhook URL or address is not allowed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclasses.dataclass(frozen=True)
class Policy:
    """What a webhook may reach: public addresses, loopback too outside production, and
    the operator's allow-list (which never opens ``netranges.NEVER``)."""

    production: bool
    allow: tuple[IpNetwork, ...] = ()

    def allows(self, ip: IpAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allow)


def policy(settings: settings_module.Settings) -> Policy:
    """The policy the settings give (``WATCHER_ENV``, ``WATCHER_WEBHOOK_ALLOW_NETWORKS``)."""
    return Policy(production=settings.production, allow=settings.webhook_allow_networks())


# ---- addresses ---------------------------------------------------------------------


def check_address(address: str | IpAddress, pol: Policy) -> IpAddress:
    """Judge one address (a zone id is dropped for judging); returns it, or raises Refused."""
    ip = address if not isinstance(address, str) else _parse_ip(address)
    reason = _reason(ip, pol)
    if reason is not None:
        raise Refused(reason)
    return ip


def _parse_ip(text: str) -> IpAddress:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        raise Refused(f"{text!r} is not an IP address") from None


def _reason(ip: IpAddress, pol: Policy) -> str | None:
    # A socket given ::ffff:a.b.c.d dials the IPv4 address itself: judge that.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    never = netranges.lookup(ip, netranges.NEVER)
    if never is not None:
        return (
            f"{ip} is {never}: no webhook may go there, whatever {ALLOW_VARIABLE} says; "
            "give the receiver's public address or name"
        )
    if pol.allows(ip) or (not pol.production and ip.is_loopback):
        return None
    kind = netranges.kind(ip)
    if kind is None:
        return None
    return (
        f"{ip} is {kind}: webhooks go to public addresses; give the receiver's "
        f"public name, or if you really mean to reach this network add it to {ALLOW_VARIABLE}"
    )


# ---- URLs --------------------------------------------------------------------------


def check_url(url: str, pol: Policy) -> str:
    """Judge a webhook URL without looking its name up; returns it normalised, or raises
    Refused saying what is wrong and how to fix it. The name's addresses are judged at
    each connection by ``client``."""
    if len(url) > MAX_URL_LENGTH:
        raise Refused(f"the URL is longer than {MAX_URL_LENGTH} characters; give a shorter one")
    if _AMBIGUOUS.search(url):
        raise Refused("the URL holds a space, a control character or a backslash; remove it")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        _judge_unparsed(url, pol)
        raise Refused(f"not a URL ({exc}); give one like https://hooks.example.com/usdc") from None
    if parsed.scheme not in ("https", "http"):
        raise Refused(f"scheme {parsed.scheme or '(none)'!r}: give an https:// URL")
    if parsed.userinfo:
        raise Refused(
            "the URL holds a user name or password; remove it (deliveries are signed: "
            "verify the webhook-signature header instead)"
        )
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        raise Refused("the URL has no host; give one like https://hooks.example.com/usdc")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise Refused(f"port {parsed.port} is not a TCP port (1-65535)")
    ip = _address_of(host)
    if ip is not None:
        check_address(ip, pol)
    else:
        _check_name(host, pol)
    if pol.production and parsed.scheme == "http" and not (ip is not None and pol.allows(ip)):
        raise Refused(
            "plain http:// in production: give an https:// URL (http:// is taken only for "
            f"an IP address inside {ALLOW_VARIABLE})"
        )
    return str(parsed)


def _judge_unparsed(url: str, pol: Policy) -> None:
    """A URL httpx refuses may still name an address (0177.0.0.1 is 127.0.0.1 to a
    resolver): say what it is rather than only "not a URL"."""
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError:
        return
    if host:
        ip = _address_of(host)
        if ip is not None:
            check_address(ip, pol)


def _address_of(host: str) -> IpAddress | None:
    try:
        return netranges.host_address(host)
    except ValueError as exc:
        raise Refused(str(exc)) from None


def _check_name(host: str, pol: Policy) -> None:
    name = host.rstrip(".")
    if not name or ".." in name:
        raise Refused(f"{host!r} is not a host name")
    if name in netranges.METADATA_NAMES:
        raise Refused(
            f"{name} is a cloud metadata service: no webhook may go there; "
            "give the receiver's public name"
        )
    if pol.production and (name == "localhost" or name.endswith(".localhost")):
        raise Refused(
            f"{name} is this machine (loopback): webhooks go to public addresses; give the "
            f"receiver's public name, or its address inside {ALLOW_VARIABLE}"
        )


# ---- the client --------------------------------------------------------------------


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's answer for a name (getaddrinfo, off the event loop's thread)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class _Backend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the judgement between the lookup and the dial."""

    def __init__(self, pol: Policy, resolver: Resolver, connect: Connect | None) -> None:
        self._policy = pol
        self._resolver = resolver
        self._connect = connect or netstream.connect

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: object = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._addresses(host, port, timeout)
        # Every address first: a name with one public and one private address is refused,
        # whichever the dial would have picked.
        checked = [(text, check_address(text, self._policy)) for text in addresses]
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for text, ip in checked[:MAX_DIALS]:
            dial = str(ip) if "%" not in text else text
            try:
                return await self._connect(dial, port, timeout)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                failure = exc
        raise failure

    async def _addresses(self, host: str, port: int, limit: float | None) -> Sequence[str]:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return [str(ip)]
        try:
            async with asyncio.timeout(limit):
                found = await self._resolver(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"looking up {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"looking up {host} failed: {exc}") from exc
        if not found:
            raise httpcore.ConnectError(f"{host} has no address")
        return found

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: object = None,
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("a unix socket is not a webhook receiver")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _CappedStream(httpx.AsyncByteStream):
    """A response body that ends after ``cap`` bytes, whatever the receiver sends."""

    def __init__(self, inner: httpx.AsyncByteStream, cap: int) -> None:
        self._inner = inner
        self._cap = cap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        left = self._cap
        chunks = self._inner.__aiter__()
        try:
            async for chunk in chunks:
                yield chunk[:left]
                left -= len(chunk)
                if left <= 0:
                    break
        finally:
            await _aclose(chunks)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Transport(httpx.AsyncBaseTransport):
    """Judges every request's URL, then sends it through the guarded backend."""

    def __init__(
        self,
        pol: Policy,
        backend: _Backend,
        verify: ssl.SSLContext | None,
        body_cap: int,
        limits: httpx.Limits,
    ) -> None:
        self._policy = pol
        self._body_cap = body_cap
        # URLs check_url passed under this policy (its answer depends on nothing else):
        # the worker sends to the same few URLs all day. Addresses are still judged at
        # every connection.
        self._passed: set[str] = set()
        self._inner = httpx.AsyncHTTPTransport(trust_env=False, retries=0)
        ssl_context = verify if verify is not None else httpx.create_ssl_context(trust_env=False)
        # httpx has no public way to hand its pool a network backend; the pool it made
        # is replaced by ours over that backend (the integration tests prove it is used).
        self._inner._pool = netpool.Pool(  # type: ignore[assignment]  # the same interface
            ssl_context=ssl_context,
            network_backend=backend,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if url not in self._passed:
            check_url(url, self._policy)
            if len(self._passed) >= PASSED_URLS:
                self._passed.clear()
            self._passed.add(url)
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CappedStream(response.stream, self._body_cap)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def client(
    pol: Policy,
    *,
    timeout: float | httpx.Timeout,
    resolver: Resolver | None = None,
    connect: Connect | None = None,
    verify: ssl.SSLContext | None = None,
    body_cap: int = BODY_CAP,
    limits: httpx.Limits | None = None,
) -> httpx.AsyncClient:
    """An httpx client that only reaches what ``pol`` allows: each request's URL through
    ``check_url``, each connection's addresses from ``resolver`` (default: the system's)
    all judged and one of them dialled through ``connect`` (default: a TCP connection);
    no redirects, no environment proxies, bodies cut at ``body_cap`` bytes. ``verify``
    is an ``ssl.SSLContext`` (tests trust their own CA); default the system's CAs.
    ``limits``: the connection pool's (default httpx's). Refusals raise ``Refused``
    (not an ``httpx.HTTPError``): a caller recording attempts catches both."""
    backend = _Backend(pol, resolver or system_resolver, connect)
    return httpx.AsyncClient(
        transport=_Transport(pol, backend, verify, body_cap, limits or _LIMITS),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        # A compressed body could inflate past any cap: ask for the bytes as they are.
        headers={"accept-encoding": "identity"},
    )


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of a streamed response's body, as sent (not decompressed);
    the rest is never read: the response is closed."""
    out = bytearray()
    chunks = response.aiter_raw()
    try:
        async for chunk in chunks:
            out += chunk[: limit - len(out)]
            if len(out) >= limit:
                break
    finally:
        await _aclose(chunks)
        await response.aclose()
    return bytes(out)


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    """Finish an async generator left early now, not whenever it is collected."""
    closing = getattr(chunks, "aclose", None)
    if closing is not None:
        await closing()
