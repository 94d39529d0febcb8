"""One payment header in, one settled payment out: the path :mod:`api.paywall` calls."""

from __future__ import annotations

from starlette.datastructures import URL

from api.price import Price
from api.x402 import evm, evm_settle, payload, records, svm_decode, svm_settle
from api.x402.clients import Clients
from watcher import db


async def settle(
    clients: Clients, pool: db.Pool, url: URL, header: str, version: int, price: Price
) -> records.Settled:
    """Match the header to an offer for ``price`` (the route at ``url``), verify it
    offline, settle it on its chain; raises ``errors.Refused`` (402 or 400) or ApiError."""
    matched = payload.match(clients.settings, url, header, version, price)
    if matched.offer.family == "solana":
        checked = svm_decode.verify(clients.settings, matched)
        return await svm_settle.settle(clients, pool, checked, str(url))
    verified = evm.verify(clients.settings, matched)
    return await evm_settle.settle(clients, pool, verified, str(url))
