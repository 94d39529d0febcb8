"""Well-known free public RPC endpoints: fine to try a testnet, wrong for taking money.

They are shared, rate-limited and come with no SLA: under load they answer 429
or stale heads, so payments are credited late or not at all, and their
operators can change the limits at any time. The doctor flags them (a warning
in development, a failure in production) and names the variable to change.

Kept as data: one row per host (or a ``*.`` suffix for a provider's family of
hosts), who runs it, and where the host is published as a free endpoint.
``keyless_segments`` marks a provider whose free and keyed endpoints share a
host and differ by a key in the path (``rpc.ankr.com/eth`` free,
``rpc.ankr.com/eth/<key>`` keyed): only the keyless form is flagged. Matching is by host, never by a
substring of the URL, so a provider's keyed host is never mistaken for its
public one.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from watcher import keys
from watcher.doctor.report import Check, Status

ETHEREUM_LISTS = "ethereum-lists/chains, _data/chains/eip155-{id}.json (chainlist.org's source)"
BASE_DOCS = (
    "docs.base.org, Network information: public endpoints are rate-limited, not for production"
)
SOLANA_DOCS = "solana.com/docs/references/clusters: public endpoints are subject to rate limits"


@dataclass(frozen=True, slots=True)
class PublicEndpoint:
    """One host (or ``*.suffix``) known to serve free, keyless JSON-RPC."""

    host: str
    operator: str
    source: str
    # None: every URL on the host is the free endpoint. N: the free URLs have at most N path
    # segments, and a longer path carries a project's key (rpc.ankr.com/eth vs /eth/<key>).
    keyless_segments: int | None = None


CHAINLIST = "chainlist.org (built from ethereum-lists/chains)"
KNOWN: tuple[PublicEndpoint, ...] = (
    PublicEndpoint("mainnet.base.org", "Base", BASE_DOCS),
    PublicEndpoint("sepolia.base.org", "Base", BASE_DOCS),
    PublicEndpoint("developer-access-mainnet.base.org", "Base", ETHEREUM_LISTS.format(id=8453)),
    PublicEndpoint("api.mainnet-beta.solana.com", "Solana Foundation", SOLANA_DOCS),
    PublicEndpoint("api.devnet.solana.com", "Solana Foundation", SOLANA_DOCS),
    PublicEndpoint("api.testnet.solana.com", "Solana Foundation", SOLANA_DOCS),
    PublicEndpoint("cloudflare-eth.com", "Cloudflare", ETHEREUM_LISTS.format(id=1)),
    PublicEndpoint("api.mycryptoapi.com", "MyCrypto", ETHEREUM_LISTS.format(id=1)),
    # ethereum.publicnode.com, base-rpc.publicnode.com, ethereum-rpc.publicnode.com, ...
    PublicEndpoint("*.publicnode.com", "Allnodes PublicNode", ETHEREUM_LISTS.format(id=1)),
    PublicEndpoint("rpc.sepolia.org", "community", ETHEREUM_LISTS.format(id=11155111)),
    PublicEndpoint("eth.llamarpc.com", "LlamaNodes", f"llamarpc.com; {CHAINLIST}", 0),
    PublicEndpoint("1rpc.io", "Automata 1RPC", f"1rpc.io (1rpc.io/<chain>); {CHAINLIST}", 1),
    PublicEndpoint("rpc.ankr.com", "Ankr", f"ankr.com/rpc (rpc.ankr.com/<chain>); {CHAINLIST}", 1),
    PublicEndpoint(
        "*.gateway.tenderly.co",
        "Tenderly",
        f"{ETHEREUM_LISTS.format(id=1)}; {ETHEREUM_LISTS.format(id=8453)}",
        0,
    ),
)

ADVICE = "rate-limited, no SLA: use a provider's keyed URL"


def _host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def _ascii_host(host: str) -> str:
    """The host as the HTTP client resolves it: IDNA-encoded, so the ideographic full stop
    (``mainnet\u3002base\u3002org``, which httpx connects to as dots) is the public host."""
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:  # not a name IDNA can encode: compare it as it is
        return host.lower()


def match(url: str) -> PublicEndpoint | None:
    """The known public endpoint ``url`` points at, or None (a provider's keyed URL, a node)."""
    parts = urlsplit(url.strip())
    host = _ascii_host(parts.hostname or "").rstrip(".")
    for known in KNOWN:
        if _host_matches(known.host, host):
            segments = [part for part in parts.path.split("/") if part]
            if known.keyless_segments is not None and len(segments) > known.keyless_segments:
                return None  # the provider's keyed form: the key is in the path
            return known
    return None


def url_check(name: str, urls: list[str], production: bool) -> Check | None:
    """The row of a URL variable naming a known public endpoint, or None when it names none.

    A warning in development (trying a testnet on a public endpoint is fine), a failure in
    production (payments would be credited late or never under its rate limits).
    """
    found = [(url, known) for url in urls if (known := match(url)) is not None]
    if not found:
        return None
    shown = ", ".join(f"{keys.redact_url(url)} (public, {known.operator})" for url, known in found)
    status: Status = "fail" if production else "warn"
    return Check("settings", name.upper(), status, shown, ADVICE)
