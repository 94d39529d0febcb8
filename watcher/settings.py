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
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import pydantic
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from watcher import chain_settings, errors, keys, networks, public_url
from watcher.chain_settings import EvmChain, SolanaChain

# These moved to watcher.money; re-exported so settings.usd_to_units & co. keep working.
from watcher.money import USDC_DECIMALS as USDC_DECIMALS
from watcher.money import USDC_UNIT as USDC_UNIT
from watcher.money import usd_to_units as usd_to_units
from watcher.webhooks import schedule

_PLACEHOLDER = re.compile(
    r"(YOUR_.*_HERE|^dev_.*_change_in_production$|^0xYOUR_|^YOUR_|CHANGE_?ME)", re.IGNORECASE
)

ADMIN_KEY_MIN_BITS = 256
ADMIN_KEY_HOWTO = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"

__all__ = ["EvmChain", "Settings", "SolanaChain", "load_settings"]


def is_placeholder(value: str | None) -> bool:
    """True for the template values shipped in example env files."""
    return bool(value) and bool(_PLACEHOLDER.search(value or ""))


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """Comma-separated addresses or CIDRs; ValueError naming the first bad one."""
    out: list[IpNetwork] = []
    for part in chain_settings.split(text):
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


# The per-network variables (X402_<NETWORK>_*) are generated from the registry; the type
# checker sees plain BaseSettings and code reads them through the views below.
if TYPE_CHECKING:
    _NetworkVariables = BaseSettings
else:
    _NetworkVariables = pydantic.create_model(
        "_NetworkVariables", __base__=BaseSettings, **chain_settings.fields()
    )


