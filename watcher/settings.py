"""Configuration: environment variables (and an optional ``.env``), validated once at start.

The variable names are the ones the existing deployment already uses. Flat
variables are read by :class:`Settings`; the per-chain views the followers need
(:class:`EvmChain`, :class:`SolanaChain`) are assembled from them, already
parsed (lists split, addresses normalised, dollars turned into base units).

``load_settings()`` is the only entry point: it collects *every* problem into
one :class:`errors.ConfigError` so an operator fixes a config in one pass.
Placeholder values (``YOUR_..._HERE``, ``dev_..._change_in_production``,
``0xYOUR_...``) count as "not set" in development and are refused in
production; malformed values (bad EIP-55 checksum, a Solana key that is not 32
bytes of base58) are refused in every mode because money would go astray.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from watcher import errors

# These moved to watcher.money; re-exported so settings.usd_to_units & co. keep working.
from watcher.money import USDC_DECIMALS as USDC_DECIMALS
from watcher.money import USDC_UNIT as USDC_UNIT
from watcher.money import usd_to_units as usd_to_units

CANONICAL_USDC = {
    "ethereum": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
    "base": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    "solana": "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
}
# CAIP-2 id of Solana mainnet (the first 32 characters of its genesis hash), as x402 names it.
SOLANA_MAINNET_CAIP2 = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"

EvmChainName = Literal["base", "ethereum"]
ChainName = Literal["base", "ethereum", "solana"]
CHAINS: tuple[ChainName, ...] = ("base", "ethereum", "solana")

_PLACEHOLDER = re.compile(
    r"(YOUR_.*_HERE|^dev_.*_change_in_production$|^0xYOUR_|^YOUR_|CHANGE_?ME)", re.IGNORECASE
)
_HEX_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BASE58 = re.compile(r"^[1-9A-HJ-NP-Za-km-z]+$")
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

ADMIN_KEY_MIN_BITS = 256
ADMIN_KEY_HOWTO = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def is_placeholder(value: str | None) -> bool:
    """True for the template values shipped in example env files."""
    return bool(value) and bool(_PLACEHOLDER.search(value or ""))


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` only: RPC URLs often carry an API key in the path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def b58decode(value: str) -> bytes:
    """Decode base58 (Bitcoin alphabet); raises ValueError on foreign characters."""
    if not value or not _BASE58.match(value):
        raise ValueError("not base58")
    num = 0
    for ch in value:
        num = num * 58 + _B58_ALPHABET.index(ch)
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    pad = len(value) - len(value.lstrip("1"))
    return b"\x00" * pad + body


def parse_solana_keypair(text: str) -> bytes:
    """A 64-byte Solana keypair from base58 or a JSON array of ints; ValueError otherwise."""
    text = text.strip()
    if text.startswith("["):
        try:
            raw = bytes(json.loads(text))
        except (ValueError, TypeError) as exc:
            raise ValueError("not a JSON array of 64 byte values") from exc
    else:
        raw = b58decode(text)
    if len(raw) != 64:
        raise ValueError(f"{len(raw)} bytes, a keypair is 64")
    from solders.keypair import Keypair

    try:
        Keypair.from_bytes(raw)
    except ValueError as exc:
        raise ValueError("the public half does not match the secret half") from exc
    return raw


@functools.lru_cache(maxsize=8)
def _keypair_address(text: str) -> str:
    """The public half of a keypair, base58 (cached: every 402 names our fee payer)."""
    from solders.keypair import Keypair

    return str(Keypair.from_bytes(parse_solana_keypair(text)).pubkey())


def is_solana_pubkey(value: str) -> bool:
    try:
        return len(b58decode(value)) == 32
    except ValueError:
        return False


def evm_address_problem(value: str) -> str | None:
    """Why ``value`` is not a usable EVM address, or None when it is."""
    if not _HEX_ADDRESS.match(value):
        return "is not 0x followed by 40 hex digits"
    body = value[2:]
    if body.islower() or body.isupper() or body.isdigit():
        return None  # no checksum to verify
    from eth_utils.address import is_checksum_address

    if not is_checksum_address(value):
        return "has a bad EIP-55 checksum (a typo?); paste the address again or use all lowercase"
    return None


def estimate_key_bits(key: str) -> float:
    """Rough entropy estimate of a secret: length x log2(size of the alphabet it draws from)."""
    if not key:
        return 0.0
    if re.fullmatch(r"[0-9a-fA-F]+", key):
        alphabet = 16
    elif re.fullmatch(r"[0-9a-z]+", key) or re.fullmatch(r"[0-9A-Z]+", key):
        alphabet = 36
    elif re.fullmatch(r"[0-9A-Za-z_\-]+", key):
        alphabet = 64
    else:
        alphabet = 90
    distinct = len(set(key))
    if distinct < 8:  # "aaaa...", "abababab..." are long but guessable
        return distinct * 4.0
    return len(key) * math.log2(alphabet)


def _split(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(p.strip() for p in value.split(",") if p.strip())


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """Comma-separated addresses or CIDRs; ValueError naming the first bad one."""
    out: list[IpNetwork] = []
    for part in _split(text):
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or CIDR") from None
        # An IPv4-mapped IPv6 proxy (::ffff:10.0.0.1) is matched as the IPv4 it is.
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped:
            mapped = net.network_address.ipv4_mapped
            net = ipaddress.ip_network(f"{mapped}/{max(0, net.prefixlen - 96)}", strict=False)
        out.append(net)
    return tuple(out)


def default_data_dir() -> Path:
    """Per-user data dir; /var/lib for root, since the embedded PostgreSQL runs as a separate
    system user when started by root and must be able to reach its data (a root home is 0700)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/usdc-watcher")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "usdc-watcher"


