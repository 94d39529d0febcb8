"""Doctor rows of the screening rules (issue 16): the deny-list file, the sanctions oracle.

* ``X402_DENYLIST_FILE`` (when set): the file loads (✗ with the parse error otherwise;
  the daemon would not start) and how many entries it holds; older than
  ``X402_DENYLIST_MAX_AGE_DAYS`` (OFAC's date of issue, else the file's mtime) is ⚠,
  never ✗: a stale list still screens what it knows, and the fix (download a fresh one)
  does not need a restart.
* ``X402_SANCTIONS_ORACLE`` (when on): on each oracle network with an RPC URL, an
  ``eth_call isSanctioned(0x000…0)`` must answer false. No answer is ✗: every payment
  on that network would be held and every x402 payer refused until it answers.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import httpx

from watcher import chain_settings, errors, networks, rpc
from watcher.doctor.report import Check
from watcher.screening import denylist, oracle, settings_screen
from watcher.settings import EvmChain, Settings

GROUP = "screening"
ZERO = "0x" + "00" * 20


async def denylist_rows(settings: Settings, today: date | None = None) -> list[Check]:
    """The deny-list file's rows (none when X402_DENYLIST_FILE is unset)."""
    path = settings_screen.denylist_path(settings)
    if path is None:
        return []
    try:  # a 100 MB XML takes seconds: not on the event loop
        listed = await asyncio.to_thread(denylist.DenyList.load, path)
    except errors.ConfigError as exc:
        fix = "fix or replace the file (the daemon refuses to start with it)"
        return [Check(GROUP, "deny-list file", "fail", "; ".join(exc.problems)[:300], fix)]
    value = (
        f"{path}: {listed.label}, {listed.count} entries "
        f"({listed.matchable_count} an EVM or Solana payer can match)"
    )
    return [Check(GROUP, "deny-list file", "ok", value), _age_row(settings, listed, today)]


def _age_row(settings: Settings, listed: denylist.DenyList, today: date | None) -> Check:
    today = today or datetime.now(UTC).date()
    if listed.source_date is not None:
        when, what = listed.source_date, "issued"
    else:
        when = datetime.fromtimestamp(listed.path.stat().st_mtime, UTC).date()
        what = "file written"
    age = (today - when).days
    limit = settings.x402_denylist_max_age_days
    value = f"{what} {when.isoformat()}, {age} days ago"
    if limit == 0 or age <= limit:
        return Check(GROUP, "deny-list age", "ok", value)
    return Check(
        GROUP,
        "deny-list age",
        "warn",
        f"{value} (more than X402_DENYLIST_MAX_AGE_DAYS={limit})",
        "download OFAC's current SDN_ADVANCED.XML or sdn.csv over the file (the watcher "
        "reloads it by itself); docs/holds-and-refunds.md says where",
    )


def oracle_networks(settings: Settings) -> list[EvmChain]:
    """The oracle networks a probe can reach (an RPC URL set)."""
    chains = settings_screen.oracle_chains(settings)
    return [c for c in settings.evm_chains() if c.name in chains and c.rpc_urls]


def oracle_setting_rows(settings: Settings) -> list[Check]:
    """X402_SANCTIONS_ORACLE on with nothing to ask is worth a warning."""
    if not settings.x402_sanctions_oracle or oracle_networks(settings):
        return []
    return [
        Check(
            GROUP,
            "sanctions oracle",
            "warn",
            "X402_SANCTIONS_ORACLE is on, but no network with an RPC URL has an oracle",
            "the oracle is on Base, Ethereum, Arbitrum, OP, Polygon, Avalanche; elsewhere "
            "set X402_<NETWORK>_SANCTIONS_ORACLE_ADDRESS, or turn X402_SANCTIONS_ORACLE off",
        )
    ]


async def oracle_probe(
    chain: EvmChain, seconds: float, transport: httpx.AsyncBaseTransport | None
) -> list[Check]:
    """``isSanctioned(0x0)`` on ``chain``'s oracle answers false."""
    name = f"{chain.name} sanctions oracle"
    contract = chain.sanctions_oracle or ""
    var = chain_settings.prefix(networks.get(chain.name)).upper() + "SANCTIONS_ORACLE_ADDRESS"
    pool = rpc.RpcPool(
        chain.name, chain.rpc_urls, chain_id=chain.chain_id, timeout=seconds, transport=transport
    )
    call = {"to": contract, "data": oracle.call_data(ZERO)}
    try:
        result = await pool.request("eth_call", [call, "latest"])
    except errors.RpcResponseError as exc:
        answer, why = None, f"reverted ({str(exc)[:80]})"
    else:
        answer, why = oracle.read_answer(result), f"answered {str(result)[:24]!r}"
    finally:
        await pool.aclose()
    if answer is False:
        return [Check(GROUP, name, "ok", f"{contract}: answers (the zero address is not listed)")]
    if answer is True:
        fix = f"an oracle would not list the zero address: check {var}"
        return [Check(GROUP, name, "warn", f"{contract}: lists the zero address", fix)]
    fix = (
        f"no oracle answers at {contract} on chain {chain.chain_id}: check {var} and the RPC "
        f"URL; until it answers, {chain.name} payments are held and x402 payers refused"
    )
    return [Check(GROUP, name, "fail", f"{contract}: {why}", fix)]