class Settings(_NetworkVariables):
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
    # The address payers reach the API at (behind TLS termination): every absolute URL the
    # API hands out starts with it (watcher/public_url.py); unset = the request's Host.
    watcher_public_url: str | None = None
    # Proxies whose X-Forwarded-For is believed (addresses or CIDRs, comma-separated);
    # empty: the socket peer is the client (api/clientip.py, docs/operations.md).
    watcher_trusted_proxies: str = ""
    # Private networks webhooks may reach after all (addresses or CIDRs, comma-separated);
    # empty: only public addresses, and loopback in development (watcher/webhooks/netguard.py).
    watcher_webhook_allow_networks: str = ""
    # A comment line on a quiet invoice event stream this often, so proxies keep it open
    # (GET /x402/invoices/{id}/events; docs/webhooks.md).
    watcher_sse_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    # Invoice event streams one API process serves at once (more are answered 503); each
    # holds a socket, and a wake-up makes each read the invoice.
    watcher_sse_max_streams: int = Field(default=1000, ge=1, le=100_000)
    # ... and one client holds at once (its address, an IPv6 /64: api/ratelimit.py); a
    # checkout page needs one, a reconnecting payer a few (more are answered 429).
    watcher_sse_max_streams_per_client: int = Field(default=8, ge=1, le=100_000)
    database_url: SecretStr | None = None
    # The gateway (docs/gateway.md): the TOML file of upstreams and priced routes, read by
    # watcher/gateway_config.py at `watcher run` / `watcher api`; unset = no gateway.
    watcher_gateway_config: Path | None = None
    # The default HMAC key the upstreams verify X-Payment-Signature with.
    watcher_gateway_secret: SecretStr | None = None
    # The gateway on a listener of its own (so admin routes need not be public); both
    # unset = the gateway's routes are served by the main API.
    watcher_gateway_host: str | None = None
    watcher_gateway_port: int | None = Field(default=None, ge=1, le=65535)
    # Scheduled jobs the daemon runs on one process, the jobs leader (watcher/jobs.py,
    # docs/operations.md): seconds between runs, 0 = off; each run is cut off after the
    # timeout (its transaction rolls back).
    watcher_job_analytics_seconds: float = Field(default=600.0, ge=0, le=7 * 86400)
    watcher_job_cleanup_seconds: float = Field(default=300.0, ge=0, le=7 * 86400)
    watcher_job_stripe_sync_seconds: float = Field(default=3600.0, ge=0, le=7 * 86400)
    watcher_job_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)

    x402_admin_key: SecretStr | None = None

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

    # Standard x402 (`exact`, EIP-3009; api/x402/): settle
    # with our relayer key, or forward to a facilitator; neither set = not offered.
    x402_relayer_private_key: SecretStr | None = None
    x402_facilitator_url: str | None = None
    # The EIP-712 domain of a local chain's stand-in USDC (an EVM network whose chain id is
    # overridden). A live network always signs its token's own domain (the registry row,
    # or X402_<NETWORK>_USDC_EIP712_NAME/_VERSION): one global name would give Base's
    # "USD Coin" to the testnets' "USDC" tokens, and every authorization would fail.
    x402_usdc_eip712_name: str | None = None
    x402_usdc_eip712_version: str | None = None
    x402_settle_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    # Standard x402 on Solana (`exact`, api/x402/svm_*.py): the payer signs a TransferChecked
    # to our token account and we co-sign as fee payer with this key; unset = not offered.
    # (the fee payer's key is per network: X402_<NETWORK>_FEE_PAYER_PRIVATE_KEY)
    x402_solana_max_priority_fee_lamports: int = Field(default=50_000, ge=0, le=10**9)

    # ---- refunds solana (issue 16) ----------------------------------------------
    # The Solana refund wallet (watcher/refunds/solana.py, docs/holds-and-refunds.md): the
    # keypair that signs refunds (base58 or solana-keygen's JSON array, as the fee payer's),
    # or, with no key, the address a hardware wallet or multisig signs exported messages as.
    # It pays the fees and the rent of a payer's token account it has to create.
    x402_refund_solana_keypair: SecretStr | None = None
    x402_refund_solana_address: str | None = None

    def refund_solana_secret(self) -> bytes | None:
        """The Solana refund wallet's keypair (64 bytes), or None when refunds are exported."""
        text = self.value("x402_refund_solana_keypair")
        return None if text is None else keys.parse_solana_keypair(text)

    def refund_solana_address(self) -> str | None:
        """Who signs Solana refunds: the keypair's public key, else the configured address."""
        text = self.value("x402_refund_solana_keypair")
        return keys.keypair_address(text) if text else self.value("x402_refund_solana_address")

    def _refund_solana_problems(self) -> list[str]:
        secret, address = (
            self.value("x402_refund_solana_keypair"),
            self.value("x402_refund_solana_address"),
        )
        if address is not None and not keys.is_solana_pubkey(address):
            return ["X402_REFUND_SOLANA_ADDRESS: not a Solana public key (32 bytes of base58)"]
        if secret is None:
            return []
        try:
            mine = keys.keypair_address(secret)
        except ValueError as exc:
            return [
                f"X402_REFUND_SOLANA_KEYPAIR: {exc}; give the keypair as base58 (64 bytes, "
                "as wallets export it) or as the JSON array of solana-keygen"
            ]
        if address is not None and address != mine:
            return [
                f"X402_REFUND_SOLANA_ADDRESS: {address} is not the keypair's address ({mine}); "
                "unset it (the keypair names the wallet) or fix one of the two"
            ]
        return []

    # ---- end refunds solana -----------------------------------------------------

    # Webhook delivery (watcher/webhooks/, docs/webhooks.md): the delays after each failed
    # attempt, the time an attempt may take, how long an endpoint may fail before it is
    # disabled, and how many attempts one daemon makes at once.
    watcher_webhook_retry_schedule: str = schedule.DEFAULT
    watcher_webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    watcher_webhook_disable_after_hours: float = Field(default=120.0, gt=0, le=24 * 365)
    watcher_webhook_concurrency: int = Field(default=32, ge=1, le=1000)
    # Of which one endpoint may hold at once (a receiver answering only at the timeout
    # must not hold every slot while the others' events wait).
    watcher_webhook_concurrency_per_endpoint: int = Field(default=8, ge=1, le=1000)

    # Optional error reporting (watcher/sentry.py); unset = off.
    sentry_dsn: SecretStr | None = None

    # ---- screening (issue 16)
    # What is held for an operator's look before it is credited, and which x402 payers are
    # refused (watcher/screening/, docs/holds-and-refunds.md "Screening rules"): a deny-list
    # file (a plain list, OFAC's SDN_ADVANCED.XML or sdn.csv; unset = none) and the age after
    # which doctor calls it stale (0 = never); a payment first seen more than this many days
    # after its block is held, and a credited one no longer claimable (0 = off); a payment
    # above this many dollars is held for review (unset = off); Chainalysis's sanctions
    # oracle on every EVM network with an address, its answers kept this many seconds.
    x402_denylist_file: Path | None = None
    x402_denylist_max_age_days: int = Field(default=30, ge=0, le=3650)
    x402_max_payment_age_days: int = Field(default=7, ge=0, le=3650)
    x402_hold_above_usd: Decimal | None = None
    x402_sanctions_oracle: bool = False
    x402_sanctions_oracle_ttl_seconds: int = Field(default=86400, ge=0, le=30 * 86400)

    def _screening_problems(self) -> list[str]:
        """The threshold is exact dollars; the deny-list file can be read (it is parsed at
        start, by watcher/screening/settings_screen.py, which names it on failure)."""
        out: list[str] = []
        hold = self.x402_hold_above_usd
        if hold is not None:
            try:
                units = usd_to_units(hold)
            except ValueError as exc:
                units = 0
                out.append(
                    f"X402_HOLD_ABOVE_USD: {hold} {exc} (USDC has 6); give dollars like 500 "
                    "or 499.99, or unset it"
                )
            if units < 0:
                out.append(
                    "X402_HOLD_ABOVE_USD: must not be negative; give the amount above which "
                    "a payment waits for review, or unset it"
                )
        text = self.value("x402_denylist_file")
        path = None if text is None else Path(text).expanduser()
        if path is not None and (not path.is_file() or not os.access(path, os.R_OK)):
            why = "is not a readable file" if path.exists() else "does not exist"
            out.append(
                f"X402_DENYLIST_FILE: {path} {why}; point it at a deny-list (a plain list, "
                "OFAC's SDN_ADVANCED.XML or sdn.csv), or unset it"
            )
        return out

    # ---- refunds (issue 16) ---------------------------------------------------------
    # watcher/refunds/, docs/holds-and-refunds.md "Refunds". The key of the refund wallet
    # on every EVM network (unset = refunds are exported for an outside signer); or only
    # its address (a hardware wallet or a Safe that signs the exports); the smallest
    # over-payment worth a refund's gas; how often the daemon's sender runs.
    x402_refund_evm_private_key: SecretStr | None = None
    x402_refund_evm_address: str | None = None
    x402_refund_min_usd: Decimal = Field(default=Decimal("0.10"), ge=0)
    x402_refund_interval_seconds: float = Field(default=15.0, gt=0, le=3600)

    def refund_evm_key(self) -> str | None:
        """The EVM refund wallet's private key, or None while unset or a placeholder."""
        return self.value("x402_refund_evm_private_key")

    def refund_evm_wallet(self) -> str | None:
        """The EVM refund wallet (lowercase): the key's address, else the configured one."""
        key = self.refund_evm_key()
        if key is not None and re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", key):
            return keys.evm_address_of(key)
        address = self.value("x402_refund_evm_address")
        return address.lower() if address else None

    def _refund_problems(self) -> list[str]:
        out: list[str] = []
        key = self.refund_evm_key()
        if key is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", key):
            return ["X402_REFUND_EVM_PRIVATE_KEY: not 32 bytes of hex; export the key as 0x..."]
        address = self.value("x402_refund_evm_address")
        if address is not None and not re.fullmatch(r"0x[0-9a-fA-F]{40}", address):
            out.append("X402_REFUND_EVM_ADDRESS: not an EVM address; give 0x and 40 hex digits")
        elif (
            key is not None and address is not None and address.lower() != keys.evm_address_of(key)
        ):
            out.append(
                "X402_REFUND_EVM_ADDRESS: is not the address of X402_REFUND_EVM_PRIVATE_KEY; "
                "set one of them (the key's address is the refund wallet)"
            )
        relayer = self.relayer_key()
        if (
            key is not None
            and relayer is not None
            and re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", relayer)
        ) and keys.evm_address_of(relayer) == keys.evm_address_of(key):
            out.append(
                "X402_REFUND_EVM_PRIVATE_KEY: is the x402 relayer's key; give refunds their "
                "own wallet (each keeps its own nonces: one account for both would collide)"
            )
        return out

    @property
    def production(self) -> bool:
        return self.watcher_env == "production"

    # ---- derived, parsed views -------------------------------------------------

    def value(self, name: str) -> str | None:
        """A variable's value by field name, with placeholders read as unset (development only
        reaches here: production refuses placeholders at load)."""
        raw = getattr(self, name)
        text = raw.get_secret_value() if isinstance(raw, SecretStr) else raw
        if text is None or str(text).strip() == "" or is_placeholder(str(text)):
            return None
        return str(text).strip()

    def raw(self, name: str) -> Any:
        """A variable's parsed value by field name (per-network variables are generated)."""
        return getattr(self, name)

    def trusted_proxies(self) -> tuple[IpNetwork, ...]:
        """``WATCHER_TRUSTED_PROXIES`` parsed (validated at load: see problems())."""
        return parse_networks(self.watcher_trusted_proxies)

    def webhook_schedule(self) -> schedule.Schedule:
        """The retry delays in seconds (ValueError if the variable is malformed)."""
        return schedule.parse(self.watcher_webhook_retry_schedule)

    def webhook_allow_networks(self) -> tuple[IpNetwork, ...]:
        """``WATCHER_WEBHOOK_ALLOW_NETWORKS`` parsed (validated at load: see problems())."""
        return parse_networks(self.watcher_webhook_allow_networks)

    def evm_chain(self, name: str) -> EvmChain:
        """An EVM network's view; KeyError for a name that is not an EVM row."""
        row = networks.get(name)
        if not row.is_evm:
            raise KeyError(f"{name} is not an EVM network")
        view = chain_settings.evm_view(row, self.value, self.raw)
        if view.chain_id == row.chain_id:
            return view
        return view.model_copy(
            update={
                "eip712_name": view.eip712_name or self.value("x402_usdc_eip712_name"),
                "eip712_version": view.eip712_version or self.value("x402_usdc_eip712_version"),
            }
        )

    def solana_chain(self, name: str) -> SolanaChain:
        """A Solana network's view; KeyError for a name that is not a Solana row."""
        row = networks.get(name)
        if not row.is_solana:
            raise KeyError(f"{name} is not a Solana network")
        return chain_settings.solana_view(row, self.value, self.raw)

    def chain(self, name: str) -> EvmChain | SolanaChain:
        """Any network's view, by registry name."""
        if networks.get(name).is_evm:
            return self.evm_chain(name)
        return self.solana_chain(name)

    def evm_chains(self) -> list[EvmChain]:
        """Every EVM row's view, in registry order (enabled or not)."""
        return [self.evm_chain(row.name) for row in networks.of_family("evm")]

    def solana_chains(self) -> list[SolanaChain]:
        """Every Solana row's view, in registry order (enabled or not)."""
        return [self.solana_chain(row.name) for row in networks.of_family("solana")]

    @property
    def min_payment_units(self) -> int:
        return usd_to_units(self.x402_min_payment_usd)

    @property
    def price_per_call_units(self) -> int:
        return usd_to_units(self.x402_price_per_call)

    def relayer_key(self) -> str | None:
        """The x402 relayer's private key, or None while unset or a placeholder."""
        return self.value("x402_relayer_private_key")

    def solana_fee_payer_secret(self, name: str) -> bytes | None:
        """A Solana network's fee payer keypair (64 bytes, secret then public), or None."""
        text = self.value(chain_settings.prefix(networks.get(name)) + "fee_payer_private_key")
        return None if text is None else keys.parse_solana_keypair(text)

    def solana_fee_payer_address(self, name: str) -> str | None:
        """The fee payer's public key (base58), or None while unset; ValueError if malformed."""
        text = self.value(chain_settings.prefix(networks.get(name)) + "fee_payer_private_key")
        return None if text is None else keys.keypair_address(text)

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
            if key is not None and keys.estimate_key_bits(key) < ADMIN_KEY_MIN_BITS:
                out.append(
                    f"X402_ADMIN_KEY: too weak (~{keys.estimate_key_bits(key):.0f} bits, "
                    f"need {ADMIN_KEY_MIN_BITS}); {ADMIN_KEY_HOWTO}"
                )
            if self.x402_admin_key is None:
                out.append(f"X402_ADMIN_KEY: not set; {ADMIN_KEY_HOWTO}")
            out += chain_settings.testnet_problems(self.value)
            out += self._gateway_secret_problems()
        out += chain_settings.problems(self.value, self.raw)
        key = self.relayer_key()
        if key is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", key):
            out.append("X402_RELAYER_PRIVATE_KEY: not 32 bytes of hex; export the key as 0x...")
        out += chain_settings.url_problems("x402_facilitator_url", self.value, ("http", "https"))
        out += public_url.problems(self.value("watcher_public_url"), self.production)
        out += self._money_problems()
        out += self._screening_problems()
        out += self._refund_solana_problems()  # refunds solana (issue 16)
        out += self._stripe_problems()
        out += self._gateway_listener_problems()
        out += self._database_url_problems()
        out += self._refund_problems()
        try:
            self.webhook_schedule()
        except ValueError as exc:
            out.append(
                f"WATCHER_WEBHOOK_RETRY_SCHEDULE: {exc}; give delays like {schedule.DEFAULT}"
            )
        try:
            self.trusted_proxies()
        except ValueError as exc:
            out.append(
                f"WATCHER_TRUSTED_PROXIES: {exc}; give addresses or CIDRs of your reverse "
                "proxies, comma-separated (e.g. 127.0.0.1,10.0.0.0/8), or leave it unset"
            )
        try:
            self.webhook_allow_networks()
        except ValueError as exc:
            out.append(
                f"WATCHER_WEBHOOK_ALLOW_NETWORKS: {exc}; give the private networks webhooks "
                "may reach as addresses or CIDRs, comma-separated (e.g. 10.20.0.0/16), "
                "or leave it unset"
            )
        return out

    def _gateway_secret_problems(self) -> list[str]:
        secret = self.value("watcher_gateway_secret")
        if secret is None or keys.estimate_key_bits(secret) >= ADMIN_KEY_MIN_BITS:
            return []
        return [
            f"WATCHER_GATEWAY_SECRET: too weak (~{keys.estimate_key_bits(secret):.0f} bits, "
            f"need {ADMIN_KEY_MIN_BITS}); {ADMIN_KEY_HOWTO}"
        ]

    def _gateway_listener_problems(self) -> list[str]:
        host, port = self.watcher_gateway_host, self.watcher_gateway_port
        if host is not None and not host.strip():
            host = None
        if (host is None) != (port is None):
            return [
                "WATCHER_GATEWAY_HOST|PORT: set both (the gateway's own listener) or neither "
                "(the gateway is served by the main API)"
            ]
        if port is not None and host == self.watcher_api_host and port == self.watcher_api_port:
            return ["WATCHER_GATEWAY_PORT: the same address as the API; pick another port"]
        return []

    def _database_url_problems(self) -> list[str]:
        """A DATABASE_URL asyncpg cannot even parse is a typo: name it (as typed, password
        hidden) and show the form, instead of a connect error from deep inside."""
        if self.database_url is None:
            return []
        dsn = self.database_url.get_secret_value().strip()
        try:
            parts = urlsplit(dsn)
            ok = "://" in dsn and parts.scheme in ("postgresql", "postgres")
            for host in parts.netloc.rpartition("@")[2].split(","):  # asyncpg: h1:p1,h2:p2
                port = host.rpartition(":")[2] if ":" in host.rpartition("]")[2] else ""
                ok = ok and (port == "" or port.isdigit())
        except ValueError:
            ok = False
        if ok:
            return []
        return [
            f"DATABASE_URL: {keys.redact_typed(dsn, keep_path=True)!r} is not a PostgreSQL URL; "
            "write it as postgresql://user:password@host:5432/dbname, or unset it to use "
            "the embedded PostgreSQL"
        ]

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

    def _stripe_problems(self) -> list[str]:
        """A Stripe key without what the rail needs would take money it cannot honour."""
        key = self.value("stripe_secret_key")
        if key is None:
            return []
        out = []
        if not key.startswith(("sk_", "rk_")):
            out.append("STRIPE_SECRET_KEY: not a Stripe secret key (sk_... or rk_...)")
        if self.value("stripe_webhook_secret") is None:
            out.append(
                "STRIPE_WEBHOOK_SECRET: required with STRIPE_SECRET_KEY (subscriptions are "
                "activated by the webhook); copy the endpoint's signing secret (whsec_...)"
            )
        tiers = ("stripe_price_id_pro", "stripe_price_id_team", "stripe_price_id_enterprise")
        if all(self.value(t) is None for t in tiers):
            out.append(
                "STRIPE_PRICE_ID_PRO|TEAM|ENTERPRISE: none set; give the price id (price_...) "
                "of at least one tier"
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