class EvmChain(BaseModel):
    """One EVM chain as the follower sees it; addresses lowercase."""

    model_config = ConfigDict(frozen=True)

    name: EvmChainName
    chain_id: int
    rpc_urls: tuple[str, ...]
    ws_urls: tuple[str, ...]
    usdc: str
    receivers: tuple[str, ...]
    confirmations: int
    start_block: int | None

    @property
    def enabled(self) -> bool:
        return bool(self.rpc_urls and self.receivers)


class SolanaChain(BaseModel):
    """The Solana follower's view: the receiving owner (a wallet) and the USDC mint."""

    model_config = ConfigDict(frozen=True)

    name: Literal["solana"] = "solana"
    rpc_urls: tuple[str, ...]
    ws_urls: tuple[str, ...]
    usdc_mint: str
    owner: str | None
    commitment: Literal["finalized", "confirmed"]
    # Token accounts the operator lists besides the owner's associated one (issue 11, item 10)
    token_accounts: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.rpc_urls and self.owner)


class Settings(BaseSettings):
    """Every variable the daemon and API read. Field name = variable name, case-insensitive."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    watcher_env: Literal["development", "production"] = "development"
    watcher_data_dir: Path = Field(default_factory=default_data_dir)
    watcher_api_host: str = "127.0.0.1"
    watcher_api_port: int = Field(default=8000, ge=1, le=65535)
    watcher_metrics_host: str = "127.0.0.1"
    watcher_metrics_port: int = Field(default=9102, ge=0, le=65535)
    watcher_log_level: Literal["debug", "info", "warning", "error"] = "info"
    watcher_log_format: Literal["auto", "json", "console"] = "auto"
    # Proxies whose X-Forwarded-For is believed (addresses or CIDRs, comma-separated);
    # empty: the socket peer is the client (api/clientip.py, docs/operations.md).
    watcher_trusted_proxies: str = ""
    database_url: SecretStr | None = None

    x402_admin_key: SecretStr | None = None

    x402_base_payment_address: str | None = None
    x402_base_rpc_url: str | None = None
    x402_base_ws_url: str | None = None
    x402_base_usdc_address: str = CANONICAL_USDC["base"]
    x402_base_chain_id: int = 8453
    x402_base_confirmations: int = Field(default=6, ge=1, le=1000)
    x402_base_start_block: int | None = Field(default=None, ge=0)

    x402_ethereum_payment_address: str | None = None
    x402_ethereum_rpc_url: str | None = None
    x402_ethereum_ws_url: str | None = None
    x402_ethereum_usdc_address: str = CANONICAL_USDC["ethereum"]
    x402_ethereum_chain_id: int = 1
    x402_ethereum_confirmations: int = Field(default=12, ge=1, le=1000)
    x402_ethereum_start_block: int | None = Field(default=None, ge=0)

    x402_solana_payment_address: str | None = None
    x402_solana_rpc_url: str | None = None
    x402_solana_ws_url: str | None = None
    x402_solana_usdc_mint: str = CANONICAL_USDC["solana"]
    x402_solana_commitment: Literal["finalized", "confirmed"] = "finalized"
    x402_solana_token_accounts: str | None = None  # comma-separated, besides the ATA

    x402_min_payment_usd: Decimal = Decimal("0.10")
    x402_price_per_call: Decimal = Decimal("0.10")
    x402_token_expiry_hours: int = Field(default=24, ge=1, le=24 * 365)

    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_price_id_pro: str | None = None
    stripe_price_id_team: str | None = None
    stripe_price_id_enterprise: str | None = None
    # The Stripe rail (api/stripe_client.py, api/subscriptions.py; docs/stripe.md).
    stripe_automatic_tax: bool = False
    stripe_api_base: str = "https://api.stripe.com"
    stripe_success_url: str = "http://127.0.0.1:8000/api/v1/payments/success"
    stripe_cancel_url: str = "http://127.0.0.1:8000/api/v1/payments/canceled"
    stripe_portal_return_url: str = "http://127.0.0.1:8000/"
    stripe_past_due_grace_hours: int = Field(default=72, ge=0, le=24 * 60)

    # Standard x402 (`exact`, EIP-3009; api/x402_standard.py, watcher/settle.py): settle
    # with our relayer key, or forward to a facilitator; neither set = not offered.
    x402_relayer_private_key: SecretStr | None = None
    x402_facilitator_url: str | None = None
    x402_usdc_eip712_name: str = "USD Coin"  # USDC's EIP-712 domain on Base and Ethereum
    x402_usdc_eip712_version: str = "2"
    x402_settle_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    # Standard x402 on Solana (`exact`, api/x402_svm.py): the payer signs a TransferChecked
    # to our token account and we co-sign as fee payer with this key; unset = not offered.
    x402_solana_fee_payer_private_key: SecretStr | None = None
    x402_solana_network: str = SOLANA_MAINNET_CAIP2  # CAIP-2, as x402 clients name it
    x402_solana_max_priority_fee_lamports: int = Field(default=50_000, ge=0, le=10**9)

    # Optional error reporting (watcher/sentry.py); unset = off.
    sentry_dsn: SecretStr | None = None

    @property
    def production(self) -> bool:
        return self.watcher_env == "production"

    # ---- derived, parsed views -------------------------------------------------

    def _value(self, name: str) -> str | None:
        """A variable's value, with placeholders read as unset (development only reaches here)."""
        raw = getattr(self, name)
        text = raw.get_secret_value() if isinstance(raw, SecretStr) else raw
        if text is None or str(text).strip() == "" or is_placeholder(str(text)):
            return None
        return str(text).strip()

    def trusted_proxies(self) -> tuple[IpNetwork, ...]:
        """``WATCHER_TRUSTED_PROXIES`` parsed (validated at load: see problems())."""
        return parse_networks(self.watcher_trusted_proxies)

    def evm_chain(self, name: EvmChainName) -> EvmChain:
        p = f"x402_{name}_"
        return EvmChain(
            name=name,
            chain_id=getattr(self, p + "chain_id"),
            rpc_urls=_split(self._value(p + "rpc_url")),
            ws_urls=_split(self._value(p + "ws_url")),
            usdc=str(getattr(self, p + "usdc_address")).lower(),
            receivers=tuple(a.lower() for a in _split(self._value(p + "payment_address"))),
            confirmations=getattr(self, p + "confirmations"),
            start_block=getattr(self, p + "start_block"),
        )

    @property
    def base(self) -> EvmChain:
        return self.evm_chain("base")

    @property
    def ethereum(self) -> EvmChain:
        return self.evm_chain("ethereum")

    @property
    def solana(self) -> SolanaChain:
        return SolanaChain(
            rpc_urls=_split(self._value("x402_solana_rpc_url")),
            ws_urls=_split(self._value("x402_solana_ws_url")),
            usdc_mint=self.x402_solana_usdc_mint,
            owner=self._value("x402_solana_payment_address"),
            commitment=self.x402_solana_commitment,
            token_accounts=tuple(dict.fromkeys(_split(self._value("x402_solana_token_accounts")))),
        )

    @property
    def min_payment_units(self) -> int:
        return usd_to_units(self.x402_min_payment_usd)

    @property
    def price_per_call_units(self) -> int:
        return usd_to_units(self.x402_price_per_call)

    def relayer_key(self) -> str | None:
        """The x402 relayer's private key, or None while unset or a placeholder."""
        return self._value("x402_relayer_private_key")

    def solana_fee_payer_secret(self) -> bytes | None:
        """The Solana fee payer's 64-byte keypair (secret then public), or None while unset."""
        text = self._value("x402_solana_fee_payer_private_key")
        return None if text is None else parse_solana_keypair(text)

    def solana_fee_payer_address(self) -> str | None:
        """The fee payer's public key (base58), or None while unset; ValueError if malformed."""
        text = self._value("x402_solana_fee_payer_private_key")
        return None if text is None else _keypair_address(text)

    def admin_key(self) -> str | None:
        """The admin key, or None while it is unset or a placeholder (admin routes stay shut)."""
        if self.x402_admin_key is None:
            return None
        key = self.x402_admin_key.get_secret_value()
        return None if not key or is_placeholder(key) else key

    # ---- validation -------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every reason this configuration must not start, as ``VARIABLE: what; how to fix``."""
        out: list[str] = []
        if self.production:
            out += self._placeholder_problems()
            key = self.admin_key()
            if key is not None and estimate_key_bits(key) < ADMIN_KEY_MIN_BITS:
                out.append(
                    f"X402_ADMIN_KEY: too weak (~{estimate_key_bits(key):.0f} bits, "
                    f"need {ADMIN_KEY_MIN_BITS}); {ADMIN_KEY_HOWTO}"
                )
            if self.x402_admin_key is None:
                out.append(f"X402_ADMIN_KEY: not set; {ADMIN_KEY_HOWTO}")
        for name in ("base", "ethereum"):
            p = f"x402_{name}_"
            for addr in _split(self._value(p + "payment_address")):
                if why := evm_address_problem(addr):
                    out.append(f"{(p + 'payment_address').upper()}: {addr!r} {why}")
            usdc = str(getattr(self, p + "usdc_address"))
            if why := evm_address_problem(usdc):
                out.append(f"{(p + 'usdc_address').upper()}: {usdc!r} {why}")
            out += self._url_problems(p + "rpc_url", ("http", "https"))
            out += self._url_problems(p + "ws_url", ("ws", "wss"))
        owner = self._value("x402_solana_payment_address")
        if owner is not None and not is_solana_pubkey(owner):
            out.append(
                f"X402_SOLANA_PAYMENT_ADDRESS: {owner!r} is not a Solana public key "
                "(32 bytes of base58); copy the wallet address, not a token account or signature"
            )
        if not is_solana_pubkey(self.x402_solana_usdc_mint):
            out.append("X402_SOLANA_USDC_MINT: not 32 bytes of base58")
        for acct in _split(self._value("x402_solana_token_accounts")):
            if not is_solana_pubkey(acct):
                out.append(
                    f"X402_SOLANA_TOKEN_ACCOUNTS: {acct!r} is not a Solana public key; list "
                    "token account addresses (base58), comma-separated"
                )
            elif acct == owner:
                out.append(
                    "X402_SOLANA_TOKEN_ACCOUNTS: lists the wallet itself; list its USDC token "
                    "accounts (the associated one is always followed)"
                )
        out += self._url_problems("x402_solana_rpc_url", ("http", "https"))
        out += self._url_problems("x402_solana_ws_url", ("ws", "wss"))
        key = self.relayer_key()
        if key is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", key):
            out.append("X402_RELAYER_PRIVATE_KEY: not 32 bytes of hex; export the key as 0x...")
        out += self._url_problems("x402_facilitator_url", ("http", "https"))
        out += self._solana_x402_problems()
        out += self._money_problems()
        out += self._stripe_problems()
        try:
            self.trusted_proxies()
        except ValueError as exc:
            out.append(
                f"WATCHER_TRUSTED_PROXIES: {exc}; give addresses or CIDRs of your reverse "
                "proxies, comma-separated (e.g. 127.0.0.1,10.0.0.0/8), or leave it unset"
            )
        return out

    def _placeholder_problems(self) -> list[str]:
        out = []
        for name in type(self).model_fields:
            raw = getattr(self, name)
            text = raw.get_secret_value() if isinstance(raw, SecretStr) else raw
            if isinstance(text, str) and is_placeholder(text):
                shown = "<secret>" if isinstance(raw, SecretStr) else repr(text)
                out.append(
                    f"{name.upper()}: placeholder value {shown}; set the real value "
                    "or remove the variable"
                )
        return out

    def _url_problems(self, name: str, schemes: tuple[str, ...]) -> list[str]:
        out = []
        for url in _split(self._value(name)):
            parts = urlsplit(url)
            if parts.scheme not in schemes or not parts.hostname:
                out.append(
                    f"{name.upper()}: {redact_url(url)!r} is not a {'/'.join(schemes)} URL; "
                    "give a comma-separated list of full URLs, primary first"
                )
        return out

    def _stripe_problems(self) -> list[str]:
        """A Stripe key without what the rail needs would take money it cannot honour."""
        key = self._value("stripe_secret_key")
        if key is None:
            return []
        out = []
        if not key.startswith(("sk_", "rk_")):
            out.append("STRIPE_SECRET_KEY: not a Stripe secret key (sk_... or rk_...)")
        if self._value("stripe_webhook_secret") is None:
            out.append(
                "STRIPE_WEBHOOK_SECRET: required with STRIPE_SECRET_KEY (subscriptions are "
                "activated by the webhook); copy the endpoint's signing secret (whsec_...)"
            )
        tiers = ("stripe_price_id_pro", "stripe_price_id_team", "stripe_price_id_enterprise")
        if all(self._value(t) is None for t in tiers):
            out.append(
                "STRIPE_PRICE_ID_PRO|TEAM|ENTERPRISE: none set; give the price id (price_...) "
                "of at least one tier"
            )
        return out

    def _solana_x402_problems(self) -> list[str]:
        out = []
        try:
            self.solana_fee_payer_secret()
        except ValueError as exc:
            out.append(
                f"X402_SOLANA_FEE_PAYER_PRIVATE_KEY: {exc}; give the keypair as base58 "
                "(64 bytes, as wallets export it) or as the JSON array of solana-keygen"
            )
        if not re.fullmatch(r"solana:[1-9A-HJ-NP-Za-km-z]{32}", self.x402_solana_network):
            out.append(
                f"X402_SOLANA_NETWORK: {self.x402_solana_network!r} is not a CAIP-2 Solana "
                f"network; mainnet is {SOLANA_MAINNET_CAIP2}"
            )
        return out

    def _money_problems(self) -> list[str]:
        out = []
        for name in ("x402_min_payment_usd", "x402_price_per_call"):
            value: Decimal = getattr(self, name)
            try:
                units = usd_to_units(value)
            except (ValueError, InvalidOperation):
                out.append(f"{name.upper()}: {value} has more than 6 decimal places (USDC)")
                continue
            if units <= 0 and name == "x402_price_per_call":
                out.append(f"{name.upper()}: must be more than 0, e.g. 0.10")
            if units < 0:
                out.append(f"{name.upper()}: must not be negative")
        return out


_SECRET_NAMES = ("key", "secret", "database_url")


def _describe(err: Any) -> str:
    loc = err.get("loc") or ("?",)
    name = str(loc[0]).upper() if isinstance(loc, tuple) and loc else "?"
    shown = "<hidden>" if any(s in name.lower() for s in _SECRET_NAMES) else repr(err.get("input"))
    return f"{name}: {err.get('msg')} (got {shown})"


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the configuration; raises ConfigError listing every problem."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise errors.ConfigError([_describe(e) for e in exc.errors()]) from exc
    problems = settings.problems()
    if problems:
        raise errors.ConfigError(problems)
    return settings
