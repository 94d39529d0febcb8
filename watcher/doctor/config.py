"""Configuration rows of the doctor: every setting judged as if in production."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from watcher import chain_settings, keys, networks
from watcher import settings as cfg
from watcher.doctor import deployment, public_rpc
from watcher.doctor.report import Check, Status, mask_dsn, mask_secret, secret
from watcher.settings import Settings

STRIPE_PRICES_CENTS = {"pro": 8900, "team": 19900, "enterprise": 49900}


def settings_checks(settings: Settings) -> list[Check]:
    """Every setting judged as production, plus the ``Settings.problems()`` it would raise."""
    prod = settings.model_copy(update={"watcher_env": "production"})
    problems = prod.problems()
    rows = [_env_check(settings), _database_check(settings), _admin_key_check(settings)]
    # A network left off is a warning only while no network at all takes payments.
    none_on = not any(c.enabled for c in settings.evm_chains()) and not any(
        c.enabled for c in settings.solana_chains()
    )
    for net in networks.NETWORKS.values():
        if _raw(settings, _prefix(net) + "payment_address") is None and (
            _raw(settings, _prefix(net) + "rpc_url") is None
        ):
            rows.append(_chain_off(net, "warn" if none_on else "ok"))
        elif net.is_evm:
            rows += _evm_checks(settings, net)
        else:
            rows += _solana_checks(settings, net)
    if none_on:
        rows.append(deployment.no_receivers_check())
    rows.append(deployment.public_url_check(settings))
    rows += _money_checks(settings)
    rows += _stripe_checks(settings)
    # Attach each problem to its row (worsening it), or give it its own row.
    out: list[Check] = []
    used: set[str] = set()
    for row in rows:
        mine = [p for p in problems if p.split(":", 1)[0] == row.name]
        used.update(mine)
        if mine and row.status != "fail":
            fix = "; ".join(p.split(":", 1)[1].strip() for p in mine)
            row = Check(row.group, row.name, "fail", row.value, fix)
        out.append(row)
    for p in problems:
        if p not in used:
            name, _, why = p.partition(":")
            out.append(Check("settings", name, "fail", "", why.strip()))
    return out


def _env_check(s: Settings) -> Check:
    if s.production:
        return Check("settings", "WATCHER_ENV", "ok", "production")
    return Check(
        "settings",
        "WATCHER_ENV",
        "warn",
        s.watcher_env,
        "set WATCHER_ENV=production: placeholders and weak keys are then refused at start",
    )


def _database_check(s: Settings) -> Check:
    dsn = secret(s.database_url)
    if dsn is None:
        return Check(
            "settings",
            "DATABASE_URL",
            "warn",
            f"unset: embedded PostgreSQL in {s.watcher_data_dir}",
            "fine on one machine; set DATABASE_URL to a managed PostgreSQL for a standby "
            "watcher on another host and for backups",
        )
    scheme = urlsplit(dsn).scheme
    if scheme not in ("postgres", "postgresql"):
        return Check(
            "settings",
            "DATABASE_URL",
            "fail",
            mask_dsn(dsn),
            "use postgresql://user:password@host:5432/dbname",
        )
    return Check("settings", "DATABASE_URL", "ok", mask_dsn(dsn))


def _admin_key_check(s: Settings) -> Check:
    raw = secret(s.x402_admin_key)
    if raw is None:
        return Check("settings", "X402_ADMIN_KEY", "fail", "unset", cfg.ADMIN_KEY_HOWTO)
    if cfg.is_placeholder(raw):
        return Check("settings", "X402_ADMIN_KEY", "fail", "placeholder", cfg.ADMIN_KEY_HOWTO)
    bits = keys.estimate_key_bits(raw)
    value = f"set, {len(raw)} chars, ~{bits:.0f} bits"
    if bits < cfg.ADMIN_KEY_MIN_BITS:
        return Check(
            "settings",
            "X402_ADMIN_KEY",
            "fail",
            value,
            f"need ~{cfg.ADMIN_KEY_MIN_BITS} bits; {cfg.ADMIN_KEY_HOWTO}",
        )
    return Check("settings", "X402_ADMIN_KEY", "ok", value)


def _raw(s: Settings, name: str) -> str | None:
    value = getattr(s, name)
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return None if text is None or str(text).strip() == "" else str(text).strip()


def _prefix(row: networks.Network) -> str:
    return chain_settings.prefix(row)


def _evm_checks(s: Settings, row: networks.Network) -> list[Check]:
    p = _prefix(row)
    up = p.upper()
    view = s.evm_chain(row.name)
    rows = [_receiver_check(s, p + "payment_address", f"{row.name} payments are not watched")]
    rows.append(_rpc_url_check(s, p + "rpc_url", bool(view.receivers)))
    rows += _ws_url_check(s, p + "ws_url")
    usdc = str(s.raw(p + "usdc_address"))
    on_network = view.chain_id == row.chain_id
    if on_network and usdc.lower() != row.usdc.lower():
        rows.append(
            Check(
                "settings",
                up + "USDC_ADDRESS",
                "fail",
                usdc,
                f"on chain id {view.chain_id} USDC is {row.usdc}: a look-alike token would "
                "be credited as money; remove the variable",
            )
        )
    else:
        rows.append(Check("settings", up + "USDC_ADDRESS", "ok", usdc))
    if not on_network:
        rows.append(
            Check(
                "settings",
                up + "CHAIN_ID",
                "warn",
                str(view.chain_id),
                f"{row.title} is chain id {row.chain_id}; fine for a local chain only",
            )
        )
    if row.confirmations is not None and view.confirmations < row.confirmations:
        rows.append(
            Check(
                "settings",
                up + "CONFIRMATIONS",
                "warn",
                str(view.confirmations),
                f"below the default {row.confirmations}: a reorg can undo a credit",
            )
        )
    return rows


def _chain_off(row: networks.Network, status: Status) -> Check:
    up = _prefix(row).upper()
    return Check(
        "settings",
        up + "*",
        status,
        f"{row.name} off (no receiving address, no RPC URL)",
        f"to accept payments on {row.title}, set {up}PAYMENT_ADDRESS and {up}RPC_URL",
    )


def _receiver_check(s: Settings, name: str, disabled: str) -> Check:
    raw = _raw(s, name)
    if raw is None:
        # Only asked when the network's RPC URL is set: a network followed for nothing.
        rpc = name.removesuffix("payment_address").upper() + "RPC_URL"
        fix = (
            f"{disabled}, yet {rpc} is set; set your receiving address (a hardware wallet or "
            f"multisig on EVM, a wallet you hold the keypair of on Solana) or unset {rpc}"
        )
        return Check("settings", name.upper(), "fail", "unset", fix)
    if cfg.is_placeholder(raw):
        return Check("settings", name.upper(), "fail", repr(raw), "set your receiving address")
    return Check("settings", name.upper(), "ok", raw)


def _rpc_url_check(s: Settings, name: str, receiving: bool) -> Check:
    raw = _raw(s, name)
    if raw is None:
        # A receiving address without an RPC URL: payers pay, nothing is credited.
        status: Status = "fail" if receiving else "warn"
        return Check("settings", name.upper(), status, "unset", "set one or more RPC URLs")
    if cfg.is_placeholder(raw):
        return Check("settings", name.upper(), "fail", "placeholder", "set your provider's URL")
    urls = [u.strip() for u in raw.split(",") if u.strip()]
    if (public := public_rpc.url_check(name, urls, s.production)) is not None:
        return public
    shown = ", ".join(keys.redact_url(u) for u in urls)
    plain = [u for u in urls if _plain_remote(u)]
    if plain:
        return Check(
            "settings",
            name.upper(),
            "warn",
            shown,
            "plain http to a remote host: anyone on the path can read the API key and alter "
            "answers; use https",
        )
    if len(urls) == 1:
        return Check(
            "settings",
            name.upper(),
            "warn",
            shown,
            "one endpoint only: add a fallback from another provider, comma-separated",
        )
    return Check("settings", name.upper(), "ok", shown)


def _ws_url_check(s: Settings, name: str) -> list[Check]:
    raw = _raw(s, name)
    if raw is None or cfg.is_placeholder(raw):
        return []  # optional; a placeholder is already a problem row
    urls = [u.strip() for u in raw.split(",") if u.strip()]
    public = public_rpc.url_check(name, urls, s.production)
    shown = ", ".join(keys.redact_url(u) for u in urls)
    return [public or Check("settings", name.upper(), "ok", shown)]


def _plain_remote(url: str) -> bool:
    parts = urlsplit(url)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1") or str(parts.hostname).endswith(
        ".internal"
    )
    return parts.scheme in ("http", "ws") and not local


def _solana_checks(s: Settings, row: networks.Network) -> list[Check]:
    p = _prefix(row)
    up = p.upper()
    view = s.solana_chain(row.name)
    rows = [_receiver_check(s, p + "payment_address", f"{row.title} payments are not watched")]
    rows.append(_rpc_url_check(s, p + "rpc_url", view.owner is not None))
    rows += _ws_url_check(s, p + "ws_url")
    if view.usdc_mint != row.usdc:
        rows.append(
            Check(
                "settings",
                up + "USDC_MINT",
                "warn",
                view.usdc_mint,
                f"{row.title} USDC is {row.usdc}; fine for a local cluster only",
            )
        )
    if view.commitment != "finalized":
        rows.append(
            Check(
                "settings",
                up + "COMMITMENT",
                "warn",
                view.commitment,
                f"credit only finalized slots: set {up}COMMITMENT=finalized",
            )
        )
    return rows


def _money_checks(s: Settings) -> list[Check]:
    rows = []
    for name, value in (
        ("X402_MIN_PAYMENT_USD", s.x402_min_payment_usd),
        ("X402_PRICE_PER_CALL", s.x402_price_per_call),
    ):
        rows.append(Check("settings", name, "ok", f"${value}"))
    if s.x402_price_per_call > 0 and s.x402_min_payment_usd < s.x402_price_per_call:
        rows.append(
            Check(
                "settings",
                "X402_MIN_PAYMENT_USD",
                "warn",
                f"${s.x402_min_payment_usd} < price ${s.x402_price_per_call}",
                "a payment below the price of one call buys nothing; raise the minimum",
            )
        )
    return rows


def stripe_mode(key: str) -> Literal["live", "test"] | None:
    """``live``/``test`` from a secret or restricted key's prefix, None when it has neither."""
    for prefix in ("sk_", "rk_"):
        if key.startswith(prefix + "live_"):
            return "live"
        if key.startswith(prefix + "test_"):
            return "test"
    return None


