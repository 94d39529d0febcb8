"""Refuse an x402 payer the screen denies, before anything is settled (issue 16).

The deny-list (the process screen's, ``watcher.screening.core.current()``) is asked
about every address that moves the money: on EVM the authorization's ``from``; on
Solana the transfer's authority (the source account's owner or its delegate, who
signed it) and the fee payer when it is not ours (it always is, once
``svm_decode.verify`` passed; asked anyway). On an EVM network where the sanctions
oracle is on, the oracle is asked about ``from`` too: sanctioned, or no answer, is
refused. Nothing has reached a relayer, a facilitator or the chain at this point: no
gas is spent and no nonce row is claimed. The refusal is the spec's shape
(``errors.Refused``: a 402 whose ``error`` is our reason, with ``PAYMENT-RESPONSE``
``success: false``); our reasons, where the spec has none, are documented in
docs/x402.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from api.x402 import offers
from api.x402.clients import Clients
from watcher.screening import core

log = structlog.get_logger(__name__)

ERR_PAYER_DENIED = "payer_denied"
ERR_PAYER_UNSCREENED = "payer_unscreened"


def check_source(
    chain: str, version: int, requirements_json: dict[str, Any], payer: str, source: str, own: bool
) -> None:
    """Raise ``errors.Refused`` when the screen must know who owns the Solana transfer's
    source (a deny-list or the oracle on ``chain``) and the message does not say: a
    source that is not the signer's own token account (a delegate spends it)."""
    if own or not core.current().needs_addresses(chain):
        return
    log.warning("x402_source_unscreened", chain=chain, payer=payer, source=source)
    raise offers.failure(
        version,
        requirements_json,
        payer,
        ERR_PAYER_UNSCREENED,
        f"the transfer spends {source}, which is not {payer}'s own token account: its "
        "owner cannot be screened before settling; pay from your own token account",
    )


async def check(
    clients: Clients,
    chain: str,
    version: int,
    requirements_json: dict[str, Any],
    payers: Sequence[str],
) -> None:
    """Raise ``errors.Refused`` when the screen denies one of ``payers`` on ``chain``."""
    screen = core.current()
    shown = payers[0] if payers else ""
    if screen.denylist is not None:
        for address in payers:
            listed = screen.denylist.lookup(address)
            if listed is not None:
                log.warning("x402_payer_denied", chain=chain, payer=address, listed=listed)
                raise offers.failure(
                    version,
                    requirements_json,
                    shown,
                    ERR_PAYER_DENIED,
                    f"the payer {address} is on the operator's deny-list; this payment is "
                    "not accepted",
                )
    if chain not in screen.oracle_chains:
        return
    oracle = clients.oracle()
    answers = {} if oracle is None else await oracle.lookup(chain, list(payers))
    for address in payers:
        answer = answers.get(address)
        if answer is True:
            log.warning("x402_payer_sanctioned", chain=chain, payer=address)
            raise offers.failure(
                version,
                requirements_json,
                shown,
                ERR_PAYER_DENIED,
                f"the payer {address} is on a sanctions list; this payment is not accepted",
            )
        if answer is None:
            log.warning("x402_payer_unscreened", chain=chain, payer=address)
            raise offers.failure(
                version,
                requirements_json,
                shown,
                ERR_PAYER_UNSCREENED,
                f"the sanctions oracle on {chain} gave no answer for {address}; nothing was "
                "charged, pay again later",
            )
