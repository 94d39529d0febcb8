"""The operator's screening settings turned into the process's screen and oracle.

``from_settings`` builds the :class:`core.Screen` the daemon and the API install at
start (``core.install``); ``oracle_from_settings`` the sanctions oracle client, or
None when ``X402_SANCTIONS_ORACLE`` is off or no network has an oracle to ask.
What cannot be told before reading the file (a malformed deny-list) raises
``errors.ConfigError`` here, naming the variable: ``watcher run`` exits 2.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from watcher import money
from watcher.screening import core, denylist, oracle

if TYPE_CHECKING:
    from watcher.settings import Settings

# One DenyList per file for the process: the daemon and each app it builds share it
# (and its reloads) instead of parsing a 100 MB file once each.
_lists: dict[Path, denylist.DenyList] = {}


def denylist_path(settings: Settings) -> Path | None:
    """``X402_DENYLIST_FILE``, or None when unset (or blank)."""
    text = settings.value("x402_denylist_file")
    return None if text is None else Path(text).expanduser()


def hold_above_units(settings: Settings) -> int | None:
    """``X402_HOLD_ABOVE_USD`` in base units; None when unset (ValueError if not exact)."""
    value: Decimal | None = settings.x402_hold_above_usd
    return None if value is None else money.usd_to_units(value)


def max_age(settings: Settings) -> timedelta | None:
    """``X402_MAX_PAYMENT_AGE_DAYS`` as a span; None when 0 (the rule is off)."""
    days = settings.x402_max_payment_age_days
    return None if days == 0 else timedelta(days=days)


def oracle_chains(settings: Settings) -> frozenset[str]:
    """The EVM networks the sanctions oracle is asked on (X402_SANCTIONS_ORACLE on, and
    the registry row or its override names a contract)."""
    if not settings.x402_sanctions_oracle:
        return frozenset()
    return frozenset(c.name for c in settings.evm_chains() if c.sanctions_oracle)


def load_denylist(settings: Settings) -> denylist.DenyList | None:
    """The deny-list file, loaded once per process (and refreshed when asked again);
    raises ``errors.ConfigError`` naming X402_DENYLIST_FILE."""
    path = denylist_path(settings)
    if path is None:
        return None
    key = path.resolve()
    found = _lists.get(key)
    if found is not None:
        found.refresh()
        return found
    loaded = _lists[key] = denylist.DenyList.load(path)
    return loaded


def from_settings(settings: Settings) -> core.Screen:
    """The screen the settings describe (the deny-list file is read here: a broken one
    raises ``errors.ConfigError``, which stops the start with exit code 2)."""
    return core.Screen(
        hold_above=hold_above_units(settings),
        max_age=max_age(settings),
        denylist=load_denylist(settings),
        oracle_chains=oracle_chains(settings),
    )


def oracle_from_settings(
    settings: Settings, pools: oracle.PoolFor | None = None
) -> oracle.Oracle | None:
    """The sanctions oracle client for every oracle network with an RPC URL, asking
    through ``pools`` (a network's pool, e.g. the API's settlement pools) or pools of its
    own; None when the rule is off or there is nothing to ask."""
    chains = oracle_chains(settings)
    targets = {
        c.name: oracle.Target(c.sanctions_oracle, c.rpc_urls, c.chain_id)
        for c in settings.evm_chains()
        if c.name in chains and c.sanctions_oracle and c.rpc_urls
    }
    if not targets:
        return None
    ttl = float(settings.x402_sanctions_oracle_ttl_seconds)
    return oracle.Oracle(targets, ttl=ttl, pool_for=pools)