def _stripe_checks(s: Settings) -> list[Check]:
    key = secret(s.stripe_secret_key)
    if key is None:
        return [
            Check(
                "stripe",
                "STRIPE_SECRET_KEY",
                "warn",
                "unset",
                "card subscriptions are off; set STRIPE_* to enable the second rail",
            )
        ]
    rows = [_stripe_key_check(key)]
    hook = secret(s.stripe_webhook_secret)
    if hook is None or cfg.is_placeholder(hook) or not hook.startswith("whsec_"):
        shown = "unset" if hook is None else ("placeholder" if cfg.is_placeholder(hook) else "")
        rows.append(
            Check(
                "stripe",
                "STRIPE_WEBHOOK_SECRET",
                "fail",
                shown or mask_secret(hook or "", 6),
                "copy the endpoint's signing secret (whsec_...) from Dashboard → Webhooks",
            )
        )
    else:
        rows.append(Check("stripe", "STRIPE_WEBHOOK_SECRET", "ok", mask_secret(hook, 6)))
    for tier in STRIPE_PRICES_CENTS:
        name = f"STRIPE_PRICE_ID_{tier.upper()}"
        price = _raw(s, name.lower())
        if price is None or cfg.is_placeholder(price) or not price.startswith("price_"):
            rows.append(
                Check(
                    "stripe",
                    name,
                    "fail",
                    "unset" if price is None else repr(price),
                    f"create a ${STRIPE_PRICES_CENTS[tier] // 100}/month price and paste its "
                    "id (price_...)",
                )
            )
    return rows


def _stripe_key_check(key: str) -> Check:
    name = "STRIPE_SECRET_KEY"
    if cfg.is_placeholder(key):
        return Check(
            "stripe", name, "fail", "placeholder", "paste the key from Dashboard → API keys"
        )
    mode = stripe_mode(key)
    if mode is None:
        return Check(
            "stripe",
            name,
            "fail",
            mask_secret(key, 3),
            "a secret key starts with sk_live_/sk_test_ (restricted: rk_live_/rk_test_)",
        )
    if mode == "test":
        return Check(
            "stripe",
            name,
            "fail",
            mask_secret(key),
            "test mode: no real charges; use the live key (sk_live_...) in production",
        )
    return Check("stripe", name, "ok", mask_secret(key))
