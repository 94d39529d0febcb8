"""One payment header in, one settled payment out: the path :mod:`api.paywall` calls."""

from __future__ import annotations

from starlette.datastructures import URL

from api.price import Price
from api.x402 import evm, evm_settle, payload, records, screen, svm_decode, svm_settle
from api.x402.clients import Clients
from watcher import db


async def settle(
    clients: Clients, pool: db.Pool, url: URL, header: str, version: int, price: Price
) -> records.Settled:
    """Match the header to an offer for ``price`` (the route at ``url``), verify it
    offline, screen its payer, settle it on its chain; raises ``errors.Refused`` (402 or
    400) or ApiError. A denied payer is refused before anything is sent (api/x402/screen.py)."""
    matched = payload.match(clients.settings, url, header, version, price)
    name, asked = matched.offer.chain.name, matched.requirements_json
    if matched.offer.family == "solana":
        checked = svm_decode.verify(clients.settings, matched)
        fee_payer = str(checked.tx.message.account_keys[0])
        ours = clients.settings.solana_fee_payer_address(name)
        t = checked.transfer
        screen.check_source(name, version, asked, t.payer, t.source, t.own_account)
        payers = [t.payer, *([fee_payer] if fee_payer != ours else [])]
        await screen.check(clients, name, version, asked, payers)
        return await svm_settle.settle(clients, pool, checked, str(url))
    verified = evm.verify(clients.settings, matched)
    await screen.check(clients, name, version, asked, [verified.auth.payer])
    return await evm_settle.settle(clients, pool, verified, str(url))
