"""Where a webhook may go (watcher/webhooks/netguard.py): URLs judged in every spelling,
and the client's resolver and connect seams judging every address before any dial.

Nothing here opens a socket: the seams answer, and a dial would fail the test."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

import httpcore
import httpx
import pytest

from devkit import cli_env
from watcher import errors, settings
from watcher.webhooks import netguard

PROD = netguard.Policy(production=True)
DEV = netguard.Policy(production=False)
PUBLIC = "93.184.215.14"

# Every spelling of a place a webhook must not reach, as the host of an https:// URL.
REFUSED_HOSTS = [
    "127.0.0.1",
    "10.0.0.1",
    "169.254.169.254",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "0.0.0.0",
    "2130706433",  # 127.0.0.1 as one decimal number
    "0177.0.0.1",  # octal
    "0x7f.1",  # hex, short form
    "127.1",  # short form
    "127.0.0.1.",  # trailing dot
    "0x7f000001",
    "017700000001",
    "172.16.0.1",
    "192.168.1.1",
    "0300.0250.1.1",  # 192.168.1.1 in octal
    "100.64.0.1",
    "169.254.1.1",
    "[fe80::1]",
    "[fc00::1]",
    "[fd12:3456::1]",
    "[fd00:ec2::254]",
    "[::]",
    "[::ffff:169.254.169.254]",
    "[::ffff:10.0.0.1]",
    "[2002:7f00:1::]",  # 6to4 around 127.0.0.1
    "[64:ff9b::a00:1]",  # NAT64 around 10.0.0.1
    "[::127.0.0.1]",  # IPv4-compatible
    "224.0.0.1",
    "[ff02::1]",
    "255.255.255.255",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "[2001:db8::1]",
    "198.18.0.1",
    "240.0.0.1",
    "metadata.google.internal",
    "Metadata.Google.Internal.",
    "metadata",
    "localhost",
    "hooks.localhost",
]


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_every_spelling_of_a_private_place_is_refused_in_production(host: str) -> None:
    with pytest.raises(netguard.Refused) as caught:
        netguard.check_url(f"https://{host}:8443/hook", PROD)
    # The message says what it is and how to fix it.
    assert "give" in caught.value.reason


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("2130706433", "127.0.0.1 is loopback"),
        ("0177.0.0.1", "127.0.0.1 is loopback"),
        ("[::ffff:7f00:1]", "127.0.0.1 is loopback"),
        ("0300.0250.1.1", "192.168.1.1 is private"),
        ("169.254.169.254", "cloud metadata"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("[fc00::1]", "unique-local"),
        ("[64:ff9b::a00:1]", "NAT64 for 10.0.0.1"),
        ("0.0.0.0", "unspecified"),
    ],
)
def test_a_refusal_says_what_the_address_really_is(host: str, shown: str) -> None:
    with pytest.raises(netguard.Refused, match=shown):
        netguard.check_url(f"https://{host}/", PROD)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/usdc",
        "https://hooks.example.com:8443/usdc?shop=1",
        f"https://{PUBLIC}/hook",
        "https://[2606:4700::1111]/hook",
        "https://[64:ff9b::808:808]/",  # NAT64 around a public address
        "https://1.2.3/",  # 1.2.0.3: a short form of a public address
    ],
)
def test_public_https_urls_pass_in_production(url: str) -> None:
    assert netguard.check_url(url, PROD) == str(httpx.URL(url))


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://hooks.example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("hooks.example.com/usdc", "scheme"),
        ("https://user:pw@hooks.example.com/", "password"),
        ("https://user@hooks.example.com/", "password"),
        ("https:///usdc", "no host"),
        ("https://hooks.example.com:0/", "port 0"),
        ("https://hooks.example.com:65536/", "port 65536"),
        ("https://hooks.example.com/" + "a" * 2100, "longer than"),
        ("https://hooks.example.com\\@127.0.0.1/", "backslash"),
        ("https://hooks.example.com /", "space"),
        ("https://[fe80::1%25eth0]/", "zone id"),
        ("https://1.2.3.4.5/", "neither a name nor an IPv4"),
        ("https://08.0.0.1/", "neither a name nor an IPv4"),
        ("https://a..b/", "not a host name"),
        ("http://hooks.example.com/", "https://"),
    ],
)
def test_malformed_or_plain_urls_are_refused_in_production(url: str, words: str) -> None:
    with pytest.raises(netguard.Refused, match=words):
        netguard.check_url(url, PROD)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.9.9.9", "[::1]", "[::ffff:127.0.0.1]", "2130706433", "localhost"]
)
def test_development_reaches_loopback_over_http(host: str) -> None:
    assert netguard.check_url(f"http://{host}:8000/hook", DEV)


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "192.168.1.1", "169.254.169.254", "[fc00::1]", "0.0.0.0", "metadata"]
)
def test_development_refuses_everything_else_production_refuses(host: str) -> None:
    with pytest.raises(netguard.Refused):
        netguard.check_url(f"http://{host}/", DEV)


def test_the_allow_list_opens_the_operators_networks_and_nothing_more() -> None:
    pol = netguard.Policy(
        production=True,
        allow=(ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("169.254.0.0/16")),
    )
    assert netguard.check_url("https://10.20.3.4/hook", pol)
    assert netguard.check_url("http://10.20.3.4:8080/hook", pol)  # http: a listed address
    assert netguard.check_url("https://[::ffff:10.20.3.4]/", pol)
    assert netguard.check_url("https://169.254.1.1/", pol)
    for host in ("10.21.0.1", "127.0.0.1", "169.254.169.254", "0.0.0.0"):
        with pytest.raises(netguard.Refused):
            netguard.check_url(f"https://{host}/", pol)
    with pytest.raises(netguard.Refused, match="https://"):
        netguard.check_url("http://hooks.example.com/", pol)  # a name: https only


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        (PUBLIC, True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("fe80::1%eth0", False),
        ("10.0.0.1", False),
        ("not-an-address", False),
    ],
)
def test_resolved_addresses_are_judged_alike(address: str, ok: bool) -> None:
    if ok:
        assert str(netguard.check_address(address, PROD)) == address
    else:
        with pytest.raises(netguard.Refused):
            netguard.check_address(address, PROD)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_env.clear(monkeypatch, tmp_path)  # no stray variables or .env


@pytest.mark.usefixtures("clean_env")
def test_the_policy_comes_from_the_settings() -> None:
    loaded = settings.load_settings(
        watcher_webhook_allow_networks="10.20.0.0/16, ::ffff:192.168.5.0/120"
    )
    pol = netguard.policy(loaded)
    assert pol == netguard.Policy(
        production=False,
        allow=(ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("192.168.5.0/24")),
    )
    assert netguard.policy(settings.load_settings()).allow == ()
    with pytest.raises(errors.ConfigError, match="WATCHER_WEBHOOK_ALLOW_NETWORKS: 'ten' is not"):
        settings.load_settings(watcher_webhook_allow_networks="ten")


# ---- the client's seams ---------------------------------------------------------------


class Seams:
    """A resolver answering from a script and a connect that records and never dials."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.looked_up: list[str] = []
        self.dialled: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        self.looked_up.append(host)
        return self.answers.pop(0)

    async def connect(self, ip: str, port: int, limit: float | None) -> httpcore.AsyncNetworkStream:
        self.dialled.append((ip, port))
        raise httpcore.ConnectError("this test never dials")

    def client(self, pol: netguard.Policy) -> httpx.AsyncClient:
        return netguard.client(pol, timeout=2.0, resolver=self.resolve, connect=self.connect)


