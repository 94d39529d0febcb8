"""``watcher doctor``: is this configuration ready for production? One row per check.

Each row has a status (✓ ok, ⚠ warn, ✗ fail), the value found with secrets
masked, and the fix; then a score and a verdict. The configuration is always
judged *as production* (placeholders, weak keys and test-mode Stripe keys count
even while ``WATCHER_ENV=development``), so the report says what must change
before going live. One exception: a free public RPC endpoint (``public_rpc``) is
a warning in development, where trying a testnet on one is fine. Production-ready
(exit 0) means no ✗ and ``WATCHER_ENV=production``.

Modules: ``report`` (rows, masking, score, rendering), ``config`` (settings
rows), ``public_rpc`` (the free public RPC hosts), ``deployment`` (a network
taking payments, the public URL), ``probes`` (RPC, contracts, database),
``stripe_probe``, ``gateway`` (the gateway file's routes and upstreams), ``screening``
(the deny-list file, the sanctions oracle), ``refunds`` (the refund wallet's gas and
USDC). Network probes
run concurrently, each under its own seconds, so the doctor never hangs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

import httpx
from pydantic import ValidationError

from watcher import keys
from watcher.doctor import (
    config,
    gateway,
    probes,
    refunds,
    refunds_solana,
    report,
    solana_accounts,
    stripe_probe,
)
from watcher.doctor import screening as screening_rows
from watcher.doctor.report import Check
from watcher.settings import EvmChain, Settings, SolanaChain

DEFAULT_SECONDS = 5.0


async def examine(
    settings: Settings,
    *,
    seconds: float = DEFAULT_SECONDS,
    transport: httpx.AsyncBaseTransport | None = None,
    stripe_api_base: str | None = None,
) -> list[Check]:
    """Every check for ``settings``: the settings rows, then the network probes' rows."""
    rows = config.settings_checks(settings)
    gateway_file, gateway_rows = gateway.load(settings)
    rows += gateway_rows
    pending: list[Awaitable[list[Check]]] = []

    def add(group: str, name: str, probe: Awaitable[list[Check]]) -> None:
        pending.append(probes.guarded(group, name, probe, seconds))

    for chain in settings.evm_chains():
        _evm_probes(chain, add, seconds, transport)
        if refunds.applies(settings, chain):
            add(
                "refunds",
                f"{chain.name} refund wallet",
                refunds.wallet_rows(settings, chain, seconds, transport),
            )
    for sol in settings.solana_chains():
        _solana_probes(settings, sol, add, seconds, transport)
    # The embedded server may need initdb on a cold start: give it longer.
    pending.append(
        probes.guarded("database", "PostgreSQL", probes.database(settings, seconds), 6 * seconds)
    )
    if stripe_probe.should_probe(settings):
        # STRIPE_API_BASE (a local fake, a proxy) is honoured as the API process honours it.
        base = stripe_api_base or settings.stripe_api_base
        add("stripe", "Stripe API", stripe_probe.stripe_rows(settings, seconds, base))
    for upstream in gateway_file.upstreams.values() if gateway_file else ():
        add("gateway", f"upstream {upstream.name}", gateway.upstream_rows(upstream))
    # Parsing OFAC's whole XML takes seconds: its own, longer, bound.
    file_rows = screening_rows.denylist_rows(settings)
    pending.append(probes.guarded("screening", "deny-list file", file_rows, 12 * seconds))
    rows += screening_rows.oracle_setting_rows(settings)
    for chain in screening_rows.oracle_networks(settings):
        name = f"{chain.name} sanctions oracle"
        add("screening", name, screening_rows.oracle_probe(chain, seconds, transport))
    for found in await asyncio.gather(*pending):
        rows += found
    for sol in settings.solana_chains():
        if sol.rpc_urls and sol.owner:
            # After the others: it may open the embedded database the database probe used.
            probe = solana_accounts.token_account_rows(settings, sol.name, seconds, transport)
            name = f"{sol.name} token accounts"
            rows += await probes.guarded("contracts", name, probe, 6 * seconds)
    return rows


Add = Callable[[str, str, Awaitable[list[Check]]], None]


def _evm_probes(
    chain: EvmChain, add: Add, seconds: float, transport: httpx.AsyncBaseTransport | None
) -> None:
    for url in chain.rpc_urls:
        name = f"{chain.name} {keys.redact_url(url)}"
        add("rpc", name, probes.evm_endpoint(chain, url, seconds, transport))
    for url in chain.ws_urls:
        name = f"{chain.name} {keys.redact_url(url)}"
        add("rpc", name, probes.ws_endpoint(chain.name, url, chain.chain_id, seconds))
    if chain.rpc_urls:
        name = f"{chain.name} USDC contract"
        add("contracts", name, probes.evm_usdc(chain, seconds, transport))


def _solana_probes(
    settings: Settings,
    sol: SolanaChain,
    add: Add,
    seconds: float,
    transport: httpx.AsyncBaseTransport | None,
) -> None:
    for url in sol.rpc_urls:
        name = f"{sol.name} {keys.redact_url(url)}"
        add("rpc", name, probes.solana_endpoint(sol, url, seconds, transport))
    for url in sol.ws_urls:
        name = f"{sol.name} {keys.redact_url(url)}"
        add("rpc", name, probes.ws_endpoint(sol.name, url, None, seconds))
    if sol.rpc_urls:
        add("contracts", f"{sol.name} USDC mint", probes.solana_accounts(sol, seconds, transport))
    fee_payer = _solana_fee_payer(settings, sol.name)
    if sol.rpc_urls and fee_payer is not None:
        name = f"{sol.name} x402 fee payer"
        add("contracts", name, probes.solana_fee_payer(sol, fee_payer, seconds, transport))
    refund_wallet = refunds_solana.wallet(settings)
    if sol.rpc_urls and sol.owner and refund_wallet is not None:
        keyed = settings.value("x402_refund_solana_keypair") is not None
        probe = refunds_solana.wallet_rows(sol, refund_wallet, seconds, transport, keyed=keyed)
        add("refunds", f"{sol.name} refund wallet", probe)


def _solana_fee_payer(settings: Settings, name: str) -> str | None:
    """The fee payer's address; None when unset or unreadable (the settings rows say why)."""
    try:
        return settings.solana_fee_payer_address(name)
    except ValueError:
        return None


def run_cli(*, as_json: bool, seconds: float = DEFAULT_SECONDS) -> int:
    """The ``watcher doctor`` command: print the report; 0 when production-ready, else 1."""
    try:
        settings = Settings()
    except ValidationError as exc:
        # Unreadable values: report them as rows; no probe can run on a broken config.
        rows = [
            Check("settings", str(e["loc"][0]).upper() if e["loc"] else "?", "fail", "", e["msg"])
            for e in exc.errors()
        ]
        # (the type checker sees the generated base class here: it is a Settings)
        settings = cast(Settings, Settings.model_construct())
    else:
        rows = asyncio.run(examine(settings, seconds=seconds))
    print(report.to_json(rows, settings) if as_json else report.render(rows, settings))
    return 0 if report.ready(rows, settings) else 1