@pytest.mark.parametrize(
    "answer",
    [
        ["127.0.0.1"],
        ["::1"],
        ["::ffff:169.254.169.254"],
        ["0.0.0.0"],
        [PUBLIC, "10.0.0.1"],  # one public, one private: refused, whichever would be dialled
        ["10.0.0.1", PUBLIC],
        ["fe80::1%eth0"],
    ],
)
async def test_a_name_resolving_to_a_private_address_is_never_dialled(answer: list[str]) -> None:
    seams = Seams(answer)
    async with seams.client(PROD) as http:
        with pytest.raises(netguard.Refused):
            await http.post("https://hooks.example.com/usdc", content=b"{}")
    assert seams.looked_up == ["hooks.example.com"]
    assert seams.dialled == []


async def test_a_public_answer_is_dialled_at_that_address_only() -> None:
    seams = Seams([PUBLIC, "2606:4700::1111"])
    async with seams.client(PROD) as http:
        with pytest.raises(httpx.ConnectError):
            await http.post("https://hooks.example.com:8443/usdc", content=b"{}")
    assert seams.dialled == [(PUBLIC, 8443), ("2606:4700::1111", 8443)]


@pytest.mark.parametrize("url", ["https://127.0.0.1/", "https://2130706433/", "ftp://x.example/"])
async def test_a_literal_private_url_is_refused_before_any_lookup(url: str) -> None:
    seams = Seams()
    async with seams.client(PROD) as http:
        with pytest.raises(netguard.Refused):
            await http.get(url)
    assert seams.looked_up == [] and seams.dialled == []


async def test_a_name_without_addresses_or_a_failed_lookup_is_a_connect_error() -> None:
    async def broken(host: str, port: int) -> Sequence[str]:
        raise OSError("Name or service not known")

    for resolver in (Seams([]).resolve, broken):
        async with netguard.client(PROD, timeout=2.0, resolver=resolver) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get("https://hooks.example.com/")


def test_the_client_follows_no_redirect_and_no_environment_proxy() -> None:
    http = netguard.client(PROD, timeout=1.0)
    assert http.follow_redirects is False and http.trust_env is False
